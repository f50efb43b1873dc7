"""Prometheus metrics, kept in plain dictionaries and written in the text exposition format.

One registry per process (:data:`METRICS`). Observations are a dictionary update on the event
loop: no lock, no I/O, no allocation beyond a label tuple, so the gateway can record every
request. Label values are bounded: ``provider`` is one of the configured providers (anything
else an agent puts in a path counts as ``unknown``), ``outcome`` is ``allowed`` or one of the
broker's error codes, ``status`` an HTTP status.

Metrics:

* ``tokenbroker_gateway_requests_total{provider,outcome,status}``
* ``tokenbroker_gateway_request_seconds{provider}`` (histogram)
* ``tokenbroker_refreshes_total{provider,result}``, result ``ok`` / ``needs_reauth`` /
  ``misconfigured`` / ``unavailable`` / ``error``
* ``tokenbroker_audit_queue_depth`` and ``tokenbroker_audit_records_lost_total``, read from the
  gateway's audit recorder when scraped.

With ``serve --workers N`` each worker process keeps its own numbers.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from tokenbroker.errors import (
    NeedsReauth,
    ProviderMisconfigured,
    RefreshUnavailable,
    TokenBrokerError,
)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
UNKNOWN: Final = "unknown"


class Histogram:
    """Counts per bucket (not cumulative until rendered), sum and count."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1


@dataclass(frozen=True)
class AuditGauges:
    """What the audit recorder reports at scrape time."""

    queue_depth: int
    lost: int


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.refreshes: dict[tuple[str, str], int] = {}
        self._providers: frozenset[str] = frozenset()

    def known_providers(self, names: Iterable[str]) -> None:
        """Providers that get a label of their own (the configured ones)."""
        self._providers = self._providers | frozenset(names)

    def _provider(self, name: str | None) -> str:
        return name if name is not None and name in self._providers else UNKNOWN

    # --- observations ----------------------------------------------------------------------
    def gateway_request(
        self, provider: str | None, outcome: str, status: int, started: float
    ) -> None:
        """One finished gateway request; ``started`` is its ``time.perf_counter()``."""
        label = self._provider(provider)
        key = (label, outcome, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get(label)
        if histogram is None:
            histogram = self.latency[label] = Histogram()
        histogram.observe(time.perf_counter() - started)

    def gateway_denied(self, provider: str | None, exc: TokenBrokerError, started: float) -> None:
        """A request the gateway answered itself (the status its answer carries)."""
        status = exc.status if 400 <= exc.status < 600 else 500
        self.gateway_request(provider, exc.code, status, started)

    def refresh(self, provider: str, result: str) -> None:
        key = (self._provider(provider), result)
        self.refreshes[key] = self.refreshes.get(key, 0) + 1

    def refresh_done(self, provider: str) -> Callable[[asyncio.Task[None]], None]:
        """A done-callback for a refresh task: counts its result by the way it ended."""

        def done(task: asyncio.Task[None]) -> None:
            if not task.cancelled():
                self.refresh(provider, refresh_result(task.exception()))

        return done

    def reset(self) -> None:
        self.requests.clear()
        self.latency.clear()
        self.refreshes.clear()

    # --- exposition ------------------------------------------------------------------------
    def render(self, audit: AuditGauges | None = None) -> str:
        out: list[str] = []
        _family(out, "tokenbroker_gateway_requests_total", "counter", "Gateway requests.")
        for (provider, outcome, status), n in sorted(self.requests.items()):
            labels = _labels(provider=provider, outcome=outcome, status=str(status))
            out.append(f"tokenbroker_gateway_requests_total{labels} {n}")
        name = "tokenbroker_gateway_request_seconds"
        _family(out, name, "histogram", "Gateway request latency in seconds.")
        for provider, histogram in sorted(self.latency.items()):
            cumulative = 0
            for bound, n in zip((*map(_number, BUCKETS), "+Inf"), histogram.buckets, strict=True):
                cumulative += n
                out.append(f"{name}_bucket{_labels(provider=provider, le=bound)} {cumulative}")
            labels = _labels(provider=provider)
            out.append(f"{name}_sum{labels} {_number(histogram.total)}")
            out.append(f"{name}_count{labels} {histogram.count}")
        _family(out, "tokenbroker_refreshes_total", "counter", "Token refreshes by result.")
        for (provider, result), n in sorted(self.refreshes.items()):
            labels = _labels(provider=provider, result=result)
            out.append(f"tokenbroker_refreshes_total{labels} {n}")
        if audit is not None:
            _family(out, "tokenbroker_audit_queue_depth", "gauge", "Audit events not committed.")
            out.append(f"tokenbroker_audit_queue_depth {audit.queue_depth}")
            _family(out, "tokenbroker_audit_records_lost_total", "counter", "Audit events dropped.")
            out.append(f"tokenbroker_audit_records_lost_total {audit.lost}")
        return "\n".join(out) + "\n"


def refresh_result(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, NeedsReauth):
        return "needs_reauth"
    if isinstance(exc, ProviderMisconfigured):
        return "misconfigured"
    if isinstance(exc, RefreshUnavailable):
        return "unavailable"
    return "error"


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def _labels(**labels: str) -> str:
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value))


METRICS: Final = Metrics()
