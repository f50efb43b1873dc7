"""OAuth plumbing for the demo provider: error responses, strict form parsing, client auth."""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from urllib.parse import unquote_plus

from aiohttp import web

from tokenbroker.demo.settings import DemoClient, DemoProviderSettings

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM_TYPE = "application/x-www-form-urlencoded"


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response, raised by handlers and rendered by :func:`render`."""

    def __init__(
        self,
        error: str,
        description: str = "",
        *,
        status: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}

    def render(self) -> web.Response:
        body: dict[str, str] = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return web.json_response(body, status=self.status, headers={**NO_STORE, **self.headers})


def invalid_client(description: str) -> OAuthError:
    return OAuthError(
        "invalid_client",
        description,
        status=401,
        headers={"WWW-Authenticate": 'Basic realm="tokenbroker-demo"'},
    )


async def read_form(request: web.Request) -> dict[str, str]:
    """The urlencoded body; a repeated parameter or another content type is ``invalid_request``."""
    if request.content_type != FORM_TYPE:
        raise OAuthError("invalid_request", f"content type must be {FORM_TYPE}")
    data = await request.post()
    form: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(value, str):
            raise OAuthError("invalid_request", "file uploads are not accepted")
        if key in form:
            raise OAuthError("invalid_request", f"parameter {key} repeated")
        form[key] = value
    return form


@dataclass(frozen=True, slots=True)
class ClientAuth:
    client: DemoClient
    method: str  # client_secret_basic | client_secret_post | none


def authenticate_client(
    request: web.Request, form: dict[str, str], settings: DemoProviderSettings
) -> ClientAuth:
    """RFC 6749 §2.3.1: HTTP Basic with form-url-decoded id and secret, or the form body."""
    header = request.headers.get("Authorization", "")
    basic = _parse_basic(header) if header else None
    if header and basic is None:
        raise invalid_client("malformed Authorization header")
    secret: str | None
    if basic is not None:
        if "client_secret" in form:
            raise OAuthError("invalid_request", "more than one client authentication method")
        client_id, secret = basic
        if form.get("client_id", client_id) != client_id:
            raise invalid_client("client_id mismatch")
        method = "client_secret_basic"
    else:
        client_id = form.get("client_id", "")
        secret = form.get("client_secret")
        method = "client_secret_post" if secret is not None else "none"
    client = settings.client(client_id)
    if client is None:
        raise invalid_client("unknown client")
    if client.client_secret is None:
        if secret:
            raise invalid_client("public client must not send a secret")
        return ClientAuth(client, "none")
    if secret is None or not hmac.compare_digest(secret.encode(), client.client_secret.encode()):
        raise invalid_client("client authentication failed")
    return ClientAuth(client, method)


def _parse_basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


def bearer_token(request: web.Request) -> str | None:
    """The RFC 6750 §2.1 Bearer token of the request, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def bearer_error(status: int, error: str, description: str = "") -> web.Response:
    """An RFC 6750 §3 error with a ``WWW-Authenticate: Bearer`` challenge."""
    challenge = f'Bearer realm="tokenbroker-demo", error="{error}"'
    if error == "insufficient_scope" and description:
        challenge += f', scope="{description}"'
    body = {"error": error, "error_description": description} if description else {"error": error}
    return web.json_response(body, status=status, headers={"WWW-Authenticate": challenge})
