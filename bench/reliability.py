"""Reliability figures (``../shared/SECURITY.md`` §3), at a scale the test suite cannot afford.

Run by hand from the repository root (never in tests); PostgreSQL on 127.0.0.1:5432 for the
multi-process figure. Everything talks to the DEMO provider and its API on loopback, through
the test suite's harness (``tests/support``):

    .venv/bin/python bench/reliability.py [--only single-flight|crash|isolation|rotation|outage]

- ``single-flight``: ``--trials`` times, 100 concurrent uses of a connection whose access token
  has expired, spread over 3 broker processes sharing a PostgreSQL database, against a provider
  that rotates refresh tokens, revokes the family on reuse and takes ``--provider-rtt`` to
  answer: token-endpoint calls per trial, ``invalid_grant`` answers, successful uses, and the
  uses' latency against the provider's round trip.
- ``crash``: broker processes refreshing back to back are killed (SIGKILL) at random points,
  ``--parallel`` at a time, ``--kills`` in all, once against a provider with a 60 s reuse grace
  (Cognito-like: nothing may be lost) and once against one without (a loss must be flagged
  ``needs_reauth``, never silent). After each kill every sealed record must open.
- ``isolation``: alice's agent, granted raw access (``operations = ["*"]``), sends
  600 hostile destinations (paths, headers, an upstream redirect) and ``--idor`` probes
  for bob's connection (ids and names in paths, queries and headers). Every outbound connection
  the broker attempts is checked against the provider's API address (anything else is counted
  and refused before a packet leaves), and the API counts whose token it received.
- ``rotation``: ``--rows`` sealed values re-wrapped under a new key by the operator's commands
  while agents call the gateway and refreshes seal new tokens (SQLite and PostgreSQL).
- ``outage``: the provider's token endpoint answers 503 (``--outage-kind 503``) or accepts
  requests and never answers (``hang``) for ``--outage-seconds`` (10 minutes) under load:
  requests with a valid access token must all succeed, those that need a refresh must get 503
  within 2 s, and every user's calls must succeed again soon after it is back.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

import aiohttp  # noqa: E402
from agents import GATEWAY_CONFIG, agent, grant, raw_get, session  # noqa: E402
from harness import ENV, Harness, cli_config, postgres_database, running  # noqa: E402

from tokenbroker.config import load_settings  # noqa: E402
from tokenbroker.errors import NeedsReauth, TokenBrokerError  # noqa: E402
from tokenbroker.lifecycle.health import ProviderHealth  # noqa: E402
from tokenbroker.lifecycle.refresh import Refresher  # noqa: E402
from tokenbroker.runtime import build_services, close_services  # noqa: E402
from tokenbroker.secret import Secret  # noqa: E402
from tokenbroker.vault.envelope import SealContext  # noqa: E402
from tokenbroker.vault.rotation import check_all, count_by_key  # noqa: E402

# After a kill, the check waits for the dead holder's lease to expire, not a request's 1.5 s.
CRASH_LEASE = {
    "refresh": {"attempt_timeout_seconds": 1, "lease_seconds": 2, "request_wait_ms": 10_000}
}
UNLIMITED = {  # the probes measure the gateway's checks, not its rate limits
    "gateway": {
        "user_rate_per_second": 1_000_000,
        "user_burst": 1_000_000,
        "agent_rate_per_second": 1_000_000,
        "agent_burst": 1_000_000,
    }
}


# --- broker processes driven over stdin/stdout -------------------------------------------------
async def worker(mode: str, config: str, connection_id: str) -> None:
    """``use``: on each ``go N`` line, N concurrent uses, timed; ``loop``: refresh until killed."""
    svc = await build_services(load_settings(Path(config)))
    refresher = Refresher(svc, ProviderHealth(svc.engine, svc.clock))
    print("READY", flush=True)
    try:
        if mode == "loop":
            while True:
                try:
                    await refresher.refresh_now("default", connection_id)
                except TokenBrokerError:
                    await asyncio.sleep(0.05)
        while (line := await asyncio.to_thread(sys.stdin.readline)).startswith("go"):
            count = int(line.split()[1])

            async def use() -> tuple[float, str]:
                started = time.perf_counter()
                try:
                    token = await refresher.access_token("default", connection_id)
                    outcome = token.value.reveal()
                except TokenBrokerError as exc:
                    outcome = f"error:{exc.code}"
                return time.perf_counter() - started, outcome

            results = await asyncio.gather(*(use() for _ in range(count)))
            print(json.dumps([list(r) for r in results]), flush=True)
    finally:
        await close_services(svc)


async def spawn(h: Harness, mode: str, connection_id: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "_worker",
        mode,
        str(h.write_config()),
        connection_id,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **ENV},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if line.strip() != b"READY":
        raise SystemExit(f"a broker process did not start: {line!r}")
    return proc


# --- single-flight -----------------------------------------------------------------------------
async def single_flight(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str, str]]:
    async with postgres_database() as url, running(tmp, url) as h:
        assert h.state is not None
        h.state.behaviour.token_delay_seconds = args.provider_rtt
        connection = await h.connect()
        procs = list(await asyncio.gather(*(spawn(h, "use", connection["id"]) for _ in range(3))))
        calls: list[int] = []
        ok, latencies = 0, []
        try:
            for trial in range(-1, args.trials):  # -1: warm-up (pools, keys), not counted
                if trial >= 0:
                    await h.expire_access_token(connection["id"])
                before = h.counter("refresh_calls")
                shares = [34, 33, 33]
                for proc, share in zip(procs, shares, strict=True):
                    assert proc.stdin is not None
                    proc.stdin.write(f"go {share}\n".encode())
                outputs = [
                    json.loads(await asyncio.wait_for(p.stdout.readline(), 60))  # type: ignore[union-attr]
                    for p in procs
                ]
                results = [r for out in outputs for r in out]
                if trial < 0:
                    continue
                calls.append(h.counter("refresh_calls") - before)
                tokens = {outcome for _, outcome in results if not outcome.startswith("error:")}
                ok += sum(1 for _, outcome in results if not outcome.startswith("error:"))
                latencies += [seconds for seconds, _ in results]
                if len(tokens) != 1:
                    print(f"  a trial saw {len(tokens)} different tokens", flush=True)
        finally:
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(b"quit\n")
                await proc.wait()
        uses = args.trials * 100
        invalid_grant = h.counter("token_errors:invalid_grant")
        cuts = statistics.quantiles(latencies, n=100)
        p50, p99 = cuts[49] * 1000, cuts[98] * 1000
        rtt = args.provider_rtt * 1000
        return [
            ("trials (100 uses over 3 processes, PostgreSQL)", str(args.trials), ""),
            ("token-endpoint calls per trial", f"{min(calls)}-{max(calls)}", "exactly 1"),
            ("`invalid_grant` answers from the provider", str(invalid_grant), "0"),
            ("successful uses", f"{ok} of {uses}", "100%"),
            (
                "latency of a use, p50 / p99 (the provider's round trip)",
                f"{p50:.0f} / {p99:.0f} ms ({rtt:.0f} ms)",
                f"<= {rtt + 50:.0f} ms",
            ),
        ]


# --- crash -------------------------------------------------------------------------------------
async def crash(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str, str]]:
    rows = []
    for grace in (60.0, 0.0):
        where = tmp / f"grace-{grace:.0f}"
        where.mkdir()
        url = f"sqlite:///{where / 'crash.db'}"  # the lease and version logic is the same SQL
        async with running(where, url, **CRASH_LEASE) as h:
            assert h.state is not None
            assert h.svc is not None
            assert h.refresher is not None
            refresher = h.refresher
            h.state.behaviour.reuse_grace_seconds = grace
            users = [f"user{i}" for i in range(args.parallel)]
            conns = {u: (await h.connect(u))["id"] for u in users}
            rng = random.Random(20261130)
            usable = flagged = silent = unreadable = kills = 0
            while kills < args.kills:
                batch = users[: min(args.parallel, args.kills - kills)]
                procs = list(await asyncio.gather(*(spawn(h, "loop", conns[u]) for u in batch)))
                await asyncio.sleep(0.05)
                deadlines = sorted((rng.uniform(0.05, 0.5), i) for i in range(len(procs)))
                started = time.monotonic()
                for at, i in deadlines:
                    await asyncio.sleep(max(0.0, started + at - time.monotonic()))
                    procs[i].send_signal(signal.SIGKILL)
                for proc in procs:
                    await proc.wait()
                kills += len(procs)
                report = await check_all(h.svc.engine, h.svc.sealed._envelope)
                unreadable += len(report.failures)

                outcomes = await asyncio.gather(*(verdict(h, refresher, conns[u]) for u in batch))
                for user, outcome in zip(batch, outcomes, strict=True):
                    if outcome == "usable":
                        usable += 1
                    elif outcome == "flagged":
                        flagged += 1
                        conns[user] = (await h.connect(user))["id"]  # the user reconnects
                    else:
                        silent += 1
                print(f"  grace {grace:.0f} s: {kills} kills", flush=True)
        label = f"provider reuse grace {grace:.0f} s"
        rows.append(
            (
                f"{label}: SIGKILLs at random points of refresh-with-rotation",
                str(kills),
                "",
            )
        )
        if grace:
            rows.append((f"{label}: refresh tokens lost", str(flagged + silent), "0"))
        else:
            rows.append((f"{label}: losses flagged `needs_reauth`", str(flagged), "all"))
            rows.append((f"{label}: silent losses", str(silent), "0"))
        rows.append((f"{label}: sealed records that failed to open", str(unreadable), "0"))
    return rows


async def verdict(h: Harness, refresher: Refresher, connection_id: str) -> str:
    """After a kill: the connection gives a token newer than the one it had (``usable``), or
    says the user must reconnect (``flagged``); anything else is a silent loss."""
    row = await h.connection_row(connection_id)
    try:
        await refresher.access_token("default", connection_id, newer_than=row["version"])
        return "usable"
    except NeedsReauth:
        return "flagged"
    except TokenBrokerError:
        return "silent"


# --- key rotation under load --------------------------------------------------------------
async def rotation(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str, str]]:
    """``--rows`` sealed values, then ``tokenbroker keys add / promote / rewrap`` (the operator's
    commands, in processes of their own) while agents call the gateway and refreshes seal new
    tokens; every request must succeed and every value end up under the new key. On SQLite and
    on PostgreSQL."""
    rows = []
    for name in ("SQLite", "PostgreSQL"):
        where = tmp / name
        where.mkdir()
        if name == "SQLite":
            rows += await _rotation(args, where, f"sqlite:///{where / 'rotation.db'}", name)
            continue
        async with postgres_database() as url:
            rows += await _rotation(args, where, url, name)
    return rows


async def _rotation(
    args: argparse.Namespace, tmp: Path, url: str, name: str
) -> list[tuple[str, str, str]]:
    async with running(tmp, url, **GATEWAY_CONFIG, **UNLIMITED) as h:
        assert h.svc is not None
        connection = await h.connect("alice", ["files:read"])
        made = await agent(h)
        await grant(h, made["id"], ["files:read"])
        token = await session(h, made["id"])
        sealed = h.svc.sealed
        for start in range(0, args.rows, 1000):
            async with h.svc.engine.begin() as conn:
                for i in range(start, min(start + 1000, args.rows)):
                    ctx = SealContext("default", f"user{i % 997}", "bench", f"row{i}", "value")
                    await sealed.put(conn, ctx, Secret(f"value-{i}"))
        config = cli_config(h)  # the operator's commands: database and key file
        before = await count_by_key(h.svc.engine)
        statuses: Counter[int] = Counter()
        refreshes: Counter[int] = Counter()
        stop = asyncio.Event()

        async def calls() -> None:
            async with aiohttp.ClientSession() as http:
                while not stop.is_set():
                    async with http.get(
                        f"http://127.0.0.1:{h.broker_port}/proxy/acme/files",
                        headers={"Authorization": f"Bearer {token}"},
                    ) as resp:
                        await resp.read()
                        statuses[resp.status] += 1

        async def forced_refreshes() -> None:
            while not stop.is_set():
                path = f"/v1/connections/{connection['id']}/refresh"
                refreshes[(await h.admin("POST", path))[0]] += 1
                await asyncio.sleep(0.2)

        load = [asyncio.create_task(calls()) for _ in range(8)]
        load.append(asyncio.create_task(forced_refreshes()))
        await asyncio.sleep(2)
        calm = sum(statuses.values()) / 2

        def cli(*argv: str) -> str:
            done = subprocess.run(
                [sys.executable, "-m", "tokenbroker.cli", "--config", str(config), *argv],
                capture_output=True,
                text=True,
                env={**os.environ, **ENV},
                cwd=h.tmp,
                check=False,
            )
            if done.returncode != 0:
                raise SystemExit(f"tokenbroker {' '.join(argv)}: {done.stderr.strip()}")
            return done.stdout

        added = (await asyncio.to_thread(cli, "keys", "add")).split()[1]
        await asyncio.to_thread(cli, "keys", "promote", added)
        started, served = time.monotonic(), sum(statuses.values())
        rewrapped = await asyncio.to_thread(cli, "keys", "rewrap")
        took = time.monotonic() - started
        during = (sum(statuses.values()) - served) / took
        await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*load)
        after = await count_by_key(h.svc.engine)
        report = await check_all(h.svc.engine, sealed._envelope)
        failed = sum(n for status, n in statuses.items() if status != 200)
        refresh_failed = sum(n for status, n in refreshes.items() if status != 200)
        old_keys = sum(n for key, n in after.items() if key != added)
        return [
            (f"{name}: sealed values before the rotation", f"{sum(before.values()):,}", ""),
            (f"{name}: `keys rewrap`", f"{int(rewrapped.split()[1]):,} in {took:.0f} s", ""),
            (
                f"{name}: gateway requests (8 at a time) during the rotation / failed",
                f"{sum(statuses.values()):,} / {failed}",
                "0 failed",
            ),
            (
                f"{name}: gateway requests a second before / during the rewrap",
                f"{calm:,.0f} / {during:,.0f}",
                "",
            ),
            (
                f"{name}: forced refreshes during the rotation / failed",
                f"{sum(refreshes.values())} / {refresh_failed}",
                "0 failed",
            ),
            (f"{name}: values left under the old key", str(old_keys), "0"),
            (f"{name}: values that failed to open afterwards", str(len(report.failures)), "0"),
        ]


# --- outage ------------------------------------------------------------------------------------
OUTAGE_USERS = 20  # half keep a valid access token through the outage, half need a refresh
KINDS = {"503": "answering 503", "hang": "never answering"}


async def outage(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str, str]]:
    """The provider's token endpoint answers 503, or never answers, for ``--outage-seconds``
    while 8 callers use the gateway, 4 for 10 users whose access tokens stay valid and 4 for 10
    users whose tokens are due for refresh when it starts. Then it comes back, and the time
    until every user's calls succeed again is measured. PostgreSQL, as in production."""
    async with postgres_database() as url, running(tmp, url, **GATEWAY_CONFIG, **UNLIMITED) as h:
        return await _outage(args, h)


async def _outage(args: argparse.Namespace, h: Harness) -> list[tuple[str, str, str]]:
    assert h.state is not None
    made = await agent(h)
    tokens: dict[str, str] = {}
    stale: list[str] = []
    for i in range(OUTAGE_USERS):
        user = f"user{i}"
        connection = await h.connect(user, ["files:read"])
        await grant(h, made["id"], ["files:read"], user_id=user)
        tokens[user] = await session(h, made["id"], user)
        if i % 2:
            stale.append(connection["id"])
    groups = {needs: [f"user{i}" for i in range(needs, OUTAGE_USERS, 2)] for needs in (0, 1)}
    answers: dict[int, Counter[int]] = {0: Counter(), 1: Counter()}  # by "needs a refresh"
    latencies: dict[int, list[float]] = {0: [], 1: []}
    url = f"http://127.0.0.1:{h.broker_port}/proxy/acme/files"

    async def call(http: aiohttp.ClientSession, user: str) -> int:
        async with http.get(url, headers={"Authorization": f"Bearer {tokens[user]}"}) as resp:
            await resp.read()
            return resp.status

    async def caller(needs: int, first: int, until: float) -> None:
        users = itertools.cycle(groups[needs][first:] + groups[needs][:first])
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < until:
                started = time.monotonic()
                answers[needs][await call(http, next(users))] += 1
                latencies[needs].append(time.monotonic() - started)

    behaviour = h.state.behaviour
    down: list[int | str] = [503] * 100_000
    if args.outage_kind == "hang":
        behaviour.timeout_seconds = args.outage_seconds + 60  # until the provider shuts down
        down = ["timeout"] * 100_000

    async def keep_down(until: float) -> None:
        """The demo provider takes injected faults from a list: keep it full."""
        while time.monotonic() < until:
            if len(behaviour.token_failures) < 50_000:
                behaviour.token_failures.extend(down)
            await asyncio.sleep(0.5)

    behaviour.token_failures = list(down)
    for connection_id in stale:
        await h.expire_access_token(connection_id)
    calls_before = h.token_calls
    until = time.monotonic() + args.outage_seconds
    callers = [caller(needs, i, until) for needs in (0, 1) for i in range(4)]
    await asyncio.gather(keep_down(until), *callers)
    behaviour.token_failures = []
    behaviour.timeout_seconds = 0  # a request the endpoint still holds is answered now
    calls_during = h.token_calls - calls_before

    back = time.monotonic()
    steady: float | None = None
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - back < 120:
            statuses = await asyncio.gather(*(call(http, user) for user in sorted(tokens)))
            if all(status == 200 for status in statuses):
                steady = time.monotonic() - back
                break
            await asyncio.sleep(0.1)

    def ms(values: list[float], q: float) -> str:
        return f"{sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000:.0f}"

    valid, refresh = answers[0], answers[1]
    other = sum(n for status, n in refresh.items() if status != 503)
    return [
        (f"token endpoint {KINDS[args.outage_kind]}, 8 callers", f"{args.outage_seconds:g} s", ""),
        ("token-endpoint calls during the outage", f"{calls_during:,}", ""),
        (
            "requests with a valid access token / succeeded",
            f"{sum(valid.values()):,} / {valid[200]:,}",
            "100%",
        ),
        ("their latency p50 / max", f"{ms(latencies[0], 0.5)} / {ms(latencies[0], 1)} ms", ""),
        (
            "requests that needed a refresh / answered 503",
            f"{sum(refresh.values()):,} / {refresh[503]:,} (other: {other})",
            "all 503",
        ),
        (
            "their latency p50 / max",
            f"{ms(latencies[1], 0.5)} / {ms(latencies[1], 1)} ms",
            "max <= 2 s",
        ),
        (
            "provider back: every user's calls succeed after",
            "more than 120 s" if steady is None else f"{steady:.1f} s",
            "<= 30 s",
        ),
    ]


# --- isolation ---------------------------------------------------------------------------------
HOSTS = [
    "169.254.169.254", "metadata.google.internal", "100.100.100.200", "10.0.0.1", "172.16.0.1",
    "192.168.0.1", "127.0.0.2", "127.1", "0.0.0.0", "0", "0x7f000001", "2130706433",
    "017700000001", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[fd00::1]", "[fe80::1]",
    "localhost", "localhost.localdomain", "evil.example", "evil.example:8080", "224.0.0.1",
    "169.254.169.254.nip.io", "[::]",
]  # fmt: skip
PATH_FORMS = [
    "/proxy/acme//{h}/files", "/proxy/acme/http://{h}/files", "/proxy/acme/https:%2f%2f{h}/",
    "/proxy/acme/@{h}/files", "/proxy/acme/\\{h}/files", "/proxy/acme/%5c{h}/files",
    "/proxy/acme/..%2f..%2f{h}/files", "/proxy/acme/%2e%2e/%2e%2e/{h}", "/proxy/{h}/files",
    "/proxy/acme:{h}/files", "/proxy/acme@{h}/files", "/proxy/acme/files%0d%0aHost:%20{h}",
    "/proxy/acme/files?url=http://{h}/",
]  # fmt: skip
HEADER_FORMS = [
    "Host", "X-Forwarded-Host", "X-Forwarded-Server", "X-Original-URL", "X-Rewrite-URL",
    "Forwarded", "X-Host", "X-Upstream", "X-Target-URL", "X-Forwarded-For", "X-Real-IP",
]  # fmt: skip


def hostile_destinations() -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = []
    for host in HOSTS:
        out += [(form.format(h=host), {}) for form in PATH_FORMS]
        for name in HEADER_FORMS:
            value = f"host={host}" if name == "Forwarded" else host
            if name.endswith("URL"):
                value = f"http://{host}/files"
            out.append(("/proxy/acme/files", {name: value}))
    return out


def idor_probes(bob: str, other_tenant: str) -> list[tuple[str, dict[str, str]]]:
    paths = [
        f"/proxy/acme/files?connection_id={bob}", "/proxy/acme/files?user_id=bob",
        "/proxy/acme/files?user=bob", f"/proxy/{bob}/files", f"/proxy/acme:{bob}/files",
        f"/proxy/acme/{bob}/files", "/proxy/acme/me?as=bob",
        f"/proxy/acme/files?tenant={other_tenant}",
    ]  # fmt: skip
    headers = [
        {"X-Connection-Id": bob}, {"X-User-Id": "bob"}, {"X-TokenBroker-User": "bob"},
        {"X-Tenant-Id": other_tenant}, {"X-Forwarded-User": "bob"}, {"Cookie": "user=bob"},
        {"As-User": "bob"}, {"Dropbox-API-Select-User": "bob"}, {"X-Impersonate": "bob"},
        {"X-On-Behalf-Of": "bob"}, {"X-Original-User": "bob"}, {"X-Remote-User": "bob"},
    ]  # fmt: skip
    probes: list[tuple[str, dict[str, str]]] = [(p, {}) for p in paths]
    probes += [(p, hd) for p in ("/proxy/acme/files", "/proxy/acme/me") for hd in headers]
    return probes


async def isolation(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str, str]]:
    url = f"sqlite:///{tmp / 'isolation.db'}"
    async with running(tmp, url, **GATEWAY_CONFIG, **UNLIMITED) as h:
        assert h.state is not None
        await h.connect("alice", ["files:read", "files:write"])
        h.state.behaviour.auto_approve_user = "bob"  # bob's own account at the provider
        bob = (await h.connect("bob", ["files:read", "files:write"]))["id"]
        h.state.behaviour.auto_approve_user = "alice"
        made = await agent(h)
        await grant(h, made["id"], ["files:read"], operations=["*"])
        await grant(h, made["id"], ["files:read"], user_id="bob")  # bob's own grant
        token = await session(h, made["id"])
        allowed = {("127.0.0.1", h.api_port)}
        refused: list[tuple[object, object]] = []
        loop = asyncio.get_running_loop()
        connect = loop.create_connection

        async def guarded(factory: Any, host: Any = None, port: Any = None, **kw: Any) -> Any:
            # Every outbound connection in this process: the harness's own clients talk to
            # the broker and the provider; the broker's gateway may reach only the API.
            if (host, port) in allowed or port in (h.broker_port, h.provider_port):
                return await connect(factory, host, port, **kw)
            refused.append((host, port))
            raise OSError("refused by the benchmark: not the provider's API")

        loop.create_connection = guarded  # type: ignore[method-assign, assignment]
        sender = Sender(h, token)
        destinations = hostile_destinations()
        api_before = h.counter("api_calls")
        for path, headers in destinations:
            await sender.send(path, headers)
        hostile_statuses = dict(sorted(sender.statuses.items()))
        reached_api = h.counter("api_calls") - api_before
        sender.statuses.clear()
        h.state.behaviour.api_redirect_to = "http://169.254.169.254/latest/meta-data/"
        redirects = [await sender.send("/proxy/acme/files", {}) for _ in range(10)]
        h.state.behaviour.api_redirect_to = None
        sender.statuses.clear()
        bob_before = h.counter("api_calls_for:bob")
        probes = idor_probes(bob, "b")
        for path, headers in itertools.islice(itertools.cycle(probes), args.idor):
            await sender.send(path, headers)
        bob_uses = h.counter("api_calls_for:bob") - bob_before
        probe_statuses = dict(sorted(sender.statuses.items()))
        loop.create_connection = connect  # type: ignore[method-assign]
        return [
            (
                f"hostile destinations ({len(HOSTS)} hosts in "
                f"{len(PATH_FORMS)} path and {len(HEADER_FORMS)} header forms), upstream redirects",
                f"{len(destinations)} + {len(redirects)}",
                ">= 500",
            ),
            ("their answers by status", _statuses(hostile_statuses), ""),
            ("of them forwarded to the provider's API (header forms)", str(reached_api), ""),
            ("outbound connections to anything but the provider's API", str(len(refused)), "0"),
            ("redirects passed back, not followed (status 302)", str(redirects.count(302)), "all"),
            (f"IDOR probes for bob's connection ({len(probes)} distinct)", str(args.idor), ""),
            ("their answers by status", _statuses(probe_statuses), ""),
            ("requests that reached the API with bob's token", str(bob_uses), "0"),
            ("probes answered with 5xx", str(sender.server_errors), "0"),
        ]


def _statuses(counts: dict[int, int]) -> str:
    return ", ".join(f"{status}: {n}" for status, n in counts.items())


class Sender:
    """Exact request targets as alice's agent (:func:`agents.raw_get`), their statuses counted."""

    def __init__(self, h: Harness, token: str) -> None:
        self._h, self._token = h, token
        self.server_errors = 0
        self.statuses: Counter[int] = Counter()

    async def send(self, target: str, headers: dict[str, str]) -> int:
        sent = {**headers, "Authorization": f"Bearer {self._token}"}
        status, _ = await raw_get(self._h, target, sent)
        self.server_errors += status >= 500
        self.statuses[status] += 1
        return status


SCENARIOS: dict[str, Callable[[argparse.Namespace, Path], Awaitable[list[tuple[str, str, str]]]]]
SCENARIOS = {
    "single-flight": single_flight,
    "crash": crash,
    "isolation": isolation,
    "rotation": rotation,
    "outage": outage,
}


async def run(args: argparse.Namespace) -> None:
    chosen = args.only or list(SCENARIOS)
    lines = ["| figure | measured | expected |", "| --- | --- | --- |"]
    for name in chosen:
        print(f"{name} ...", flush=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"tokenbroker-{name}-") as tmp:
            rows = await SCENARIOS[name](args, Path(tmp))
        lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
        print(f"  {name}: {time.monotonic() - started:.0f} s", flush=True)
    command = " ".join(["python", "bench/reliability.py", *sys.argv[1:]])
    print(f"\n`{command}`, {time.strftime('%Y-%m-%d')}\n\n" + "\n".join(lines))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        asyncio.run(worker(*sys.argv[2:5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=list(SCENARIOS))
    parser.add_argument("--trials", type=int, default=20, help="single-flight trials")
    parser.add_argument("--provider-rtt", type=float, default=0.1, help="token endpoint, seconds")
    parser.add_argument("--kills", type=int, default=1000, help="SIGKILLs per provider kind")
    parser.add_argument("--parallel", type=int, default=8, help="broker processes killed at once")
    parser.add_argument("--idor", type=int, default=10_000, help="IDOR probes sent")
    parser.add_argument("--rows", type=int, default=100_000, help="sealed values to rewrap")
    parser.add_argument(
        "--outage-seconds", type=float, default=600, help="how long the token endpoint is down"
    )
    parser.add_argument(
        "--outage-kind", choices=["503", "hang"], default="503", help="how it is down"
    )
    os.environ.setdefault("TOKENBROKER_REQUIRE_SERVICES", "1")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
