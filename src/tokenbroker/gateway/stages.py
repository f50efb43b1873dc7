"""Time spent per gateway stage (session, decision, unseal, forward, audit), for the benchmark."""

from __future__ import annotations


class Stages:
    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.requests = 0

    def add(self, stage: str, seconds: float) -> None:
        self.totals[stage] = self.totals.get(stage, 0.0) + seconds

    def count(self) -> None:
        self.requests += 1

    def microseconds_per_request(self) -> dict[str, float]:
        if not self.requests:
            return {}
        return {k: round(v / self.requests * 1e6, 1) for k, v in self.totals.items()}

    def reset(self) -> None:
        self.totals.clear()
        self.requests = 0
