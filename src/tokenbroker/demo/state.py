"""In-memory stores of the demo provider: codes, tokens, RT families, device codes, counters."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from joserfc.jwk import RSAKey

from tokenbroker.demo.settings import DemoBehaviour, DemoProviderSettings

COUNTER_NAMES: tuple[str, ...] = (
    "authorize_calls",
    "token_calls",
    "refresh_calls",
    "code_exchanges",
    "revocations",
    "device_authorizations",
    "device_polls",
    "userinfo_calls",
    "introspections",
    "api_calls",
)
FORM_NONCE_TTL = 600.0
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"

DeviceStatus = Literal["pending", "approved", "denied", "consumed"]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def generate_signing_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(
        2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"}, private=True
    )


def normalize_user_code(raw: str) -> str:
    letters = "".join(ch for ch in raw.upper() if ch.isalnum())
    return f"{letters[:4]}-{letters[4:]}" if len(letters) == 8 else letters


@dataclass(slots=True)
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    user: str
    scopes: tuple[str, ...]
    code_challenge: str
    nonce: str | None
    consent_prompted: bool
    resources: tuple[str, ...]
    expires_at: float
    used: bool = False
    access_tokens: list[str] = field(default_factory=list)
    family_id: str | None = None


@dataclass(slots=True)
class AccessTokenRecord:
    token: str
    client_id: str
    user: str
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float
    resources: tuple[str, ...] = ()
    family_id: str | None = None
    revoked: bool = False


@dataclass(slots=True)
class RefreshTokenRecord:
    token: str
    family_id: str
    issued_at: float
    used_at: float | None = None


@dataclass(slots=True)
class RefreshFamily:
    family_id: str
    client_id: str
    user: str
    scopes: tuple[str, ...]
    resources: tuple[str, ...]
    revoked: bool = False
    refresh_tokens: list[str] = field(default_factory=list)
    access_tokens: list[str] = field(default_factory=list)


@dataclass(slots=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: float
    interval: int
    status: DeviceStatus = "pending"
    user: str | None = None
    last_poll: float | None = None


class DemoState:
    """Everything the demo provider and demo API remember, shared in-process.

    ``clock`` returns seconds since the epoch; tests may pass a fake one to move time forward.
    """

    def __init__(
        self,
        settings: DemoProviderSettings,
        *,
        clock: Callable[[], float] = time.time,
        signing_key: RSAKey | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.behaviour = DemoBehaviour()
        self.signing_key = signing_key or generate_signing_key("demo-1")
        self._other_key: RSAKey | None = None
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self.codes: dict[str, AuthCode] = {}
        self.access_tokens: dict[str, AccessTokenRecord] = {}
        self.refresh_tokens: dict[str, RefreshTokenRecord] = {}
        self.families: dict[str, RefreshFamily] = {}
        self.device_codes: dict[str, DeviceAuthorization] = {}
        self.user_codes: dict[str, str] = {}
        self.form_nonces: dict[str, float] = {}
        self.token_requests: list[dict[str, str]] = []
        self.created_files: dict[str, list[dict[str, object]]] = {}

    # -- housekeeping -------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    @property
    def other_key(self) -> RSAKey:
        """A key with the same ``kid`` that is NOT published in the JWKS (hostile signing)."""
        if self._other_key is None:
            self._other_key = generate_signing_key(self.signing_key.kid or "demo-1")
        return self._other_key

    def access_token_ttl(self) -> int:
        override = self.behaviour.access_token_ttl
        return self.settings.access_token_ttl if override is None else override

    def reset(self) -> None:
        """Forget every grant and counter and restore default behaviour; keys are kept."""
        self.behaviour.reset()
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        for store in (
            self.codes,
            self.access_tokens,
            self.refresh_tokens,
            self.families,
            self.device_codes,
            self.user_codes,
            self.form_nonces,
            self.created_files,
        ):
            store.clear()
        self.token_requests.clear()

    # -- login form nonces --------------------------------------------------------------------

    def new_form_nonce(self) -> str:
        nonce = new_token()
        self.form_nonces[nonce] = self.now() + FORM_NONCE_TTL
        return nonce

    def consume_form_nonce(self, nonce: str) -> bool:
        expires_at = self.form_nonces.pop(nonce, None)
        return expires_at is not None and expires_at > self.now()

    # -- authorization codes ------------------------------------------------------------------

    def new_code(
        self,
        *,
        client_id: str,
        redirect_uri: str,
        user: str,
        scopes: tuple[str, ...],
        code_challenge: str,
        nonce: str | None,
        consent_prompted: bool,
        resources: tuple[str, ...],
    ) -> AuthCode:
        record = AuthCode(
            code=new_token(),
            client_id=client_id,
            redirect_uri=redirect_uri,
            user=user,
            scopes=scopes,
            code_challenge=code_challenge,
            nonce=nonce,
            consent_prompted=consent_prompted,
            resources=resources,
            expires_at=self.now() + self.settings.code_ttl,
        )
        self.codes[record.code] = record
        return record

    def revoke_code_grants(self, record: AuthCode) -> None:
        """A code was replayed: revoke everything issued from it (RFC 6749 §4.1.2)."""
        for token in record.access_tokens:
            self.revoke_access_token(token)
        if record.family_id is not None:
            self.revoke_family(record.family_id)

    # -- access tokens ------------------------------------------------------------------------

    def issue_access_token(
        self,
        *,
        client_id: str,
        user: str,
        scopes: tuple[str, ...],
        resources: tuple[str, ...] = (),
        family_id: str | None = None,
    ) -> AccessTokenRecord:
        now = self.now()
        record = AccessTokenRecord(
            token=new_token(),
            client_id=client_id,
            user=user,
            scopes=scopes,
            issued_at=now,
            expires_at=now + self.access_token_ttl(),
            resources=resources,
            family_id=family_id,
        )
        self.access_tokens[record.token] = record
        if family_id is not None and family_id in self.families:
            self.families[family_id].access_tokens.append(record.token)
        return record

    def active_access_token(self, token: str) -> AccessTokenRecord | None:
        record = self.access_tokens.get(token)
        if record is None or record.revoked or record.expires_at <= self.now():
            return None
        return record

    def revoke_access_token(self, token: str) -> None:
        record = self.access_tokens.get(token)
        if record is not None:
            record.revoked = True

    def expire_access_tokens(self) -> int:
        expired_at = self.now() - 1
        for record in self.access_tokens.values():
            record.expires_at = min(record.expires_at, expired_at)
        return len(self.access_tokens)

    # -- refresh token families ---------------------------------------------------------------

    def new_family(
        self, *, client_id: str, user: str, scopes: tuple[str, ...], resources: tuple[str, ...]
    ) -> RefreshFamily:
        family = RefreshFamily(
            family_id=new_token(),
            client_id=client_id,
            user=user,
            scopes=scopes,
            resources=resources,
        )
        self.families[family.family_id] = family
        return family

    def issue_refresh_token(self, family: RefreshFamily) -> RefreshTokenRecord:
        record = RefreshTokenRecord(
            token=new_token(), family_id=family.family_id, issued_at=self.now()
        )
        self.refresh_tokens[record.token] = record
        family.refresh_tokens.append(record.token)
        return record

    def revoke_family(self, family_id: str) -> None:
        family = self.families.get(family_id)
        if family is None:
            return
        family.revoked = True
        for token in family.access_tokens:
            self.revoke_access_token(token)

    def active_refresh_tokens(self, family_id: str) -> list[str]:
        family = self.families.get(family_id)
        if family is None or family.revoked:
            return []
        return [t for t in family.refresh_tokens if self.refresh_tokens[t].used_at is None]

    # -- device authorization -----------------------------------------------------------------

    def new_device_authorization(
        self, *, client_id: str, scopes: tuple[str, ...]
    ) -> DeviceAuthorization:
        user_code = self._new_user_code()
        record = DeviceAuthorization(
            device_code=new_token(),
            user_code=user_code,
            client_id=client_id,
            scopes=scopes,
            expires_at=self.now() + self.settings.device_code_ttl,
            interval=self.settings.device_interval,
        )
        self.device_codes[record.device_code] = record
        self.user_codes[user_code] = record.device_code
        return record

    def pending_device(self, user_code: str) -> DeviceAuthorization | None:
        device_code = self.user_codes.get(normalize_user_code(user_code))
        record = self.device_codes.get(device_code) if device_code else None
        if record is None or record.status != "pending" or record.expires_at <= self.now():
            return None
        return record

    def decide_device(self, user_code: str, user: str, *, approve: bool) -> bool:
        """Approve or deny a pending device authorization; False if there is none."""
        record = self.pending_device(user_code)
        if record is None:
            return False
        record.status = "approved" if approve else "denied"
        record.user = user
        return True

    def _new_user_code(self) -> str:
        while True:
            letters = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
            code = f"{letters[:4]}-{letters[4:]}"
            if code not in self.user_codes:
                return code
