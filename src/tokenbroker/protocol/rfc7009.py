"""Token revocation (RFC 7009 §2.1, §2.2, §2.2.1).

§2.2: the server answers 200 both when it revoked the token and when the token was already
invalid, so 200 means "done". §2.2.1: 503 means "try again later"; we treat every 5xx, 408 and
429 the same way, so a disconnect during a provider outage is queued and retried (SECURITY.md
G4). Some servers answer 400 ``invalid_token`` (Google) or ``invalid_grant`` for a token that is
already dead; that is done too. Any other 4xx (e.g. ``unsupported_token_type``) is final.
"""

from __future__ import annotations

from typing import Literal

from tokenbroker.protocol.request import ClientAuth, PreparedRequest, form_post
from tokenbroker.secret import Secret

RevocationOutcome = Literal["revoked", "retry", "failed"]
TokenTypeHint = Literal["access_token", "refresh_token"]

_ALREADY_INVALID = frozenset({"invalid_token", "invalid_grant"})


def revocation_request(
    endpoint: str,
    token: Secret,
    token_type_hint: TokenTypeHint | None,
    auth: ClientAuth,
) -> PreparedRequest:
    """The revocation request (§2.1): ``token`` and an optional ``token_type_hint``."""
    params = [("token", token.reveal())]
    if token_type_hint is not None:
        params.append(("token_type_hint", token_type_hint))
    return form_post(endpoint, params, auth)


def classify_revocation_response(status: int, oauth_error: str | None = None) -> RevocationOutcome:
    """Map the revocation endpoint's answer to what the caller should do next.

    ``oauth_error`` is the ``error`` member of a 4xx JSON body, when the caller has one.
    """
    if 200 <= status < 300:
        return "revoked"
    if status >= 500 or status in (408, 429):
        return "retry"
    if status == 400 and oauth_error in _ALREADY_INVALID:
        return "revoked"
    return "failed"
