"""Refresh in one process: single flight, rotation, failure classification, cooldown."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from harness import Harness, running
from sqlalchemy import select

from tokenbroker.db.schema import provider_health
from tokenbroker.errors import NeedsReauth, ProviderMisconfigured, RefreshUnavailable

# The refresh's own behaviour, each caller waiting for its outcome (a request's usual 1.5 s
# bound has tests of its own below).
FAST = {
    "refresh": {
        "attempt_timeout_seconds": 1,
        "lease_seconds": 4,
        "wait_seconds": 6,
        "request_wait_ms": 10_000,
    }
}

# A request's wait for a refresh, short against the attempt's deadline.
BOUNDED = {"refresh": {"attempt_timeout_seconds": 2, "lease_seconds": 4, "request_wait_ms": 300}}


async def _connected(h: Harness) -> dict[str, Any]:
    connection = await h.connect("alice", ["files:read"])
    return dict(connection)


async def _due(h: Harness) -> dict[str, Any]:
    """A connection whose access token is due for refresh."""
    connection = await _connected(h)
    await h.expire_access_token(connection["id"])
    return connection


async def _token(h: Harness, connection_id: str) -> str:
    assert h.refresher is not None
    got = await h.refresher.access_token("default", connection_id)
    return got.value.reveal()


async def test_100_concurrent_uses_of_an_expired_token_cause_one_refresh(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        connection = await _connected(h)
        old = await _token(h, connection["id"])
        await h.expire_access_token(connection["id"])
        tokens = await asyncio.gather(*(_token(h, connection["id"]) for _ in range(100)))
        assert h.counter("refresh_calls") == 1
        assert len(set(tokens)) == 1
        assert tokens[0] != old
        assert tokens[0] in h.state.access_tokens  # type: ignore[union-attr]
        row = await h.connection_row(connection["id"])
        assert row["version"] == 2
        assert row["status"] == "active"
        assert row["last_refresh_at"] is not None


async def test_concurrent_uses_share_one_read_of_the_stored_token(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst on an expired token costs one refresh and one unsealing read, not a read per
    use after the refresh (what keeps a burst's latency near one provider round trip)."""
    async with running(tmp_path, database_url) as h:
        assert h.refresher is not None
        connection = await _connected(h)
        await h.expire_access_token(connection["id"])
        reads: list[str] = []
        read = h.refresher._read

        async def counted(*args: Any) -> Any:
            reads.append(args[1])
            return await read(*args)

        monkeypatch.setattr(h.refresher, "_read", counted)
        tokens = await asyncio.gather(*(_token(h, connection["id"]) for _ in range(50)))
        assert len(set(tokens)) == 1
        assert reads.count("access_token") == 1
        assert h.counter("refresh_calls") == 1


async def test_a_fresh_token_is_not_refreshed(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        connection = await _connected(h)
        await asyncio.gather(*(_token(h, connection["id"]) for _ in range(10)))
        assert h.counter("refresh_calls") == 0


async def test_rotating_provider_rejecting_reuse_loses_no_connection_over_many_cycles(
    tmp_path: Path, database_url: str
) -> None:
    cycles = 1000 if database_url.startswith("sqlite") else 250
    async with running(tmp_path, database_url) as h:
        connection = await _connected(h)
        for cycle in range(cycles):
            await h.expire_access_token(connection["id"])
            tokens = await asyncio.gather(*(_token(h, connection["id"]) for _ in range(4)))
            assert len(set(tokens)) == 1, cycle
        assert h.counter("refresh_calls") == cycles
        row = await h.connection_row(connection["id"])
        assert (row["status"], row["version"]) == ("active", cycles + 1)
        async with h.http.get(  # type: ignore[union-attr]
            f"http://127.0.0.1:{h.api_port}/me",
            headers={"Authorization": f"Bearer {await _token(h, connection['id'])}"},
        ) as resp:
            assert resp.status == 200


@pytest.mark.parametrize("failure", [500, 503, "timeout", "html", "bad_json"])
async def test_temporary_failures_keep_the_token_and_degrade_then_recover(
    tmp_path: Path, database_url: str, failure: object
) -> None:
    async with running(tmp_path, database_url, **FAST) as h:
        assert h.state is not None
        h.state.behaviour.timeout_seconds = 3
        # A timed-out request may still be processed by the provider, rotating the refresh token
        # we never saw: only a provider with a reuse grace period (e.g. Cognito) lets that heal.
        h.state.behaviour.reuse_grace_seconds = 60
        connection = await _connected(h)
        old = await _token(h, connection["id"])
        await h.expire_access_token(connection["id"])
        h.state.behaviour.token_failures = [failure] * 3
        with pytest.raises(RefreshUnavailable) as raised:
            await _token(h, connection["id"])
        assert raised.value.retry_after >= 1
        row = await h.connection_row(connection["id"])
        assert row["status"] == "degraded"
        assert row["version"] == 1
        assert row["last_refresh_error"]
        assert row["refresh_failures"] >= 1
        assert row["lease_owner"] is None
        assert h.refresher is not None
        async with h.svc.engine.connect() as conn:  # type: ignore[union-attr]
            from tokenbroker.vault.envelope import SealContext

            ctx = SealContext("default", "alice", "connection", connection["id"], "access_token")
            kept = await h.svc.sealed.get(conn, ctx)  # type: ignore[union-attr]
        assert kept is not None
        assert kept.reveal() == old
        new = await _token(h, connection["id"])  # the provider is back
        assert new != old
        row = await h.connection_row(connection["id"])
        assert (row["status"], row["refresh_failures"]) == ("active", 0)


async def test_timeout_at_a_strict_rotating_provider_is_flagged_not_silent(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **FAST) as h:
        assert h.state is not None
        # The provider processes the timed-out request 1.5 s after it came, rotating the token
        # we never see; the next attempt comes only 2 s after the first (twice its deadline).
        h.state.behaviour.timeout_seconds = 1.5
        connection = await _due(h)
        h.state.behaviour.token_failures = ["timeout"]
        with pytest.raises(NeedsReauth):
            await _token(h, connection["id"])
        row = await h.connection_row(connection["id"])
        assert row["status"] == "needs_reauth"
        assert "invalid_grant" in row["status_reason"]


async def test_invalid_grant_sets_needs_reauth_and_stops_calling(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.state is not None
        connection = await _connected(h)
        await h.expire_access_token(connection["id"])
        h.state.behaviour.token_failures = ["invalid_grant"]
        with pytest.raises(NeedsReauth):
            await _token(h, connection["id"])
        row = await h.connection_row(connection["id"])
        assert row["status"] == "needs_reauth"
        assert "invalid_grant" in row["status_reason"]
        calls = h.counter("token_calls")
        with pytest.raises(NeedsReauth):
            await _token(h, connection["id"])
        assert h.counter("token_calls") == calls
        _status, doc = await h.admin("GET", f"/v1/connections/{connection['id']}")
        assert doc["status"] == "needs_reauth"
        assert "invalid_grant" in doc["last_refresh_error"]


async def test_invalid_client_marks_the_provider_misconfigured_and_keeps_every_token(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.state is not None
        assert h.refresher is not None
        connection = await _connected(h)
        await h.expire_access_token(connection["id"])
        h.state.behaviour.token_failures = ["invalid_client"]
        with pytest.raises(ProviderMisconfigured):
            await _token(h, connection["id"])
        row = await h.connection_row(connection["id"])
        assert row["status"] == "active"
        assert row["version"] == 1
        calls = h.counter("token_calls")
        with pytest.raises(ProviderMisconfigured):  # refused without calling the provider
            await _token(h, connection["id"])
        assert h.counter("token_calls") == calls
        async with h.svc.engine.connect() as conn:  # type: ignore[union-attr]
            health = (await conn.execute(select(provider_health))).one()
        assert health.status == "misconfigured"
        status, doc = await h.admin("POST", f"/v1/connections/{connection['id']}/refresh")
        assert (status, doc["error"]) == (503, "provider_misconfigured")


async def test_misconfigured_provider_heals_through_a_probe(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.state is not None
        assert h.refresher is not None
        h.refresher.health._probe = __import__("datetime").timedelta(seconds=0)
        h.refresher.health._cache_seconds = 0
        connection = await _connected(h)
        await h.expire_access_token(connection["id"])
        h.state.behaviour.token_failures = ["invalid_client"]
        with pytest.raises(ProviderMisconfigured):
            await _token(h, connection["id"])
        assert await _token(h, connection["id"])  # operator fixed it; the probe succeeds
        assert await h.refresher.health.problem("acme") is None


async def test_a_response_without_refresh_token_keeps_the_old_one(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.state is not None
        h.state.behaviour.rotate_refresh_tokens = False
        connection = await _connected(h)
        for _ in range(3):
            await h.expire_access_token(connection["id"])
            await _token(h, connection["id"])
        assert h.counter("refresh_calls") == 3
        row = await h.connection_row(connection["id"])
        assert (row["status"], row["has_refresh_token"]) == ("active", True)


async def test_narrower_scopes_on_refresh_are_stored(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        assert h.state is not None
        connection = await _connected(h)
        h.state.behaviour.refresh_scope_narrow_to = ["openid"]
        await h.expire_access_token(connection["id"])
        await _token(h, connection["id"])
        _status, doc = await h.admin("GET", f"/v1/connections/{connection['id']}")
        assert doc["scopes"] == ["openid"]


async def test_429_from_the_token_endpoint_is_honoured(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url, **FAST) as h:
        assert h.state is not None
        connection = await _connected(h)
        await h.expire_access_token(connection["id"])
        h.state.behaviour.token_failures = [429]
        started = asyncio.get_running_loop().time()
        await _token(h, connection["id"])
        assert asyncio.get_running_loop().time() - started >= 0.9  # Retry-After: 1
        assert h.counter("refresh_calls") == 2


async def test_a_lease_left_by_a_dead_holder_expires_on_its_own(
    tmp_path: Path, database_url: str
) -> None:
    from datetime import UTC, datetime

    from tokenbroker.lifecycle import lease

    async with running(tmp_path, database_url, **FAST) as h:
        connection = await _connected(h)
        await h.expire_access_token(connection["id"])
        async with h.svc.engine.begin() as conn:  # type: ignore[union-attr]
            assert await lease.claim(conn, connection["id"], 1, "dead", datetime.now(UTC), 2)
        started = asyncio.get_running_loop().time()
        await _token(h, connection["id"])
        assert asyncio.get_running_loop().time() - started >= 1.5
        assert h.counter("refresh_calls") == 1


async def test_a_stale_writer_cannot_overwrite_a_newer_token(
    tmp_path: Path, database_url: str
) -> None:
    from datetime import UTC, datetime

    from tokenbroker.lifecycle import lease

    async with running(tmp_path, database_url) as h:
        connection = await _connected(h)
        now = datetime.now(UTC)
        async with h.svc.engine.begin() as conn:  # type: ignore[union-attr]
            assert await lease.claim(conn, connection["id"], 1, "a", now, 30)
            assert not await lease.claim(conn, connection["id"], 1, "b", now, 30)
        await h.expire_access_token(connection["id"])
        async with h.svc.engine.begin() as conn:  # type: ignore[union-attr]
            await lease.release(conn, connection["id"], 1, "a")
        await _token(h, connection["id"])  # version 2 now
        async with h.svc.engine.begin() as conn:  # type: ignore[union-attr]
            assert not await lease.claim(conn, connection["id"], 1, "a", now, 30)
            assert not await lease.mark_needs_reauth(conn, connection["id"], 1, "a", "x", now)
        row = await h.connection_row(connection["id"])
        assert (row["status"], row["version"]) == ("active", 2)


async def test_admin_can_force_a_refresh(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        connection = await _connected(h)
        status, doc = await h.admin("POST", f"/v1/connections/{connection['id']}/refresh")
        assert status == 200, doc
        assert doc["last_refresh_at"] is not None
        assert h.counter("refresh_calls") == 1


async def test_a_request_stops_waiting_for_a_slow_refresh_which_goes_on_and_serves_the_next_call(
    tmp_path: Path, database_url: str
) -> None:
    """A token endpoint that takes 1.5 s: callers bounded at 0.3 s get 503 (``Retry-After``)
    in time, the one refresh is neither cancelled nor repeated, and its token serves the next
    call without another token-endpoint call."""
    async with running(tmp_path, database_url, **BOUNDED) as h:
        assert h.state is not None
        connection = await _connected(h)
        old = await _token(h, connection["id"])
        await h.expire_access_token(connection["id"])
        h.state.behaviour.token_delay_seconds = 1.5
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcomes = await asyncio.gather(
            *(_token(h, connection["id"]) for _ in range(5)), return_exceptions=True
        )
        waited = loop.time() - started
        assert all(isinstance(outcome, RefreshUnavailable) for outcome in outcomes), outcomes
        assert all(outcome.retry_after == 1 for outcome in outcomes)  # type: ignore[union-attr]
        assert 0.3 <= waited < 1.2
        await asyncio.sleep(1.6)  # the refresh finishes on its own
        assert h.counter("refresh_calls") == 1
        new = await _token(h, connection["id"])
        assert new != old
        assert h.counter("refresh_calls") == 1
        row = await h.connection_row(connection["id"])
        assert (row["status"], row["version"], row["lease_owner"]) == ("active", 2, None)


async def test_a_hanging_token_endpoint_costs_each_request_only_its_wait(
    tmp_path: Path, database_url: str
) -> None:
    """The endpoint never answers (the attempt's deadline is 2 s): each request gets 503 after
    its 0.3 s, however many come while the attempt hangs, and only one attempt is sent."""
    async with running(tmp_path, database_url, **BOUNDED) as h:
        assert h.state is not None
        h.state.behaviour.timeout_seconds = 30
        connection = await _due(h)
        h.state.behaviour.token_failures = ["timeout"]
        loop = asyncio.get_running_loop()
        for _ in range(3):
            started = loop.time()
            with pytest.raises(RefreshUnavailable):
                await _token(h, connection["id"])
            assert loop.time() - started < 1.0
        assert h.counter("refresh_calls") == 1


async def test_the_background_and_admin_refreshes_wait_for_their_outcome(
    tmp_path: Path, database_url: str
) -> None:
    """Only requests are bounded: an admin's forced refresh and the background refresher, behind
    a 1 s token endpoint, each end with the new version, not a 503 after a request's 0.3 s."""
    async with running(tmp_path, database_url, **BOUNDED) as h:
        assert h.state is not None
        assert h.refresher is not None
        connection = await _connected(h)
        h.state.behaviour.token_delay_seconds = 1.0
        refreshed = await h.refresher.refresh_now("default", connection["id"])
        assert refreshed.version == 2
        await h.refresher.refresh_ahead(refreshed)
        assert (await h.connection_row(connection["id"]))["version"] == 3


async def test_after_a_timeout_no_replica_resends_the_refresh_token_too_soon(
    tmp_path: Path, database_url: str
) -> None:
    """An attempt with no answer in its 2 s may still be processed by the provider: the lease
    stays unclaimable until twice that after it was sent, so another replica (here a second
    refresher on the same database) does not send the same refresh token meanwhile, and the
    connection is refreshed once that time has passed."""
    from tokenbroker.lifecycle.health import ProviderHealth
    from tokenbroker.lifecycle.refresh import Refresher

    fast = {"refresh": {"attempt_timeout_seconds": 2, "lease_seconds": 4, "request_wait_ms": 300}}
    async with running(tmp_path, database_url, **fast) as h:
        assert h.state is not None
        assert h.svc is not None
        h.state.behaviour.timeout_seconds = 30
        h.state.behaviour.reuse_grace_seconds = 60
        connection = await _due(h)
        h.state.behaviour.token_failures = ["timeout"]
        with pytest.raises(RefreshUnavailable):
            await _token(h, connection["id"])
        await asyncio.sleep(2.0)  # the attempt (sent at 0 s) timed out at 2 s; now about 2.3 s
        replica = Refresher(h.svc, ProviderHealth(h.svc.engine, h.svc.clock))
        with pytest.raises(RefreshUnavailable):
            await replica.access_token("default", connection["id"])
        assert h.counter("refresh_calls") == 1
        await asyncio.sleep(2.0)  # past 4 s
        used = await replica.access_token("default", connection["id"])
        assert used.connection.version == 2
        assert h.counter("refresh_calls") == 2
