"""JSON logs with redaction, Prometheus metrics at /metrics, and /readyz."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from agents import GATEWAY_CONFIG, proxy, ready
from click.testing import CliRunner
from harness import Harness, free_port, running
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.cli import cli
from tokenbroker.db.engine import create_engine
from tokenbroker.errors import (
    KeyError_,
    NeedsReauth,
    ProviderMisconfigured,
    RefreshUnavailable,
)
from tokenbroker.observability.logging import (
    JsonFormatter,
    TextFormatter,
    configure_logging,
    request_id_var,
)
from tokenbroker.observability.metrics import Metrics, refresh_result
from tokenbroker.observability.redaction import MASK, redact
from tokenbroker.vault.keyring import KeyRing

SAMPLE = re.compile(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$")


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Whatever a test configures on the root logger is undone afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# --- logs ------------------------------------------------------------------------------------
def test_json_lines_carry_time_level_logger_message_request_id_and_extras(
    root_logging: None,
) -> None:
    out = io.StringIO()
    configure_logging("DEBUG", "json", to=out)
    log = logging.getLogger("tokenbroker.test")
    log.info("plain %s", "message")
    token = request_id_var.set("req-42")
    try:
        log.warning("with a request", extra={"provider": "acme", "status": 502})
    finally:
        request_id_var.reset(token)
    first, second = _lines(out)
    assert first["level"] == "INFO"
    assert first["logger"] == "tokenbroker.test"
    assert first["message"] == "plain message"
    assert "request_id" not in first
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(first["time"]))
    assert second["level"] == "WARNING"
    assert second["request_id"] == "req-42"
    assert second["provider"] == "acme"
    assert second["status"] == 502


def test_exceptions_are_an_error_field_and_are_redacted(root_logging: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", to=out)
    try:
        raise ValueError("upstream said access_token=sekrit-value")
    except ValueError:
        logging.getLogger("tokenbroker.test").exception("it failed")
    (line,) = _lines(out)
    error = line["error"]
    assert isinstance(error, dict)
    assert error["type"] == "ValueError"
    assert error["message"] == f"upstream said access_token={MASK}"
    assert "sekrit-value" not in out.getvalue()


def test_messages_arguments_and_extras_are_redacted_before_formatting(root_logging: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", to=out)
    log = logging.getLogger("tokenbroker.test")
    log.info("agent presented %s", "Bearer abc.def-123")
    log.info("session %s and key %s", "tbs.Zm9vYmFy_-x", "tba.key-material")
    log.info("callback", extra={"query": "code=the-code&state=s", "doc": {"t": "tbt.ticket"}})
    text = out.getvalue()
    for secret in ("abc.def-123", "Zm9vYmFy_-x", "key-material", "the-code", "tbt.ticket"):
        assert secret not in text
    first, second, third = _lines(out)
    assert first["message"] == f"agent presented Bearer {MASK}"
    assert second["message"] == f"session tbs.{MASK} and key tba.{MASK}"
    assert third["query"] == f"code={MASK}&state=s"


def test_text_format_is_redacted_too(root_logging: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", "text", to=out)
    logging.getLogger("tokenbroker.test").info("refresh_token=rt-123 sent")
    assert "rt-123" not in out.getvalue()
    assert f"refresh_token={MASK} sent" in out.getvalue()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Authorization: Bearer abc", f"Authorization: {MASK}"),
        ("Bearer abc", f"Bearer {MASK}"),
        ("token tbs.xxx here", f"token tbs.{MASK} here"),
        ("tba.k-1 and tbt.t_2", f"tba.{MASK} and tbt.{MASK}"),
        ("access_token=xyz&x=1", f"access_token={MASK}&x=1"),
        (
            "grant_type=refresh_token&refresh_token=r1",
            f"grant_type=refresh_token&refresh_token={MASK}",
        ),
        ("?code=c0de&state=s", f"?code={MASK}&state=s"),
        ("client_secret=shh", f"client_secret={MASK}"),
        ('{"access_token": "xyz", "n": 1}', f'{{"access_token": "{MASK}", "n": 1}}'),
        ("{'refresh_token': 'r'}", f"{{'refresh_token': '{MASK}'}}"),
        ("Cookie: a=1; b=2", f"Cookie: {MASK}"),
        ("error_code=invalid_grant", "error_code=invalid_grant"),
        ("refresh of conn_1 failed (timeout); tokens kept", None),
    ],
)
def test_redaction_shapes(raw: str, expected: str | None) -> None:
    assert redact(raw) == (raw if expected is None else expected)
    assert redact(redact(raw)) == redact(raw)


def test_cli_logs_json_by_default_and_text_on_request(
    root_logging: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    root.handlers[:] = []  # as in a fresh process (pytest's own handlers make the CLI step back)

    def installed() -> logging.Handler:
        (handler,) = root.handlers
        assert getattr(handler, "_tokenbroker_handler", False)
        return handler

    assert CliRunner().invoke(cli, ["init", "--dir", str(tmp_path / "a")]).exit_code == 0
    handler = installed()
    assert isinstance(handler.formatter, JsonFormatter)
    assert getattr(handler, "_name", None) == "stderr"  # a one-shot command keeps stdout clean
    monkeypatch.setenv("TOKENBROKER_LOG_FORMAT", "text")
    assert CliRunner().invoke(cli, ["init", "--dir", str(tmp_path / "b")]).exit_code == 0
    assert isinstance(installed().formatter, TextFormatter)
    assert logging.getLogger("aiohttp.access").getEffectiveLevel() >= logging.WARNING


def test_logging_steps_back_for_an_embedding_application_unless_forced(
    root_logging: None,
) -> None:
    foreign = logging.NullHandler()
    logging.getLogger().addHandler(foreign)
    assert configure_logging("INFO", "json", force=False) is None
    handler = configure_logging("INFO", "json")
    assert handler is not None
    assert handler in logging.getLogger().handlers
    assert foreign in logging.getLogger().handlers
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging("INFO", "xml")  # type: ignore[arg-type]


# --- metrics ---------------------------------------------------------------------------------
def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, line
        name, labels, value = match.groups()
        pairs = frozenset(re.findall(r'([a-z_]+)="([^"]*)"', labels or ""))
        found[(name, pairs)] = float(value)
    return found


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _scrape(h: Harness) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    async with aiohttp.ClientSession() as http, http.get(h.public_url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    return text, _samples(text)


def test_refresh_results_are_classified_by_how_the_refresh_ended() -> None:
    assert refresh_result(None) == "ok"
    assert refresh_result(NeedsReauth("gone")) == "needs_reauth"
    assert refresh_result(ProviderMisconfigured("invalid_client")) == "misconfigured"
    assert refresh_result(RefreshUnavailable("down", retry_after=1)) == "unavailable"
    assert refresh_result(RuntimeError("bug")) == "error"


def test_exposition_text_of_a_fresh_registry() -> None:
    metrics = Metrics()
    metrics.known_providers(["acme"])
    metrics.gateway_request("acme", "allowed", 200, 0.0)
    metrics.gateway_request('evil\n"x', "invalid_path", 400, 0.0)
    metrics.refresh("acme", "needs_reauth")
    samples = _samples(metrics.render())
    assert (
        _value(
            samples,
            "tokenbroker_gateway_requests_total",
            provider="acme",
            outcome="allowed",
            status="200",
        )
        == 1
    )
    assert (
        _value(
            samples,
            "tokenbroker_gateway_requests_total",
            provider="unknown",
            outcome="invalid_path",
            status="400",
        )
        == 1
    )
    assert (
        _value(samples, "tokenbroker_gateway_request_seconds_bucket", provider="acme", le="+Inf")
        == 1
    )
    assert _value(samples, "tokenbroker_gateway_request_seconds_count", provider="acme") == 1
    assert (
        _value(samples, "tokenbroker_refreshes_total", provider="acme", result="needs_reauth") == 1
    )


async def test_metrics_count_proxied_requests_denials_refreshes_and_audit_queue(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url, **GATEWAY_CONFIG) as h:
        token, _ = await ready(h, ["files:read"])
        _, before = await _scrape(h)
        for _ in range(3):
            status, _, body = await proxy(h, token, "GET", "/proxy/acme/files")
            assert status == 200, body
        status, _, _ = await proxy(h, token, "POST", "/proxy/acme/files", data=b"{}")
        assert status == 403
        status, _, _ = await proxy(h, "tbs.wrong", "GET", "/proxy/acme/files")
        assert status == 401
        assert h.state is not None
        h.state.expire_access_tokens()  # the upstream answers 401: one refresh, one retry
        status, _, body = await proxy(h, token, "GET", "/proxy/acme/files")
        assert status == 200, body
        text, after = await _scrape(h)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    requests = "tokenbroker_gateway_requests_total"
    assert delta(requests, provider="acme", outcome="allowed", status="200") == 4
    assert delta(requests, provider="acme", outcome="insufficient_grant", status="403") == 1
    assert delta(requests, provider="unknown", outcome="invalid_token", status="401") == 1
    assert delta("tokenbroker_gateway_request_seconds_count", provider="acme") == 5
    assert delta("tokenbroker_gateway_request_seconds_bucket", provider="acme", le="+Inf") == 5
    assert delta("tokenbroker_refreshes_total", provider="acme", result="ok") == 1
    assert ("tokenbroker_audit_queue_depth", frozenset()) in after
    assert _value(after, "tokenbroker_audit_records_lost_total") == 0
    assert "# TYPE tokenbroker_gateway_request_seconds histogram" in text
    assert token not in text


# --- readiness -------------------------------------------------------------------------------
async def _get(h: Harness, path: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(h.public_url + path) as resp:
        return resp.status, await resp.json()


@asynccontextmanager
async def _database_swapped(h: Harness, engine: AsyncEngine) -> AsyncIterator[None]:
    assert h.svc is not None
    original, h.svc.engine = h.svc.engine, engine
    try:
        yield
    finally:
        h.svc.engine = original
        await engine.dispose()


async def test_readyz_when_ready_and_healthz_stays_cheap(tmp_path: Path, database_url: str) -> None:
    async with running(tmp_path, database_url) as h:
        assert await _get(h, "/readyz") == (200, {"status": "ready"})
        assert await _get(h, "/healthz") == (200, {"status": "ok"})


async def test_readyz_is_503_when_the_database_is_unreachable(
    tmp_path: Path, database_url: str
) -> None:
    async with running(tmp_path, database_url) as h:
        nobody = create_engine(f"postgresql://tb@127.0.0.1:{free_port()}/gone")
        async with _database_swapped(h, nobody):
            status, doc = await _get(h, "/readyz")
            assert status == 503
            assert doc["error"] == "not_ready"
            assert "database" in str(doc["message"])
            assert await _get(h, "/healthz") == (200, {"status": "ok"})
        assert (await _get(h, "/readyz"))[0] == 200


async def test_readyz_gives_up_on_a_database_that_does_not_answer_within_a_second(
    tmp_path: Path, database_url: str
) -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with running(tmp_path, database_url) as h:
            silent_db = create_engine(f"postgresql://tb@127.0.0.1:{port}/silent")
            async with _database_swapped(h, silent_db):
                loop = asyncio.get_running_loop()
                started = loop.time()
                status, doc = await _get(h, "/readyz")
                assert status == 503
                assert "1 s" in str(doc["message"])
                assert loop.time() - started < 3
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_readyz_is_503_without_an_active_key(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_keys(self: object) -> KeyRing:
        raise KeyError_("the key file is gone")

    async with running(tmp_path, database_url) as h:
        assert h.svc is not None
        envelope = h.svc.sealed._envelope
        monkeypatch.setattr(type(envelope), "keyring", no_keys)
        status, doc = await _get(h, "/readyz")
        assert status == 503
        assert doc == {"error": "not_ready", "message": "no active encryption key is loaded"}
