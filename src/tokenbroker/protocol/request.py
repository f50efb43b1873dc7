"""Prepared token-endpoint requests and client authentication (RFC 6749 §2.3.1, §3.2).

Every request to a token, revocation or device endpoint is a form-encoded POST. This module
builds it without sending it (oauthlib's ``(url, headers, body)`` shape) and applies one of the
client authentication methods registered by RFC 7591 §2: ``client_secret_basic``,
``client_secret_post`` or ``none`` (public client: ``client_id`` in the body, §2.3.1 / §3.2.1).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote_plus, urlencode

from tokenbroker.errors import ConfigError
from tokenbroker.secret import Secret

ClientAuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]

FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class ClientAuth:
    """How the broker authenticates to a provider's endpoints."""

    client_id: str
    method: ClientAuthMethod = "client_secret_basic"
    client_secret: Secret | None = None


@dataclass(frozen=True, repr=False)
class PreparedRequest:
    """A form POST ready to send. ``repr`` hides the body and header values (they hold secrets)."""

    url: str
    headers: tuple[tuple[str, str], ...]
    body: str
    method: str = "POST"

    def __repr__(self) -> str:
        names = ", ".join(name for name, _ in self.headers)
        return f"PreparedRequest(method={self.method!r}, url={self.url!r}, headers=[{names}])"


def _form_encode(value: str) -> str:
    """application/x-www-form-urlencoded encoding of one value (RFC 6749 Appendix B)."""
    return quote_plus(value, safe="")


def basic_authorization(client_id: str, client_secret: Secret) -> str:
    """The ``Authorization`` value for ``client_secret_basic`` (RFC 6749 §2.3.1).

    Both parts are form-url-encoded before base64, as §2.3.1 requires; this matters for ids and
    secrets containing ``:``, ``%`` or non-ASCII characters.
    """
    pair = f"{_form_encode(client_id)}:{_form_encode(client_secret.reveal())}"
    return "Basic " + base64.b64encode(pair.encode("ascii")).decode("ascii")


def form_post(url: str, params: Sequence[tuple[str, str]], auth: ClientAuth) -> PreparedRequest:
    """Build a form POST to ``url`` carrying ``params`` plus client authentication."""
    fields = list(params)
    headers = [("Content-Type", FORM_CONTENT_TYPE), ("Accept", "application/json")]
    if auth.method == "client_secret_basic":
        if not auth.client_secret:
            raise ConfigError("client_secret_basic needs a client secret")
        headers.append(("Authorization", basic_authorization(auth.client_id, auth.client_secret)))
    elif auth.method == "client_secret_post":
        if not auth.client_secret:
            raise ConfigError("client_secret_post needs a client secret")
        fields.append(("client_id", auth.client_id))
        fields.append(("client_secret", auth.client_secret.reveal()))
    elif auth.method == "none":
        fields.append(("client_id", auth.client_id))
    else:
        raise ConfigError(f"unknown client authentication method {auth.method!r}")
    return PreparedRequest(url=url, headers=tuple(headers), body=urlencode(fields))
