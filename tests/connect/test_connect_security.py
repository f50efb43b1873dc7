"""Hostile and broken callbacks: each is refused before the token endpoint and stores nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from harness import Harness, running
from sqlalchemy import func, select, update

from tokenbroker.db.schema import auth_flows, connections, events, sealed_secrets


async def _count(h: Harness, table) -> int:  # type: ignore[no-untyped-def]
    assert h.svc is not None
    async with h.svc.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _event_types(h: Harness) -> list[str]:
    assert h.svc is not None
    async with h.svc.engine.connect() as conn:
        return list((await conn.execute(select(events.c.type).order_by(events.c.id))).scalars())


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


async def _assert_refused(h: Harness, resp: aiohttp.ClientResponse, code: str) -> None:
    assert resp.status == 400, await resp.text()
    assert code in await resp.text()
    assert h.token_calls == 0
    assert await _count(h, connections) == 0


async def test_forged_state_is_refused(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        session = await h.start_connect()
        callback = await h.authorize(session["authorization_url"])
        await _assert_refused(
            h, await h.callback(_with_query(callback, state="forged")), "invalid_state"
        )


async def test_missing_state_is_refused(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        session = await h.start_connect()
        callback = await h.authorize(session["authorization_url"])
        parts = urlsplit(callback)
        query = {k: v[0] for k, v in parse_qs(parts.query).items() if k != "state"}
        stripped = parts._replace(query=urlencode(query)).geturl()
        await _assert_refused(h, await h.callback(stripped), "invalid_state")


async def test_callback_without_the_browser_binding_cookie_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        session = await h.start_connect()
        callback = await h.authorize(session["authorization_url"])
        async with aiohttp.ClientSession() as other_browser:  # e.g. the attacker's callback URL
            resp = await other_browser.get(callback, allow_redirects=False)
            await resp.read()
        await _assert_refused(h, resp, "invalid_state")


async def test_callback_with_a_wrong_binding_is_refused(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        session = await h.start_connect()
        callback = await h.authorize(session["authorization_url"])
        cookie = next(c for c in h.http.cookie_jar if c.key == "tb_flow")  # type: ignore[union-attr]
        flow_id = cookie.value.split(".")[0]
        async with aiohttp.ClientSession() as other:
            resp = await other.get(
                callback, allow_redirects=False, headers={"Cookie": f"tb_flow={flow_id}.wrong"}
            )
            await resp.read()
        await _assert_refused(h, resp, "invalid_state")


async def test_replayed_state_is_refused(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        session = await h.start_connect()
        callback = await h.authorize(session["authorization_url"])
        first = await h.callback(callback)
        assert first.status == 302
        calls = h.token_calls
        second = await h.callback(callback)
        assert second.status == 400
        assert "invalid_state" in await second.text()
        assert h.token_calls == calls


async def test_expired_state_is_refused(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        session = await h.start_connect()
        callback = await h.authorize(session["authorization_url"])
        assert h.svc is not None
        async with h.svc.engine.begin() as conn:
            past = datetime.now(UTC) - timedelta(seconds=1)
            await conn.execute(update(auth_flows).values(expires_at=past))
        await _assert_refused(h, await h.callback(callback), "invalid_state")


async def test_state_of_one_provider_on_another_providers_callback_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    beta = {
        "issuer": "http://127.0.0.1:1",
        "authorization_endpoint": "http://127.0.0.1:1/authorize",
        "token_endpoint": "http://127.0.0.1:1/token",
        "client_id": "beta",
        "allow_insecure_loopback": True,
    }
    async with running(tmp_path, database_url, providers={"beta": beta}) as h:
        session = await h.start_connect()
        callback = await h.authorize(session["authorization_url"])
        cookie = next(c for c in h.http.cookie_jar if c.key == "tb_flow")  # type: ignore[union-attr]
        mixed = callback.replace("/oauth/callback/acme", "/oauth/callback/beta")
        async with aiohttp.ClientSession() as browser:
            resp = await browser.get(
                mixed, allow_redirects=False, headers={"Cookie": f"tb_flow={cookie.value}"}
            )
            await resp.read()
        await _assert_refused(h, resp, "invalid_state")


@pytest.mark.parametrize("iss", ["http://127.0.0.1:9/evil", ""])
async def test_wrong_or_missing_iss_is_refused_before_the_token_call(
    tmp_path: Path, database_url: str, iss: str
) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.state is not None
        h.state.behaviour.callback_iss = iss  # "" omits it although the metadata advertises it
        session = await h.start_connect()
        callback = await h.authorize(session["authorization_url"])
        await _assert_refused(h, await h.callback(callback), "issuer_mismatch")
        assert "connect.failed" in await _event_types(h)


@pytest.mark.parametrize(
    ("knob", "value"),
    [
        ("id_token_aud", "someone-else"),
        ("id_token_iss", "http://127.0.0.1:9/evil"),
        ("id_token_sign_with_other_key", True),
        ("id_token_nonce", "not-the-nonce"),
        ("id_token_expired", True),
    ],
)
async def test_bad_id_token_stores_nothing(
    tmp_path: Path, database_url: str, knob: str, value: object
) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.state is not None
        setattr(h.state.behaviour, knob, value)
        session = await h.start_connect()
        resp = await h.callback(await h.authorize(session["authorization_url"]))
        assert resp.status == 400, await resp.text()
        assert "invalid_id_token" in await resp.text()
        assert await _count(h, connections) == 0
        assert await _count(h, sealed_secrets) == 0
        _status, doc = await h.admin("GET", f"/v1/connect-sessions/{session['id']}")
        assert doc["status"] == "failed"
        assert doc["error"] == "invalid_id_token"


async def test_provider_without_s256_is_refused(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.state is not None
        h.state.behaviour.metadata_pkce_methods = ["plain"]
        session = await h.start_connect()
        resp = await h.get(session["authorization_url"])
        assert resp.status == 400
        assert "pkce_unsupported" in await resp.text()
        assert int(h.state.counters.get("authorize_calls", 0)) == 0


async def test_discovery_issuer_mismatch_names_the_provider(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.state is not None
        h.state.behaviour.metadata_issuer = "http://127.0.0.1:9/other"
        status, doc = await h.admin(
            "POST", "/v1/connect-sessions", {"user_id": "alice", "provider": "acme"}
        )
        assert status == 503
        assert doc["error"] == "discovery_failed"
        assert "'acme'" in doc["message"]


async def test_unreachable_provider_during_discovery_is_a_clear_error(
    tmp_path: Path, database_url: str
) -> None:
    dead = {"issuer": "http://127.0.0.1:1", "client_id": "x", "allow_insecure_loopback": True}
    async with running(tmp_path, database_url, providers={"dead": dead}) as h:
        status, doc = await h.admin(
            "POST", "/v1/connect-sessions", {"user_id": "alice", "provider": "dead"}
        )
        assert status == 503
        assert doc["error"] == "discovery_failed"
        assert "'dead'" in doc["message"]


async def test_provider_error_on_callback_is_recorded_and_stores_nothing(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        session = await h.start_connect()
        callback = await h.authorize(session["authorization_url"])
        parts = urlsplit(callback)
        query = parse_qs(parts.query)
        denied = parts._replace(
            query=urlencode(
                {"error": "access_denied", "state": query["state"][0], "iss": query["iss"][0]}
            )
        ).geturl()
        resp = await h.callback(denied)
        assert resp.status == 502
        assert "access_denied" in await resp.text()
        assert h.token_calls == 0
        assert await _count(h, connections) == 0
        assert "connect.failed" in await _event_types(h)


async def test_no_refresh_token_fails_with_a_named_cause(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.state is not None
        h.state.behaviour.omit_refresh_token = True
        session = await h.start_connect()
        resp = await h.callback(await h.authorize(session["authorization_url"]))
        assert resp.status == 400
        body = await resp.text()
        assert "no_refresh_token" in body
        assert "prompt=consent" in body
        assert await _count(h, connections) == 0
