"""Gateway benchmark: the ``/proxy/`` path against a direct call, nginx and a bare aiohttp proxy.

Run by hand (never in tests) from the repository root, on an otherwise idle machine:

    .venv/bin/python bench/gateway.py [--rounds 3] [--duration 10] [--json results.json]

Needs ``nginx``, ``wrk`` and ``taskset`` (``apt-get install -y nginx wrk``) and two cores.
Everything listens on 127.0.0.1 and lives in a temporary directory.

Layout: the proxy under test (nginx, the bare aiohttp proxy or ``tokenbroker serve`` with one
worker) runs alone on core 0; the load generator (wrk), the upstream API and the DEMO OAuth
provider share core 1. Each target runs only while it is measured: warm-up, then
``wrk -c32`` (throughput, CPU per request from /proc, p50/p99), then ``wrk -c1`` (p50).

All four answer the same URL shape, ``/proxy/demo/files``, with the upstream's ~180-byte JSON:

- direct: wrk calls the upstream itself (CPU is the upstream's, on core 1);
- nginx: ``proxy_pass`` with a keep-alive upstream block, replacing Authorization;
- bare aiohttp: ``bench/bare_proxy.py``, the Python ceiling (only swaps Authorization);
- bare, gateway's client: the same 40 lines forwarding through the gateway's own HTTP/1.1
  client (``tokenbroker.gateway.upstream``) instead of aiohttp's (for reference: the ratios
  are against bare aiohttp, the baseline the gateway issue names);
- gateway: alice connected through the DEMO provider (auto-approve), an agent granted
  ``files:read``, an agent session token; audit on with its writer process (the default),
  audit on with ``[audit] writer = "inline"`` (everything in the worker), audit off.

The gateway's audit writer process is moved to ``--writer-core`` (default: core 1, with the
load): the worker keeps core 0 to itself, and the writer's CPU time is counted in the row's
CPU per request (and shown apart in "of which writer"). ``--rounds N`` measures every target
N times in turn and reports medians: runs on a shared virtual machine drift by 10-30%.

The gateway's time per stage comes from ``GET /_gateway/stages`` (admin key; ``DELETE`` resets
it before each run); "n/a" where the broker lacks it or the audit switch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from tokenbroker.db.engine import async_url

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from upstream import BODY  # noqa: E402  (bench/upstream.py: the answer every target returns)

TARGET_CORE = "0"
LOAD_CORE = "1"
ADMIN_KEY = "bench-admin-key-0123456789abcdefghijklmnopqrstuvwxyz"
CLIENT_SECRET = "bench-client-secret"
# What nginx and the bare proxy inject, and what a direct call presents (nothing checks it).
USER_TOKEN = "bench-user-access-token-0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
PROXY_PATH = "/proxy/demo/files"
STAGES = ("session", "decision", "unseal", "forward", "audit")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Targets of the gateway issue: (description, measured value key, comparison, bound).
THROUGHPUT_MIN = 0.75  # gateway rps / bare rps
CPU_MAX = 1.35  # gateway CPU per request / bare CPU per request
P50_C1_EXTRA_MAX_MS = 0.35  # gateway p50 at c=1 minus nginx p50 at c=1
AUDIT_MIN = 0.90  # gateway rps audit on / audit off


class BenchError(Exception):
    """A step failed; the message says which and where its log is."""


# --- processes -------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Every server the benchmark starts; each in its own process group, stopped by its id."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._running: list[Proc] = []

    def start(
        self, name: str, argv: Sequence[str], *, core: str, env: dict[str, str] | None = None
    ) -> Proc:
        log = self._logs / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                ["taskset", "-c", core, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self._running.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        if proc in self._running:
            self._running.remove(proc)
        if proc.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait(timeout=5)

    def stop_all(self) -> None:
        for proc in reversed(list(self._running)):
            self.stop(proc)


def wait_for_port(proc: Proc, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise BenchError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise BenchError(f"{proc.name} did not listen on {port} within {timeout:.0f}s:\n{proc.tail()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU time of ``pid`` and of its live descendants (all threads; the
    gateway's audit writer process), from /proc."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # fields[0] is field 3 (state) of proc(5)
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime + stime
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        family.update(children)
        frontier.extend(children)
    own = ticks.get(pid, 0)
    return own / CLK_TCK, (sum(ticks.get(member, 0) for member in family) - own) / CLK_TCK


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


# --- load generation -------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx/3xx answers plus socket errors


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise BenchError(f"cannot parse wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchError(f"unexpected wrk output (no {pattern!r}):\n{output}")
        return match

    done = find(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors is not None:
        errors += sum(int(n) for n in socket_errors.groups())
    return WrkResult(
        rps=float(find(r"^Requests/sec:\s+([\d.]+)").group(1)),
        requests=int(done.group(1)),
        seconds=_ms(done.group(2) + done.group(3)) / 1000,
        p50_ms=_ms(find(r"^\s+50%\s+(\S+)").group(1)),
        p99_ms=_ms(find(r"^\s+99%\s+(\S+)").group(1)),
        errors=errors,
    )


def wrk(url: str, token: str, *, connections: int, seconds: int) -> WrkResult:
    argv = [
        "taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
        "--latency", "--timeout", "5s", "-H", f"Authorization: Bearer {token}", url,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


# --- HTTP helpers ----------------------------------------------------------------------------


def http(method: str, url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def check_answer(name: str, url: str, token: str) -> None:
    status, body = http("GET", url, token)
    if status != 200 or body != BODY:
        raise BenchError(f"{name}: GET {url} answered {status}: {body[:500]!r}")


# --- the broker ------------------------------------------------------------------------------


@dataclass
class Ports:
    upstream: int = field(default_factory=free_port)
    provider: int = field(default_factory=free_port)
    broker: int = field(default_factory=free_port)
    nginx: int = field(default_factory=free_port)
    bare: int = field(default_factory=free_port)


# How the gateway rows run: the audit written by a writer process (the default), by the
# worker itself, or not at all.
AUDIT_VARIANTS = {
    "process": '[audit]\nwriter = "process"\n',
    "inline": '[audit]\nwriter = "inline"\n',
    "off": "[audit]\nenabled = false\n",
}


def broker_config(ports: Ports, *, audit: str) -> str:
    return f"""\
public_url = "http://127.0.0.1:{ports.broker}"
database_url = "sqlite:///bench.db"
key_file = "tokenbroker.keys"

[server]
host = "127.0.0.1"
port = {ports.broker}

[admin]
key_env = "TB_ADMIN"

[connect]
require_verification = false

[gateway]
session_ttl_max_seconds = 86400
user_rate_per_second = 1000000
user_burst = 1000000
agent_rate_per_second = 1000000
agent_burst = 1000000

{AUDIT_VARIANTS[audit]}
[providers.demo]
issuer = "http://127.0.0.1:{ports.provider}"
client_id = "broker"
client_secret_env = "TB_DEMO_SECRET"
scopes = ["openid", "offline_access", "files:read"]
api_base_url = "http://127.0.0.1:{ports.upstream}"
allow_insecure_loopback = true

[[providers.demo.operations]]
name = "files.list"
method = "GET"
path = "/files"
scopes = ["files:read"]
"""


def tokenbroker_argv(config: Path, *command: str) -> list[str]:
    script = Path(sys.executable).with_name("tokenbroker")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "tokenbroker.cli"]
    return [*base, "--log-level", "WARNING", "--config", str(config), *command]


def broker_env(database_url: str | None) -> dict[str, str]:
    env = {**os.environ, "TB_ADMIN": ADMIN_KEY, "TB_DEMO_SECRET": CLIENT_SECRET}
    env.pop("TOKENBROKER_CONFIG", None)
    if database_url:
        env["TOKENBROKER_DATABASE_URL"] = database_url
    return env


def audit_switch_supported(config: Path) -> str | None:
    """None when the config with ``[audit] enabled = false`` loads; else why not."""
    from tokenbroker.config import load_settings
    from tokenbroker.errors import TokenBrokerError

    try:
        settings = load_settings(config, broker_env(None))
    except TokenBrokerError as exc:
        return str(exc.message)
    audit = getattr(settings, "audit", None)
    if audit is None or getattr(audit, "enabled", True):
        return "the settings have no [audit] enabled switch"
    return None


async def connect_alice(ports: Ports) -> str:
    """Connect alice (auto-approved by the DEMO provider), register and grant an agent, and
    return an agent session token for the gateway."""
    broker = f"http://127.0.0.1:{ports.broker}"
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as client:

        async def call(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with client.request(method, broker + path, json=body, headers=admin) as answer:
                doc = await answer.json(content_type=None)
                if answer.status not in (200, 201):
                    raise BenchError(f"{method} {path} answered {answer.status}: {doc}")
                return dict(doc)

        async def hop(url: str) -> str:
            async with client.get(url, allow_redirects=False) as answer:
                text = await answer.text()
                if answer.status not in (302, 303):
                    raise BenchError(f"GET {url} answered {answer.status}: {text[:500]}")
                return answer.headers["Location"]

        behaviour = f"http://127.0.0.1:{ports.provider}/_demo/behaviour"
        async with client.post(behaviour, json={"auto_approve_user": "alice"}) as answer:
            answer.raise_for_status()
        link = await call(
            "POST",
            "/v1/connect-sessions",
            {"user_id": "alice", "provider": "demo", "scopes": ["files:read"]},
        )
        to_provider = await hop(link["authorization_url"])
        to_callback = await hop(to_provider)
        async with client.get(to_callback, allow_redirects=False) as answer:
            text = await answer.text()  # "Connected" (or a redirect to the return page)
            if answer.status not in (200, 302, 303):
                raise BenchError(f"the OAuth callback answered {answer.status}: {text[:500]}")
        agent = await call("POST", "/v1/agents", {"name": "bench"})
        await call(
            "POST",
            "/v1/grants",
            {"user_id": "alice", "agent_id": agent["id"], "provider": "demo",
             "scopes": ["files:read"]},
        )  # fmt: skip
        session = await call(
            "POST",
            "/v1/agent-sessions",
            {"user_id": "alice", "agent_id": agent["id"], "expires_in": 86400},
        )
        return str(session["token"])


def gateway_stages(ports: Ports, method: str) -> dict[str, Any] | None:
    """``/_gateway/stages`` (admin key; DELETE resets): None when the broker has no such
    endpoint."""
    try:
        status, body = http(method, f"http://127.0.0.1:{ports.broker}/_gateway/stages", ADMIN_KEY)
    except OSError:
        return None
    if status != 200:
        return None
    doc = json.loads(body)
    return dict(doc) if isinstance(doc, dict) else None


# --- nginx -----------------------------------------------------------------------------------


def nginx_temp_paths(tmp: Path, name: str) -> str:
    return "\n".join(
        f"  {kind}_temp_path {tmp / f'{name}-{kind}'};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


NGINX_HEAD = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
{temp_paths}
"""


def nginx_upstream_config(tmp: Path, port: int) -> str:
    body = BODY.decode().replace("\\", "\\\\").replace("'", "\\'")
    head = NGINX_HEAD.format(tmp=tmp, name="upstream", temp_paths=nginx_temp_paths(tmp, "upstream"))
    return f"""{head}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type application/json;
      return 200 '{body}';
    }}
  }}
}}
"""


def nginx_proxy_config(tmp: Path, port: int, upstream: int) -> str:
    head = NGINX_HEAD.format(tmp=tmp, name="proxy", temp_paths=nginx_temp_paths(tmp, "proxy"))
    return f"""{head}
  upstream api {{
    server 127.0.0.1:{upstream};
    keepalive 64;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location /proxy/demo/ {{
      proxy_pass http://api/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer {USER_TOKEN}";
    }}
  }}
}}
"""


def start_nginx(procs: Processes, tmp: Path, name: str, config: str, core: str) -> Proc:
    path = tmp / f"{name}.conf"
    path.write_text(config, encoding="utf-8")
    argv = ["nginx", "-p", str(tmp), "-c", str(path), "-e", str(tmp / f"{name}.error.log")]
    return procs.start(name, argv, core=core)


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    rps: float = 0.0
    cpu_us: float = 0.0  # CPU time of the measured process and its children per request
    child_cpu_us: float = 0.0  # of which its children's (the gateway's audit writer process)
    busy: float = 0.0  # the process's own CPU time / wall time (1.0 = one core)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    p50_c1_ms: float = 0.0
    errors: int = 0
    # run ("c=32", "c=1") -> stage -> microseconds per request (and "requests": the count)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    stages_note: str = ""
    skipped: str = ""


@dataclass
class Options:
    connections: int
    duration: int
    warmup: int
    c1_duration: int


SETTLE_SECONDS = 1.0  # pause between runs: the target finishes closing the last connections


def measure(
    name: str, url: str, token: str, cpu_pid: int, opts: Options, ports: Ports | None = None
) -> Row:
    """Warm up, run wrk at ``opts.connections`` reading the process's CPU, then at c=1.
    ``ports`` set: the target is the gateway, whose stage timings are reset and read per run."""

    def run(connections: int, seconds: int, what: str) -> WrkResult:
        print(f"  {name}: {what}, c={connections} for {seconds}s ...", flush=True)
        time.sleep(SETTLE_SECONDS)
        if ports is not None and gateway_stages(ports, "DELETE") is None:
            row.stages_note = "n/a (no /_gateway/stages endpoint)"
        return wrk(url, token, connections=connections, seconds=seconds)

    row = Row(name=name)
    run(opts.connections, opts.warmup, "warm-up")
    (own0, kids0), wall0 = cpu_seconds(cpu_pid), time.monotonic()
    loaded = run(opts.connections, opts.duration, "loaded")
    own1, kids1 = cpu_seconds(cpu_pid)
    wall = time.monotonic() - wall0 - SETTLE_SECONDS
    row.rps, row.p50_ms, row.p99_ms = loaded.rps, loaded.p50_ms, loaded.p99_ms
    requests = max(loaded.requests, 1)
    row.cpu_us = (own1 - own0 + kids1 - kids0) / requests * 1e6
    row.child_cpu_us = (kids1 - kids0) / requests * 1e6
    row.busy = (own1 - own0) / wall
    row.errors = loaded.errors
    if ports is not None:
        read_stages(ports, row, f"c={opts.connections}")
    single = run(1, opts.c1_duration, "latency")
    row.p50_c1_ms = single.p50_ms
    row.errors += single.errors
    if ports is not None:
        read_stages(ports, row, "c=1")
    return row


def read_stages(ports: Ports, row: Row, label: str) -> None:
    """Store the gateway's microseconds per request and stage for the run just done."""
    doc = gateway_stages(ports, "GET")
    if doc is None:
        row.stages_note = "n/a (no /_gateway/stages endpoint)"
        return
    values = doc.get("us")
    if not isinstance(values, dict):
        row.stages_note = f"n/a (unexpected answer {doc})"
        return
    row.stages[label] = {str(k): float(v) for k, v in values.items()}
    row.stages[label]["requests"] = float(doc.get("requests", 0))


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    tmp: Path
    procs: Processes
    ports: Ports = field(default_factory=Ports)
    agent_token: str = ""
    upstream: Proc | None = None

    @property
    def opts(self) -> Options:
        a = self.args
        return Options(a.connections, a.duration, a.warmup, a.c1_duration)

    def config(self, audit: str) -> Path:
        return self.tmp / f"tokenbroker-audit-{audit}.toml"

    def prepare(self) -> None:
        from tokenbroker.vault.keyring import create_key_file

        up = self.ports.upstream
        if self.args.upstream == "nginx":
            proc = start_nginx(
                self.procs, self.tmp, "upstream", nginx_upstream_config(self.tmp, up), LOAD_CORE
            )
        else:
            argv = [sys.executable, str(BENCH_DIR / "upstream.py"), "--port", str(up)]
            proc = self.procs.start("upstream", argv, core=LOAD_CORE)
        wait_for_port(proc, up)
        self.upstream = proc
        check_answer("upstream", f"http://127.0.0.1:{up}/files", USER_TOKEN)

        p = self.ports
        provider = self.procs.start(
            "provider",
            [
                sys.executable, "-m", "tokenbroker.demo.provider", "--port", str(p.provider),
                "--client-id", "broker", "--client-secret", CLIENT_SECRET,
                "--redirect-uri", f"http://127.0.0.1:{p.broker}/oauth/callback/demo",
                "--access-token-ttl", "86400",
            ],
            core=LOAD_CORE,
        )  # fmt: skip
        wait_for_port(provider, p.provider)

        for audit in AUDIT_VARIANTS:
            self.config(audit).write_text(broker_config(p, audit=audit), encoding="utf-8")
        create_key_file(self.tmp / "tokenbroker.keys")
        env = broker_env(self.args.database_url)
        migrate = subprocess.run(
            tokenbroker_argv(self.config("process"), "migrate"),
            env=env,
            capture_output=True,
            text=True,
        )
        if migrate.returncode != 0:
            raise BenchError(f"tokenbroker migrate failed:\n{migrate.stdout}{migrate.stderr}")

        broker = self.start_gateway(audit="process")
        try:
            self.agent_token = asyncio.run(connect_alice(p))
            check_answer("gateway", self.gateway_url, self.agent_token)
        finally:
            self.procs.stop(broker)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.broker}{PROXY_PATH}"

    def start_gateway(self, *, audit: str) -> Proc:
        """``tokenbroker serve`` with one worker on the target core; its audit writer process
        (``audit = "process"``) is moved to ``--writer-core``: the worker stays on one core,
        the audit's CPU is counted in the row (CPU per request includes it)."""
        argv = tokenbroker_argv(self.config(audit), "serve", "--workers", "1")
        proc = self.procs.start(
            f"gateway-audit-{audit}", argv, core=TARGET_CORE, env=broker_env(self.args.database_url)
        )
        wait_for_port(proc, self.ports.broker)
        for child in children(proc.pid):
            os.sched_setaffinity(child, {int(self.args.writer_core)})
        return proc

    def target(self, name: str, start: Callable[[], Proc], url: str, token: str) -> Row:
        proc = start()
        try:
            check_answer(name, url, token)
            gateway = name.startswith("gateway")
            return measure(name, url, token, proc.pid, self.opts, self.ports if gateway else None)
        finally:
            self.procs.stop(proc)

    def rows(self) -> list[Row]:
        """Every target, ``--rounds`` times in turn (so slow drift on a shared machine hits
        every target alike); each row is the median of its rounds."""
        p, tmp = self.ports, self.tmp
        assert self.upstream is not None
        upstream = self.upstream

        def direct() -> Row:
            url = f"http://127.0.0.1:{p.upstream}/files"
            return measure("direct", url, USER_TOKEN, upstream.pid, self.opts)

        def nginx() -> Proc:
            config = nginx_proxy_config(tmp, p.nginx, p.upstream)
            proc = start_nginx(self.procs, tmp, "proxy", config, TARGET_CORE)
            wait_for_port(proc, p.nginx)
            return proc

        def bare(client: str) -> Callable[[], Proc]:
            def start() -> Proc:
                argv = [
                    sys.executable, str(BENCH_DIR / "bare_proxy.py"), "--port", str(p.bare),
                    "--upstream", f"http://127.0.0.1:{p.upstream}", "--token", USER_TOKEN,
                    "--client", client,
                ]  # fmt: skip
                proc = self.procs.start(f"bare-{client}", argv, core=TARGET_CORE)
                wait_for_port(proc, p.bare)
                return proc

            return start

        def proxied(name: str, start: Callable[[], Proc], url: str, token: str) -> Measure:
            return lambda: self.target(name, start, url, token)

        def gateway(name: str, audit: str) -> Measure:
            return proxied(
                name, lambda: self.start_gateway(audit=audit), self.gateway_url, self.agent_token
            )

        bare_url = f"http://127.0.0.1:{p.bare}{PROXY_PATH}"
        targets: dict[str, Measure] = {
            "direct": direct,
            "nginx": proxied("nginx", nginx, f"http://127.0.0.1:{p.nginx}{PROXY_PATH}", "x"),
            "bare aiohttp": proxied("bare aiohttp", bare("aiohttp"), bare_url, "x"),
            "bare, gateway's client": proxied(
                "bare, gateway's client", bare("gateway"), bare_url, "x"
            ),
            "gateway": gateway("gateway", "process"),
            "gateway inline writer": gateway("gateway inline writer", "inline"),
        }
        why_not = audit_switch_supported(self.config("off"))
        if why_not is None:
            targets["gateway audit off"] = gateway("gateway audit off", "off")
        chosen = [n for n in targets if not self.args.only or n in self.args.only]
        measured: dict[str, list[Row]] = {name: [] for name in chosen}
        for turn in range(self.args.rounds):
            if self.args.rounds > 1:
                print(f"round {turn + 1} of {self.args.rounds}", flush=True)
            for name in chosen:
                measured[name].append(targets[name]())
        rows = [median_row(measured[name]) for name in chosen]
        if why_not is not None:
            rows.append(Row("gateway audit off", skipped=f"n/a ({why_not})"))
        return rows


Measure = Callable[[], "Row"]


def median_row(rounds: Sequence[Row]) -> Row:
    """Each number the median of its rounds (stage timings: those of the median-rps round)."""
    if len(rounds) == 1:
        return rounds[0]

    def mid(of: Callable[[Row], float]) -> float:
        return float(statistics.median(of(r) for r in rounds))

    by_rps = sorted(rounds, key=lambda r: r.rps)[len(rounds) // 2]
    return Row(
        name=rounds[0].name,
        rps=mid(lambda r: r.rps),
        cpu_us=mid(lambda r: r.cpu_us),
        child_cpu_us=mid(lambda r: r.child_cpu_us),
        busy=mid(lambda r: r.busy),
        p50_ms=mid(lambda r: r.p50_ms),
        p99_ms=mid(lambda r: r.p99_ms),
        p50_c1_ms=mid(lambda r: r.p50_c1_ms),
        errors=sum(r.errors for r in rounds),
        stages=by_rps.stages,
        stages_note=by_rps.stages_note,
    )


# --- report ----------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    value: float | None
    bound: str
    passed: bool | None

    @property
    def verdict(self) -> str:
        return "n/a" if self.passed is None else ("PASS" if self.passed else "MISS")


def checks(rows: Sequence[Row]) -> list[Check]:
    """The issue's targets, each measured in this run (n/a when a row is missing)."""
    by = {row.name: row for row in rows if not row.skipped}

    def value(a: str, b: str, of: Callable[[Row], float], diff: bool = False) -> float | None:
        if a not in by or b not in by:
            return None
        x, y = of(by[a]), of(by[b])
        return x - y if diff else (x / y if y else None)

    throughput = value("gateway", "bare aiohttp", lambda r: r.rps)
    cpu = value("gateway", "bare aiohttp", lambda r: r.cpu_us)
    p50 = value("gateway", "nginx", lambda r: r.p50_c1_ms, diff=True)
    audit = value("gateway", "gateway audit off", lambda r: r.rps)

    def at_least(v: float | None, bound: float) -> bool | None:
        return None if v is None else v >= bound

    def at_most(v: float | None, bound: float) -> bool | None:
        return None if v is None else v <= bound

    return [
        Check(
            "throughput gateway / bare aiohttp",
            throughput,
            f">= {THROUGHPUT_MIN}",
            at_least(throughput, THROUGHPUT_MIN),
        ),
        Check(
            "CPU per request gateway / bare aiohttp", cpu, f"<= {CPU_MAX}", at_most(cpu, CPU_MAX)
        ),
        Check(
            "p50 at c=1 gateway - nginx (ms)",
            p50,
            f"<= {P50_C1_EXTRA_MAX_MS}",
            at_most(p50, P50_C1_EXTRA_MAX_MS),
        ),
        Check(
            "throughput gateway audit on / off",
            audit,
            f">= {AUDIT_MIN}",
            at_least(audit, AUDIT_MIN),
        ),
    ]


def table(rows: Sequence[Row], connections: int) -> list[list[str]]:
    lines = [
        [
            "target",
            "req/s",
            "CPU us/req",
            "of which writer",
            "CPU busy",
            f"p50 ms c={connections}",
            f"p99 ms c={connections}",
            "p50 ms c=1",
            "errors",
        ]
    ]
    for row in rows:
        if row.skipped:
            lines.append([row.name, row.skipped, "", "", "", "", "", "", ""])
            continue
        lines.append(
            [
                row.name,
                f"{row.rps:,.0f}",
                f"{row.cpu_us:.0f}",
                f"{row.child_cpu_us:.0f}" if row.child_cpu_us >= 0.5 else "-",
                f"{row.busy:.0%}",
                f"{row.p50_ms:.3f}",
                f"{row.p99_ms:.3f}",
                f"{row.p50_c1_ms:.3f}",
                str(row.errors),
            ]
        )
    return lines


def check_lines(found: Sequence[Check]) -> list[list[str]]:
    lines = [["target", "measured", "bound", "verdict"]]
    for check in found:
        value = "n/a" if check.value is None else f"{check.value:.2f}"
        lines.append([check.name, value, check.bound, check.verdict])
    return lines


def stage_text(row: Row) -> list[str]:
    if row.skipped:
        return [row.skipped]
    if not row.stages:
        return [row.stages_note or "n/a"]
    lines = []
    for label, values in row.stages.items():
        timings = {k: v for k, v in values.items() if k != "requests"}
        order = [s for s in STAGES if s in timings] + [s for s in timings if s not in STAGES]
        parts = ", ".join(f"{stage} {timings[stage]:.0f}" for stage in order)
        total = sum(timings.values())
        lines.append(f"{label}: {parts}; sum {total:.0f} ({values['requests']:.0f} requests)")
    return lines


def render_text(lines: Sequence[Sequence[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for n, line in enumerate(lines):
        cells = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def render_markdown(lines: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(lines[0]) + " |", "|" + " --- |" * len(lines[0])]
    out += ["| " + " | ".join(cell or " " for cell in line) + " |" for line in lines[1:]]
    return "\n".join(out)


def describe(args: argparse.Namespace) -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=BENCH_DIR,
        check=False,
    ).stdout.strip()
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "bench/gateway.py", *sys.argv[1:]]),
        "commit": commit or None,
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "nginx": nginx.stderr.strip().removeprefix("nginx version: "),
        "load": f"wrk -t1 -c{args.connections} -d{args.duration}s (warm-up {args.warmup}s), "
        f"wrk -t1 -c1 -d{args.c1_duration}s, on core {LOAD_CORE}"
        + (f"; median of {args.rounds} rounds" if args.rounds > 1 else ""),
        "layout": f"target on core {TARGET_CORE}; wrk, upstream ({args.upstream}), DEMO "
        f"provider and the gateway's audit writer process on core {LOAD_CORE}"
        if args.writer_core == LOAD_CORE
        else f"target and the gateway's audit writer process on core {TARGET_CORE}; wrk, "
        f"upstream ({args.upstream}) and DEMO provider on core {LOAD_CORE}",
        "database": getattr(args, "database_note", None) or args.database_url or "sqlite",
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


STAGES_TITLE = (
    "gateway time per stage, microseconds per request (wall time: at c>1 it includes waiting "
    "for the event loop)"
)


def report(rows: Sequence[Row], args: argparse.Namespace) -> dict[str, Any]:
    meta = describe(args)
    found = checks(rows)
    grid, verdicts = table(rows, args.connections), check_lines(found)
    stages = {row.name: stage_text(row) for row in rows if row.name.startswith("gateway")}
    print()
    print(f"tokenbroker gateway benchmark, {meta['date']}, commit {meta['commit']}")
    print(f"{meta['cpu']}, {meta['cores']} cores; {meta['layout']}")
    print(f"load: {meta['load']}")
    print(f"python {meta['python']}, aiohttp {meta['aiohttp']}, {meta['nginx']}")
    print(f"database: {meta['database']}")
    print()
    print(render_text(grid))
    print()
    print(STAGES_TITLE + ":")
    for name, lines in stages.items():
        print(f"  {name}:")
        for line in lines:
            print(f"    {line}")
    print()
    print(render_text(verdicts))
    if args.markdown:
        text = "\n\n".join(
            [
                f"`{meta['command']}` on {meta['cpu']} ({meta['cores']} cores), "
                f"{meta['date']}, commit {meta['commit']}; {meta['layout']}; {meta['load']}.",
                render_markdown(grid),
                STAGES_TITLE
                + ":\n\n"
                + "\n".join(f"- {name}: " + "; ".join(lines) for name, lines in stages.items()),
                render_markdown(verdicts),
            ]
        )
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    return {
        "meta": meta,
        "rows": [asdict(row) for row in rows],
        "checks": [{**asdict(check), "verdict": check.verdict} for check in found],
    }


# --- entry point -----------------------------------------------------------------------------


def missing_tools() -> list[str]:
    problems = [
        f"{tool} not found: apt-get install -y {package}"
        for tool, package in (("nginx", "nginx"), ("wrk", "wrk"), ("taskset", "util-linux"))
        if shutil.which(tool) is None
    ]
    if len(os.sched_getaffinity(0)) < 2:
        problems.append("needs two usable cores (target on core 0, load on core 1)")
    return problems


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the gateway against a direct call, nginx and a bare aiohttp proxy."
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per loaded run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per target")
    parser.add_argument("--c1-duration", type=int, default=5, help="seconds of the c=1 run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--upstream",
        choices=("nginx", "aiohttp"),
        default="nginx",
        help="what answers the proxies: nginx `return 200` (default, cheapest) or "
        "bench/upstream.py",
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server and base name: the run creates a database of its own there and "
        "drops it after (default: SQLite in the temporary directory)",
    )
    parser.add_argument(
        "--writer-core",
        default=LOAD_CORE,
        help=f"core of the gateway's audit writer process (default {LOAD_CORE}, with the load)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every target this many times in turn"
    )
    parser.add_argument(
        "--only", action="append", metavar="TARGET", help="measure only this target (repeatable)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="also write README-ready tables")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args(argv)


@contextlib.contextmanager
def fresh_postgres_database(database_url: str | None) -> Iterator[str | None]:
    """For a PostgreSQL ``--database-url``: a database of the run's own on that server, named
    after the one given with a random suffix, dropped after the run (each run has a key file of
    its own, which a database left by another run would not match; an existing database is
    never touched). Anything else is yielded as it is."""
    if not database_url or not database_url.startswith(("postgresql", "postgres")):
        yield database_url
        return
    url = make_url(async_url(database_url))
    if not url.database:
        raise BenchError("--database-url must name a database")
    name = f"{url.database}_{secrets.token_hex(4)}"

    async def run(statement: str) -> None:
        server = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            async with server.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await server.dispose()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def database_on_load_core(database_url: str | None) -> Iterator[str]:
    """A PostgreSQL server on this machine runs on the load core while measuring, as it would
    on its own machine in production (otherwise the scheduler puts its backends on the
    target's core and the gateway's throughput measures the database too). Restored after.
    Yields a note for the report."""
    if not database_url or not database_url.startswith(("postgresql", "postgres")):
        yield "sqlite (temporary directory)"
        return
    found = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True)
    pids = [int(pid) for pid in found.stdout.split()]
    saved: dict[int, set[int]] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            saved[pid] = os.sched_getaffinity(pid)
            os.sched_setaffinity(pid, {int(LOAD_CORE)})
    try:
        where = f"core {LOAD_CORE}" if saved else "not pinned (no local postgres processes)"
        yield f"postgresql (server processes on {where})"
    finally:
        for pid, cores in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, cores)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    problems = missing_tools()
    if problems:
        print("cannot run the benchmark:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="tokenbroker-bench-"))
    procs = Processes(tmp)
    try:
        with (
            stop_on_sigterm(),
            fresh_postgres_database(args.database_url) as database_url,
            database_on_load_core(database_url) as database,
        ):
            args.database_url, args.database_note = database_url, database
            run = Run(args, tmp, procs)
            print(f"setting up in {tmp} ...", flush=True)
            run.prepare()
            rows = run.rows()
            results = report(rows, args)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        return 0
    except BenchError as exc:
        print(f"benchmark failed: {exc}\n(logs in {tmp})", file=sys.stderr)
        args.keep = True
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
