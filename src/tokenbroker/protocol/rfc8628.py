"""The device authorization grant, pure parts (RFC 8628 §3.1, §3.2, §3.4, §3.5).

The caller sends :func:`device_authorization_request`, shows the user code, then polls with
:func:`device_token_request`. A poll answer is read with
:func:`tokenbroker.protocol.token_response.parse_token_response`; its ProviderError's
``oauth_error`` goes to :func:`classify_poll`, and :func:`next_interval` adds 5 seconds per
``slow_down`` (§3.5). Verification URIs are checked like endpoints, since they are shown to
the user as links (a hostile server must not inject ``javascript:``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from tokenbroker.errors import ConfigError, ProtocolError
from tokenbroker.protocol.endpoints import check_endpoint_url
from tokenbroker.protocol.request import ClientAuth, PreparedRequest, form_post
from tokenbroker.protocol.responses import decode_success
from tokenbroker.protocol.token_response import parse_expires_in
from tokenbroker.secret import Secret

DEVICE_CODE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL: Final = 5
SLOW_DOWN_STEP: Final = 5
MAX_USER_CODE_CHARS: Final = 64

PollOutcome = Literal["pending", "slow_down", "denied", "expired", "error"]

_POLL_OUTCOMES: Final[dict[str, PollOutcome]] = {
    "authorization_pending": "pending",
    "slow_down": "slow_down",
    "access_denied": "denied",
    "expired_token": "expired",
}


@dataclass(frozen=True)
class DeviceAuthorization:
    """The device authorization response (§3.2). ``interval`` is in seconds."""

    device_code: Secret
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_at: datetime
    interval: int = DEFAULT_INTERVAL


def device_authorization_request(
    endpoint: str,
    *,
    auth: ClientAuth,
    scopes: Sequence[str] = (),
    scope_separator: str = " ",
    resource: str | None = None,
) -> PreparedRequest:
    """The device authorization request (§3.1)."""
    params: list[tuple[str, str]] = []
    if scopes:
        params.append(("scope", scope_separator.join(scopes)))
    if resource is not None:
        params.append(("resource", resource))
    return form_post(endpoint, params, auth)


def _verification_uri(value: object, *, allow_insecure_loopback: bool, what: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"device authorization response {what} is not a string")
    try:
        return check_endpoint_url(value, allow_insecure_loopback=allow_insecure_loopback, what=what)
    except ConfigError as err:
        raise ProtocolError(f"device authorization response: {err.message}") from None


def _interval(value: object) -> int:
    if value is None:
        return DEFAULT_INTERVAL
    seconds = parse_expires_in(value)
    return DEFAULT_INTERVAL if seconds is None else max(seconds, 1)


def parse_device_authorization_response(
    status: int,
    content_type: str | None,
    body: bytes,
    *,
    now: datetime,
    allow_insecure_loopback: bool = False,
) -> DeviceAuthorization:
    """Parse the §3.2 response; ``now`` (timezone-aware) anchors ``expires_at``.

    Google's legacy ``verification_url`` is accepted in place of ``verification_uri``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    doc: dict[str, Any] = decode_success(status, content_type, body)
    device_code = doc.get("device_code")
    if not isinstance(device_code, str) or not device_code:
        raise ProtocolError("device authorization response has no device_code")
    user_code = doc.get("user_code")
    if (
        not isinstance(user_code, str)
        or not 0 < len(user_code) <= MAX_USER_CODE_CHARS
        or not all(0x20 <= ord(c) < 0x7F for c in user_code)
    ):
        raise ProtocolError("device authorization response has no valid user_code")
    uri = _verification_uri(
        doc.get("verification_uri", doc.get("verification_url")),
        allow_insecure_loopback=allow_insecure_loopback,
        what="verification_uri",
    )
    complete_raw = doc.get("verification_uri_complete")
    complete = (
        None
        if complete_raw is None
        else _verification_uri(
            complete_raw,
            allow_insecure_loopback=allow_insecure_loopback,
            what="verification_uri_complete",
        )
    )
    expires_in = parse_expires_in(doc.get("expires_in"))
    if expires_in is None:
        raise ProtocolError("device authorization response has no expires_in")
    return DeviceAuthorization(
        device_code=Secret(device_code),
        user_code=user_code,
        verification_uri=uri,
        verification_uri_complete=complete,
        expires_at=now + timedelta(seconds=expires_in),
        interval=_interval(doc.get("interval")),
    )


def device_token_request(
    endpoint: str, *, device_code: Secret, auth: ClientAuth, resource: str | None = None
) -> PreparedRequest:
    """The device access token request (§3.4)."""
    params = [("grant_type", DEVICE_CODE_GRANT), ("device_code", device_code.reveal())]
    if resource is not None:
        params.append(("resource", resource))
    return form_post(endpoint, params, auth)


def classify_poll(error: str) -> PollOutcome:
    """What a §3.5 error code means for the polling loop; unknown codes are fatal."""
    return _POLL_OUTCOMES.get(error, "error")


def next_interval(current: int, outcome: PollOutcome) -> int:
    """The polling interval after ``outcome``: +5 s for ``slow_down`` (§3.5), else unchanged."""
    if outcome == "slow_down":
        return current + SLOW_DOWN_STEP
    return current
