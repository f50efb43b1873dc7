"""The DEMO OAuth 2 / OpenID Connect provider: app factory, discovery, JWKS, userinfo, CLI.

``python -m tokenbroker.demo.provider --port 9400`` runs it (and the demo API with
``--api-port``). It is a strict provider whose faults and hostile answers are scripted through
:class:`~tokenbroker.demo.settings.DemoBehaviour`. It is NOT a real identity provider.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from tokenbroker.demo import browser, control, tokens
from tokenbroker.demo.api import create_api_app
from tokenbroker.demo.appkeys import SETTINGS_KEY, SHUTDOWN_KEY, STATE_KEY, provider_state
from tokenbroker.demo.oauth import (
    NO_STORE,
    OAuthError,
    authenticate_client,
    bearer_error,
    bearer_token,
    read_form,
)
from tokenbroker.demo.settings import DemoClient, DemoProviderSettings
from tokenbroker.demo.state import DemoState

__all__ = ["create_provider_app", "discovery_document", "main", "provider_state"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_provider_app(
    settings: DemoProviderSettings, state: DemoState | None = None
) -> web.Application:
    """The provider application; pass ``state`` to share it with :func:`create_api_app`."""
    app = web.Application(middlewares=[_demo_marker])
    app[SETTINGS_KEY] = settings
    app[STATE_KEY] = state if state is not None else DemoState(settings)
    app[SHUTDOWN_KEY] = asyncio.Event()
    app.on_shutdown.append(_wake_sleepers)
    router = app.router
    router.add_get("/", _index)
    router.add_get("/.well-known/openid-configuration", _discovery)
    router.add_get("/.well-known/oauth-authorization-server", _discovery)
    router.add_get("/jwks", _jwks)
    router.add_get("/authorize", browser.authorize_get)
    router.add_post("/authorize", browser.authorize_post)
    router.add_post("/token", tokens.token_endpoint)
    router.add_post("/revoke", tokens.revocation_endpoint)
    router.add_route("GET", "/userinfo", _userinfo)
    router.add_route("POST", "/userinfo", _userinfo)
    router.add_post("/introspect", _introspect)
    router.add_post("/device_authorization", _device_authorization)
    router.add_get("/device", browser.device_get)
    router.add_post("/device", browser.device_post)
    control.add_control_routes(app)
    return app


async def _wake_sleepers(app: web.Application) -> None:
    app[SHUTDOWN_KEY].set()


@web.middleware
async def _demo_marker(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers["X-Demo"] = "true"
    return response


def discovery_document(state: DemoState) -> dict[str, Any]:
    """The RFC 8414 / OIDC Discovery metadata, bent by the ``metadata_*`` knobs."""
    settings, behaviour = state.settings, state.behaviour
    doc: dict[str, Any] = {
        "issuer": behaviour.metadata_issuer
        if behaviour.metadata_issuer is not None
        else settings.issuer,
        "authorization_endpoint": settings.endpoint("/authorize"),
        "token_endpoint": settings.endpoint("/token"),
        "revocation_endpoint": settings.endpoint("/revoke"),
        "userinfo_endpoint": settings.endpoint("/userinfo"),
        "jwks_uri": settings.endpoint("/jwks"),
        "device_authorization_endpoint": settings.endpoint("/device_authorization"),
        "introspection_endpoint": settings.endpoint("/introspect"),
        "code_challenge_methods_supported": list(behaviour.metadata_pkce_methods)
        if behaviour.metadata_pkce_methods is not None
        else ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "scopes_supported": list(settings.scopes),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", tokens.DEVICE_GRANT],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "id_token_signing_alg_values_supported": ["RS256"],
        "subject_types_supported": ["public"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "email", "name"],
        "service_documentation": settings.endpoint("/"),
    }
    for key, value in behaviour.metadata_overrides.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


async def _index(request: web.Request) -> web.Response:
    issuer = request.app[SETTINGS_KEY].issuer
    return browser.message_page(
        "tokenbroker DEMO provider",
        f"A demo OAuth 2 / OpenID Connect provider at {issuer}. Users: alice and bob, "
        "password demo. Discovery: /.well-known/openid-configuration.",
    )


async def _discovery(request: web.Request) -> web.Response:
    return web.json_response(discovery_document(request.app[STATE_KEY]))


async def _jwks(request: web.Request) -> web.Response:
    key = request.app[STATE_KEY].signing_key
    return web.json_response({"keys": [key.as_dict(private=False)]})


async def _userinfo(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.count("userinfo_calls")
    token = bearer_token(request)
    record = state.active_access_token(token) if token else None
    if record is None:
        return bearer_error(401, "invalid_token", "access token is missing, invalid or expired")
    if "openid" not in record.scopes:
        return bearer_error(403, "insufficient_scope", "openid")
    user = record.user
    body = {
        "sub": user,
        "email": f"{user}@demo.example",
        "email_verified": True,
        "name": user.capitalize(),
    }
    return web.json_response(body, headers=NO_STORE)


async def _introspect(request: web.Request) -> web.Response:
    """RFC 7662 token introspection for any registered client."""
    state = request.app[STATE_KEY]
    state.count("introspections")
    try:
        form = await read_form(request)
        authenticate_client(request, form, state.settings)
    except OAuthError as exc:
        return exc.render()
    token = form.get("token", "")
    access = state.active_access_token(token)
    if access is not None:
        return web.json_response(
            {
                "active": True,
                "token_type": "Bearer",
                "scope": " ".join(access.scopes),
                "client_id": access.client_id,
                "username": access.user,
                "sub": access.user,
                "iss": state.settings.issuer,
                "aud": list(access.resources) or access.client_id,
                "iat": int(access.issued_at),
                "exp": int(access.expires_at),
            },
            headers=NO_STORE,
        )
    refresh = state.refresh_tokens.get(token)
    if refresh is not None and token in state.active_refresh_tokens(refresh.family_id):
        family = state.families[refresh.family_id]
        return web.json_response(
            {
                "active": True,
                "token_type": "refresh_token",
                "scope": " ".join(family.scopes),
                "client_id": family.client_id,
                "username": family.user,
                "sub": family.user,
                "iss": state.settings.issuer,
                "iat": int(refresh.issued_at),
            },
            headers=NO_STORE,
        )
    return web.json_response({"active": False}, headers=NO_STORE)


async def _device_authorization(request: web.Request) -> web.Response:
    """RFC 8628 §3.1-3.2."""
    state = request.app[STATE_KEY]
    state.count("device_authorizations")
    try:
        form = await read_form(request)
        client = authenticate_client(request, form, state.settings).client
        scopes = tuple(dict.fromkeys(form.get("scope", "").split()))
        if any(s not in state.settings.scopes for s in scopes):
            raise OAuthError("invalid_scope", "unknown scope requested")
    except OAuthError as exc:
        return exc.render()
    record = state.new_device_authorization(client_id=client.client_id, scopes=scopes)
    verification_uri = state.settings.endpoint("/device")
    body = {
        "device_code": record.device_code,
        "user_code": record.user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": f"{verification_uri}?user_code={record.user_code}",
        "expires_in": state.settings.device_code_ttl,
        "interval": record.interval,
    }
    return web.json_response(body, headers=NO_STORE)


# -- command line ---------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tokenbroker.demo.provider",
        description="tokenbroker DEMO OAuth/OIDC provider (not a real identity provider).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--issuer", help="public base URL (default http://HOST:PORT)")
    parser.add_argument("--client-id", default="broker")
    parser.add_argument("--client-secret", default="demo-secret", help='"" for a public client')
    parser.add_argument(
        "--redirect-uri",
        action="append",
        help="registered redirect URI (repeatable; default the local broker's demo callback)",
    )
    parser.add_argument("--user", action="append", default=[], help="extra demo user")
    parser.add_argument("--device-interval", type=int, default=5)
    parser.add_argument("--access-token-ttl", type=int, default=3600)
    parser.add_argument("--api-port", type=int, help="also serve the demo API on this port")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> DemoProviderSettings:
    redirect_uris = args.redirect_uri or ["http://127.0.0.1:8000/oauth/callback/demo"]
    client = DemoClient(args.client_id, args.client_secret or None, tuple(redirect_uris))
    return DemoProviderSettings(
        issuer=args.issuer or f"http://{args.host}:{args.port}",
        clients=(client,),
        users=tuple(dict.fromkeys(["alice", "bob", *args.user])),
        device_interval=args.device_interval,
        access_token_ttl=args.access_token_ttl,
    )


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Serve the provider (and the demo API) until ``stop`` is set."""
    settings = settings_from_args(args)
    state = DemoState(settings)
    runners = [web.AppRunner(create_provider_app(settings, state), access_log=None)]
    ports = [args.port]
    if args.api_port is not None:
        runners.append(web.AppRunner(create_api_app(state), access_log=None))
        ports.append(args.api_port)
    try:
        for runner, port in zip(runners, ports, strict=True):
            await runner.setup()
            await web.TCPSite(runner, args.host, port).start()
        print(f"tokenbroker DEMO provider on {settings.issuer}", flush=True)
        if args.api_port is not None:
            print(f"tokenbroker DEMO API on http://{args.host}:{args.api_port}", flush=True)
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await serve(args, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
