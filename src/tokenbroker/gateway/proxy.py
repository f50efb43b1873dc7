"""``/proxy/{provider}[:{base}]/{path}``: an agent's call, with its user's token, within the grant.

Checks run in the documented order, each failure answered before anything reaches the
upstream: the agent session (401 ``invalid_token``); path and destination (400 / 403); the
connection (403 ``authorization_required`` with a fresh connect link); the grant (403
``insufficient_grant``); rate limits (429). Then the user's token is loaded (refreshed when due),
injected, and the request forwarded; the answer streams back with its status, filtered headers
and body. An upstream 401 triggers one refresh and one retry (replayable requests only, at most
once per connection per 30 s). Every request leaves ``proxy.started`` / ``proxy.finished`` (or
``proxy.denied``) records tied to user, agent, grant and request id.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy.exc import SQLAlchemyError

from tokenbroker.connect import sessions as connect_sessions
from tokenbroker.connections.model import Connection
from tokenbroker.errors import (
    AuthorizationRequired,
    DestinationNotAllowed,
    InsufficientGrant,
    NeedsReauth,
    RateLimited,
    StoreUnavailable,
    TokenBrokerError,
)
from tokenbroker.gateway import forward
from tokenbroker.gateway.answers import error_answer
from tokenbroker.gateway.destination import check_host, normalize_host, policy
from tokenbroker.gateway.exchange import Exchange
from tokenbroker.gateway.headers import (
    filter_request_headers,
)
from tokenbroker.gateway.lookups import Lookups
from tokenbroker.gateway.paths import normalize_path
from tokenbroker.gateway.provider_rules import ProviderRules
from tokenbroker.gateway.ratelimit import Limit, MemoryRateLimiter, RateLimiter
from tokenbroker.gateway.stages import Stages
from tokenbroker.gateway.target import (
    auth_header,
    base_url_for,
    bearer,
    split_target,
)
from tokenbroker.gateway.upstream import UpstreamPool
from tokenbroker.ids import new_secret_value
from tokenbroker.observability.logging import request_id_var
from tokenbroker.observability.metrics import METRICS
from tokenbroker.policy.decision import ConnectionView, Decision, decide
from tokenbroker.policy.sessions import AgentSession
from tokenbroker.providers.model import ProviderSpec
from tokenbroker.records import Event, Recorder, Scalar
from tokenbroker.services import Services
from tokenbroker.web.consent_link import consent_url

log = logging.getLogger("tokenbroker.gateway")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass
class _Call:
    request_id: str
    started: float
    session: AgentSession | None = None
    provider: str | None = None
    connection: Connection | None = None
    decision: Decision | None = None
    path: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    extra: dict[str, str] = field(default_factory=dict)


class Gateway:
    def __init__(
        self,
        svc: Services,
        lookups: Lookups,
        limiter: RateLimiter,
        upstream: UpstreamPool,
        recorder: Recorder,
        *,
        audit_healthy: object = None,
        loopback_names: frozenset[str] = frozenset(),
    ) -> None:
        self._svc = svc
        self._lookups = lookups
        self._limiter = limiter
        # The in-process limiter answers synchronously: no coroutine per hit on the hot path.
        self._hit_now = limiter.hit_now if isinstance(limiter, MemoryRateLimiter) else None
        self._upstream = upstream
        self._recorder = recorder
        self._audit_healthy = audit_healthy
        self._loopback_names = frozenset(normalize_host(h) for h in loopback_names)
        self._checked_bases: set[str] = set()
        cfg = svc.settings.gateway
        self._cfg = cfg
        self._user_limit = Limit(cfg.user_rate_per_second, cfg.user_burst)
        self._agent_limit = Limit(cfg.agent_rate_per_second, cfg.agent_burst)
        self._rules: dict[str, ProviderRules] = {}
        self._last_forced: dict[str, tuple[float, int]] = {}
        self.stages = Stages()
        # Request ids need to be unique, not secret: a random per-process prefix and a counter
        # (no system call per request).
        self._id_prefix = new_secret_value(6)
        self._id_counter = itertools.count(1)

    @property
    def recorder(self) -> Recorder:
        """Where audit events go (read by ``/metrics`` for the audit queue gauges)."""
        return self._recorder

    def _next_id(self) -> str:
        return f"{self._id_prefix}-{next(self._id_counter):x}"

    async def handle(self, request: Exchange) -> None:
        """Answer one ``/proxy/`` request; the exchange is ended when this returns."""
        presented_id = request.header("X-Request-ID")
        request_id = presented_id if _REQUEST_ID.fullmatch(presented_id) else self._next_id()
        request_id_var.set(request_id)  # each request runs in its own task: its own context
        call = _Call(request_id=request_id, started=time.perf_counter())
        try:
            await self._handle(request, call)
            return
        except TokenBrokerError as exc:
            METRICS.gateway_denied(call.provider, exc, call.started)
            await self._denied(call, request.method, exc)
            refusal = exc
        except SQLAlchemyError:
            METRICS.gateway_request(call.provider, StoreUnavailable.code, 503, call.started)
            log.exception("database error on the gateway path")
            refusal = StoreUnavailable("the database is unavailable")
        status, headers, body = error_answer(refusal, request_id)
        request.respond(status, None, headers, body)
        await request.end()

    async def _handle(self, request: Exchange, call: _Call) -> None:
        svc, stages = self._svc, self.stages
        now = svc.clock.now()
        t0 = time.perf_counter()
        session = await self._lookups.session(bearer(request), now)
        call.session = session
        t1 = time.perf_counter()
        stages.add("session", t1 - t0)

        provider, base, tail, query = split_target(request.raw_path)
        call.provider = provider
        spec = await svc.providers.get(provider)
        path = normalize_path(tail)
        rules = self._rules_for(spec)
        call.path = rules.audit_paths.recorded(path, query)
        connection = await self._lookups.connection(session.tenant_id, session.user_id, provider)
        call.connection = connection
        base_url = base_url_for(spec, base, connection)
        if base_url not in self._checked_bases:
            self._check_destination(spec, base_url)
            self._checked_bases.add(base_url)
        operation = rules.operations.match(request.method, path, base)
        grants = await self._lookups.grants(session, provider)
        view = (
            None
            if connection is None
            else ConnectionView(connection.id, connection.status, frozenset(connection.scopes))
        )
        decision = decide(operation=operation, connection=view, grants=grants, now=now)
        call.decision = decision
        if not decision.allowed:
            await self._refuse(session, spec, decision, operation.scopes if operation else ())
        await self._rate_limit(session, provider)
        t2 = time.perf_counter()
        stages.add("decision", t2 - t1)

        if self._audit_healthy is not None and not getattr(self._audit_healthy, "healthy", True):
            raise StoreUnavailable("the audit trail cannot be written: refusing to proxy")
        await self._recorder.record(self._event("proxy.started", call, request.method))
        assert connection is not None
        try:
            token = await self._lookups.token(connection, now)
        except NeedsReauth as exc:
            raise AuthorizationRequired(
                exc.message,
                authorization_url=await self._link(session, spec, ()),
                reason="needs_reauth",
            ) from None
        t3 = time.perf_counter()
        stages.add("unseal", t3 - t2)

        body = await forward.read_body(
            request,
            limit=self._cfg.max_request_body_bytes,
            buffer_up_to=self._cfg.replay_buffer_bytes,
        )
        call.bytes_in = body.read
        target = path + (f"?{query}" if query else "")
        extras = rules.extra_headers
        headers = filter_request_headers(request.header_items(), extras)
        headers.append(("X-Request-ID", call.request_id))
        upstream = await forward.send(
            self._upstream,
            request.method,
            base_url,
            target,
            [*headers, auth_header(token.value.reveal())],
            body,
        )
        if upstream.status == 401 and self._may_retry(
            request.method, body, connection, token.version
        ):
            upstream.release()
            try:
                token = await self._lookups.token(connection, now, newer_than=token.version)
            except NeedsReauth as exc:
                raise AuthorizationRequired(
                    str(exc.message),
                    authorization_url=await self._link(session, spec, ()),
                    reason="needs_reauth",
                ) from None
            upstream = await forward.send(
                self._upstream,
                request.method,
                base_url,
                target,
                [*headers, auth_header(token.value.reveal())],
                body,
            )
        call.bytes_in = body.read
        try:
            await forward.relay(
                request,
                upstream,
                call,
                extras=extras,
                cap=self._cfg.max_response_body_bytes,
                retry_after_cap=self._cfg.retry_after_cap_seconds,
            )
        finally:
            upstream.release()
            t4 = time.perf_counter()
            stages.add("forward", t4 - t3)
        await self._recorder.record(
            self._event("proxy.finished", call, request.method, status=upstream.status)
        )
        await request.end()  # the answer's last byte follows its record
        stages.add("audit", time.perf_counter() - t4)
        stages.count()
        METRICS.gateway_request(call.provider, "allowed", upstream.status, call.started)

    # --- steps -------------------------------------------------------------------------------
    def _check_destination(self, spec: ProviderSpec, base_url: str) -> None:
        """Per provider: loopback only for ``allow_insecure_loopback`` providers; IP literals
        are checked here because aiohttp connects to them without asking the resolver."""
        host = urlsplit(base_url).hostname or ""
        allowed = frozenset({host}) if spec.allow_insecure_loopback else frozenset()
        check_host(host, policy(allowed))
        if not spec.allow_insecure_loopback and normalize_host(host) in self._loopback_names:
            raise DestinationNotAllowed("destination address is not allowed")

    def _rules_for(self, spec: ProviderSpec) -> ProviderRules:
        rules = self._rules.get(spec.name)
        if rules is None:
            rules = self._rules[spec.name] = ProviderRules.of(spec)
        return rules

    async def _refuse(
        self, session: AgentSession, spec: ProviderSpec, decision: Decision, needed: tuple[str, ...]
    ) -> None:
        if decision.code == "authorization_required":
            scopes = decision.missing_scopes or needed
            raise AuthorizationRequired(
                f"the user must connect {spec.display_name} ({decision.reason})",
                authorization_url=await self._link(session, spec, scopes),
                reason=decision.reason,
            )
        raise InsufficientGrant(
            f"the user's grant to this agent does not cover this request ({decision.reason})",
            reason=decision.reason,
            operation=decision.missing_operation,
            scopes=decision.missing_scopes,
            consent_url=consent_url(
                self._svc.settings,
                tenant_id=session.tenant_id,
                user_id=session.user_id,
                agent_id=session.agent_id,
                provider=spec.name,
                scopes=needed,
                operation=decision.missing_operation,
            ),
        )

    async def _link(
        self, session: AgentSession, spec: ProviderSpec, scopes: tuple[str, ...]
    ) -> str | None:
        """Agent-initiated authorization: a connect link for this user, provider and scopes."""
        try:
            created = await connect_sessions.create(
                self._svc,
                tenant_id=session.tenant_id,
                user_id=session.user_id,
                provider=spec.name,
                scopes=scopes,
                return_to=None,
                actor=f"agent:{session.agent_id}",
            )
        except TokenBrokerError:
            return None
        return created.link(self._svc.settings.public_url)

    async def _rate_limit(self, session: AgentSession, provider: str) -> None:
        for key, limit in (
            (f"u:{session.tenant_id}:{session.user_id}:{provider}", self._user_limit),
            (f"a:{session.tenant_id}:{session.agent_id}", self._agent_limit),
        ):
            hit_now = self._hit_now
            verdict = hit_now(key, limit) if hit_now else await self._limiter.hit(key, limit)
            if not verdict.allowed:
                raise RateLimited(
                    "too many requests: slow down", retry_after=int(verdict.retry_after) + 1
                )

    def _may_retry(
        self, method: str, body: forward.Body, connection: Connection, version: int
    ) -> bool:
        """One forced refresh per connection per interval; concurrent 401s on the same token
        version share it (they wait for the single-flight refresh and retry with its token)."""
        if not (body.replayable or method in forward.NO_BODY):
            return False
        now = time.monotonic()
        last = self._last_forced.get(connection.id)
        recent = last is not None and now - last[0] < self._cfg.refresh_on_401_interval_seconds
        if last is not None and last[1] != version and recent:
            return False  # the refreshed token was refused too: pass the 401 through
        if last is None or last[1] != version:
            self._last_forced[connection.id] = (now, version)
        return True

    # --- records -----------------------------------------------------------------------------
    def _event(self, type_: str, call: _Call, method: str, *, status: int | None = None) -> Event:
        session = call.session
        assert session is not None
        decision = call.decision
        detail: dict[str, Scalar] = {
            "request_id": call.request_id,
            "agent_id": session.agent_id,
            "grant_id": decision.grant_id if decision else None,
            "operation": decision.operation if decision else None,
            "raw": decision.raw if decision else None,
            "method": method,
            "path": call.path,
        }
        if type_ != "proxy.started":  # what is known once the request has an outcome
            detail["status"] = status
            detail["bytes_in"] = call.bytes_in
            detail["bytes_out"] = call.bytes_out
            detail["latency_ms"] = round((time.perf_counter() - call.started) * 1000, 3)
        return Event.of_plain(
            type_,
            session.tenant_id,
            f"agent:{session.agent_id}",
            session.user_id,
            call.provider,
            call.connection.id if call.connection else None,
            "allowed" if status is None else f"status:{status}",
            detail,
        )

    async def _denied(self, call: _Call, method: str, exc: TokenBrokerError) -> None:
        session = call.session
        if session is None:
            return  # no user to attribute to: an invalid token is logged, not audited per user
        event = self._event("proxy.denied", call, method)
        detail = {**event.detail, "error": exc.code, "reason": getattr(exc, "reason", exc.code)}
        with contextlib.suppress(TokenBrokerError):
            await self._recorder.record(
                Event(
                    type=event.type,
                    tenant_id=event.tenant_id,
                    actor=event.actor,
                    user_id=event.user_id,
                    provider=event.provider,
                    connection_id=event.connection_id,
                    outcome="denied",
                    detail=detail,
                )
            )
