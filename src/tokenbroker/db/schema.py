"""Every table. Each row carries a tenant; a ``default`` tenant always exists.

Secrets never live in these tables in the clear: tokens, verifiers and nonces are in
``sealed_secrets`` as envelope-encrypted blobs (see :mod:`tokenbroker.vault`).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from tokenbroker.db.types import JSONText, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

DEFAULT_TENANT = "default"

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

# One connection per (tenant, user, provider). `version` increases on every token write, so a
# stale writer can never overwrite a newer token (compare-and-swap; the lifecycle issue's lease
# columns live here too).
connections = Table(
    "connections",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("status", String(20), nullable=False),  # active | degraded | needs_reauth | revoking
    Column("scopes", JSONText(), nullable=False),
    Column("account_id", String(255), nullable=True),
    Column("account_label", String(255), nullable=True),
    Column("connect_vars", JSONText(), nullable=False),
    Column("access_token_expires_at", UTCDateTime(), nullable=True),
    Column("has_refresh_token", Boolean(), nullable=False),
    Column("version", Integer(), nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("last_refresh_at", UTCDateTime(), nullable=True),
    Column("last_refresh_error", Text(), nullable=True),
    Column("status_reason", Text(), nullable=True),
    Column("last_used_at", UTCDateTime(), nullable=True),
    # Consecutive failed refresh attempts, and the cooldown they earned (lifecycle).
    Column("refresh_failures", Integer(), nullable=False, server_default="0"),
    Column("refresh_not_before", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("tenant_id", "user_id", "provider", name="uq_connections_owner"),
)

# A connect session is minted by the application for one user; it becomes a connection only
# once that user is proven (user verifier confirmation, or broker sign-in).
connect_sessions = Table(
    "connect_sessions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("scopes", JSONText(), nullable=False),
    Column("return_to", Text(), nullable=True),
    # created -> authorizing -> pending_confirmation -> completed | failed | expired
    Column("status", String(24), nullable=False),
    Column("error", String(64), nullable=True),
    Column("error_message", Text(), nullable=True),
    Column("flow_id_hash", String(64), nullable=True),
    Column("account_id", String(255), nullable=True),
    Column("account_label", String(255), nullable=True),
    Column("granted_scopes", JSONText(), nullable=True),
    Column("connect_vars", JSONText(), nullable=True),
    Column("access_token_expires_at", UTCDateTime(), nullable=True),
    Column("connection_id", String(40), nullable=True),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# One browser's attempt at an authorization: the cookie holds `binding` (a random reference);
# the row keeps only hashes of state and binding, and the sealed nonce and PKCE verifier.
auth_flows = Table(
    "auth_flows",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("connect_session_id", String(40), ForeignKey("connect_sessions.id"), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("state_hash", String(64), nullable=False, unique=True),
    Column("binding_hash", String(64), nullable=False),
    Column("scopes", JSONText(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

# Envelope-encrypted values. `owner_kind`/`owner_id`/`field` and tenant/user are bound into the
# AEAD associated data, so a blob copied onto another row fails to open.
sealed_secrets = Table(
    "sealed_secrets",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("owner_kind", String(24), nullable=False),  # connection | connect_session | auth_flow
    Column("owner_id", String(40), nullable=False),
    Column("field", String(32), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("blob", LargeBinary(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("owner_kind", "owner_id", "field", name="uq_sealed_secrets_owner"),
    Index("ix_sealed_secrets_key_id", "key_id"),
)

# Proof that the configured keys are the ones the data was sealed with: one known value sealed
# under each key when it is first used. A wrong key file fails here at start, before any write.
key_checks = Table(
    "key_checks",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("blob", LargeBinary(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

# Durable queue of provider-side revocations (RFC 7009), retried with backoff up to 24 h.
revocations = Table(
    "revocations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("connection_id", String(40), nullable=False),
    Column("status", String(16), nullable=False),  # pending | done | gave_up
    Column("attempts", Integer(), nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("give_up_at", UTCDateTime(), nullable=False),
    Column("last_error", Text(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# The audit trail: append-only, one hash chain per tenant (see tokenbroker.audit). `seq` is
# gapless per tenant, `hash` = SHA-256 over the canonical encoding of every other column but
# `id`. Users appear only as `user_ref`, a keyed pseudonym; `user_id` stays NULL (rows written
# before the chain existed keep theirs and have no `seq`).
events = Table(
    "events",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("type", String(64), nullable=False),
    Column("actor", String(255), nullable=True),
    Column("user_id", String(255), nullable=True),
    Column("provider", String(64), nullable=True),
    Column("connection_id", String(40), nullable=True),
    Column("outcome", String(32), nullable=True),
    Column("detail", JSONText(), nullable=False),
    Column("seq", BigInteger(), nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    Column("user_ref", String(64), nullable=True),
    Column("agent_id", String(40), nullable=True),
    Index("ix_events_tenant_at", "tenant_id", "at"),
    Index("uq_events_tenant_seq", "tenant_id", "seq", unique=True),
    Index("ix_events_tenant_user_ref", "tenant_id", "user_ref", "seq"),
    Index("ix_events_tenant_agent", "tenant_id", "agent_id", "seq"),
)

# Operator-level health of a provider shared by every replica: `misconfigured` after the token
# endpoint answered invalid_client / unauthorized_client, cleared by the next success.
provider_health = Table(
    "provider_health",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("status", String(20), nullable=False),  # ok | misconfigured
    Column("reason", Text(), nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# RFC 8628 device authorization for headless users; like a connect session it becomes a
# connection only once its user is proven. The device code is sealed in `sealed_secrets`.
device_sessions = Table(
    "device_sessions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("scopes", JSONText(), nullable=False),
    # pending -> pending_confirmation -> connected | denied | expired | failed
    Column("status", String(24), nullable=False),
    Column("user_code", String(64), nullable=False),
    Column("verification_uri", Text(), nullable=False),
    Column("verification_uri_complete", Text(), nullable=True),
    Column("interval_seconds", Integer(), nullable=False),
    Column("next_poll_at", UTCDateTime(), nullable=False),
    Column("poll_owner", String(64), nullable=True),
    Column("poll_until", UTCDateTime(), nullable=True),
    Column("flow_id_hash", String(64), nullable=True),
    Column("account_id", String(255), nullable=True),
    Column("account_label", String(255), nullable=True),
    Column("granted_scopes", JSONText(), nullable=True),
    Column("connect_vars", JSONText(), nullable=True),
    Column("access_token_expires_at", UTCDateTime(), nullable=True),
    Column("connection_id", String(40), nullable=True),
    Column("error", String(64), nullable=True),
    Column("error_message", Text(), nullable=True),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# Durable outbox of connection events for the application's webhook (signed, retried).
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("payload", JSONText(), nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | gave_up
    Column("attempts", Integer(), nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_error", Text(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
)

# --- agents, grants and agent sessions (the gateway) ----------------------------------------

# An agent's secret is shown once and stored only as a SHA-256 digest (it is 256 random bits,
# so a fast hash is enough: there is nothing to brute-force).
agents = Table(
    "agents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("secret_rotated_at", UTCDateTime(), nullable=True),
    UniqueConstraint("tenant_id", "name", name="uq_agents_name"),
)

# A user's grant to one agent on one connection: a subset of its scopes, optionally of its
# operations, until a time. Revoked grants keep their row (revoked_at) for the record.
grants = Table(
    "grants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("agent_id", String(40), nullable=False),
    Column("connection_id", String(40), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("scopes", JSONText(), nullable=False),
    Column("operations", JSONText(), nullable=True),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("revoked_reason", String(64), nullable=True),
    Index("ix_grants_lookup", "tenant_id", "user_id", "agent_id", "provider"),
)

# Short-lived agent session tokens: opaque, random, stored hashed, bound to tenant/user/agent.
agent_sessions = Table(
    "agent_sessions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("agent_id", String(40), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

# Single-use tickets an application mints so an agent (with its own secret) can open a session
# for that user: an agent secret alone can never choose a user.
session_tickets = Table(
    "session_tickets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("agent_id", String(40), nullable=False),
    Column("ticket_hash", String(64), nullable=False, unique=True),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

# Cache invalidation for every replica sharing the database: a write that changes what the
# gateway may do appends a row; replicas poll the newest id and drop their caches.
invalidations = Table(
    "invalidations",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("key", String(255), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
)

# --- the broker's web pages ----------------------------------------------------------------

# Browser sessions of the web pages, server-side. The cookie holds a random secret; the row keeps
# only its SHA-256. A row without `user_id` is a sign-in in progress (its `state_hash` is the
# OIDC state sent to the login provider); sign-in replaces it with a fresh signed-in row.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("user_id", String(255), nullable=True),
    Column("email", String(255), nullable=True),
    Column("is_admin", Boolean(), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("state_hash", String(64), nullable=True, unique=True),
    Column("next_path", Text(), nullable=True),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=True),  # for the idle timeout
    Index("ix_web_sessions_expires_at", "expires_at"),
)

# --- the audit trail's chain heads and signed checkpoints -----------------------------------

# The newest record of each tenant's chain. A commit UPDATEs this row first, so SQLite takes its
# write lock and PostgreSQL a row lock: replicas append one batch after another, never interleaved.
audit_heads = Table(
    "audit_heads",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("seq", BigInteger(), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# Signed heads: HMAC-SHA256 with a key derived from a key-encryption key (never stored here).
# kind: periodic | export | retention (the anchor verification starts from after a prune).
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("seq", BigInteger(), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", String(64), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("kind", String(16), nullable=False),
    Index("ix_audit_checkpoints_tenant_seq", "tenant_id", "seq"),
)

# Each user's pseudonym key for the audit trail (32 random bytes, sealed by the vault with the
# context (tenant, user, "audit_user", "pseudonym", "pseudonym_key")). Erasure deletes the row.
audit_user_keys = Table(
    "audit_user_keys",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("user_id", String(255), primary_key=True),
    Column("key_id", String(64), nullable=False),
    Column("blob", LargeBinary(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)
