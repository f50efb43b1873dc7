"""Token-bucket rate limits: the in-process limiter, and the Redis one shared by replicas."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tokenbroker.errors import RateLimitUnavailable, TokenBrokerError
from tokenbroker.gateway.ratelimit import (
    Limit,
    MemoryRateLimiter,
    RedisRateLimiter,
    Verdict,
    limiter_from_url,
)

REDIS_URL = "redis://127.0.0.1:6379/15"
DEAD_URL = "redis://127.0.0.1:1/0"


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# --- values -------------------------------------------------------------------------------


def test_limit_validates() -> None:
    with pytest.raises(ValueError, match="rate"):
        Limit(rate=0, burst=1)
    with pytest.raises(ValueError, match="rate"):
        Limit(rate=float("inf"), burst=1)
    with pytest.raises(ValueError, match="burst"):
        Limit(rate=1, burst=0)


def test_retry_after_header_rounds_up() -> None:
    assert Verdict(False, 0.2, 0).retry_after_header() == "1"
    assert Verdict(False, 2.01, 0).retry_after_header() == "3"
    assert Verdict(False, 3.0, 0).retry_after_header() == "3"


def test_unavailable_error_shape() -> None:
    err = RateLimitUnavailable("down")
    assert isinstance(err, TokenBrokerError)
    assert (err.code, err.status) == ("store_unavailable", 503)


# --- in-process ---------------------------------------------------------------------------


async def test_memory_burst_then_refuse() -> None:
    clock = FakeClock()
    rl = MemoryRateLimiter(clock=clock)
    limit = Limit(rate=2, burst=3)
    verdicts = [await rl.hit("k", limit) for _ in range(3)]
    assert verdicts == [Verdict(True, 0.0, 2), Verdict(True, 0.0, 1), Verdict(True, 0.0, 0)]
    refused = await rl.hit("k", limit)
    assert refused == Verdict(False, 0.5, 0)
    # a refusal takes nothing: the wait does not grow
    assert (await rl.hit("k", limit)).retry_after == pytest.approx(0.5)


async def test_memory_refills_over_time() -> None:
    clock = FakeClock()
    rl = MemoryRateLimiter(clock=clock)
    limit = Limit(rate=2, burst=3)
    for _ in range(3):
        assert (await rl.hit("k", limit)).allowed
    clock.advance(0.25)
    verdict = await rl.hit("k", limit)
    assert not verdict.allowed
    assert verdict.retry_after == pytest.approx(0.25)
    clock.advance(0.25)
    assert await rl.hit("k", limit) == Verdict(True, 0.0, 0)
    # refill is capped at the burst
    clock.advance(3600)
    assert await rl.hit("k", limit) == Verdict(True, 0.0, 2)


async def test_memory_keys_are_independent() -> None:
    clock = FakeClock()
    rl = MemoryRateLimiter(clock=clock)
    limit = Limit(rate=1, burst=1)
    assert (await rl.hit("user:1:provider:github", limit)).allowed
    assert not (await rl.hit("user:1:provider:github", limit)).allowed
    assert (await rl.hit("user:2:provider:github", limit)).allowed
    assert (await rl.hit("agent:1", limit)).allowed


async def test_memory_cost_greater_than_one() -> None:
    clock = FakeClock()
    rl = MemoryRateLimiter(clock=clock)
    limit = Limit(rate=1, burst=10)
    assert await rl.hit("k", limit, cost=4) == Verdict(True, 0.0, 6)
    assert await rl.hit("k", limit, cost=4) == Verdict(True, 0.0, 2)
    assert await rl.hit("k", limit, cost=4) == Verdict(False, 2.0, 2)
    assert (await rl.hit("k", limit, cost=2)).allowed
    with pytest.raises(ValueError, match="cost"):
        await rl.hit("k", limit, cost=11)
    with pytest.raises(ValueError, match="cost"):
        await rl.hit("k", limit, cost=0)


async def test_memory_evicts_idle_full_buckets() -> None:
    clock = FakeClock()
    rl = MemoryRateLimiter(clock=clock, max_keys=100)
    limit = Limit(rate=10, burst=5)
    for i in range(100):
        await rl.hit(f"idle:{i}", limit)
    assert len(rl) == 100
    clock.advance(1.0)  # every bucket is full again: forgetting them loses nothing
    slow = Limit(rate=0.001, burst=1)
    assert (await rl.hit("busy", slow)).allowed
    assert len(rl) == 1
    for i in range(300):  # each idle bucket is full again 0.1 s after its hit
        await rl.hit(f"idle2:{i}", limit)
        clock.advance(0.2)
        assert len(rl) <= 100
    assert not (await rl.hit("busy", slow)).allowed  # the busy bucket survived every sweep


async def test_memory_stays_bounded_when_every_bucket_is_busy() -> None:
    clock = FakeClock()
    rl = MemoryRateLimiter(clock=clock, max_keys=50)
    limit = Limit(rate=0.001, burst=2)
    for i in range(1000):
        assert (await rl.hit(f"k{i}", limit)).allowed
        assert len(rl) <= 50
    await rl.close()
    assert len(rl) == 0


async def test_limiter_from_url() -> None:
    memory = limiter_from_url(None)
    assert isinstance(memory, MemoryRateLimiter)
    await memory.close()
    shared = limiter_from_url(REDIS_URL)
    assert isinstance(shared, RedisRateLimiter)
    await shared.close()


# --- Redis --------------------------------------------------------------------------------


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        message = f"Redis on {REDIS_URL} does not answer ({type(exc).__name__})"
        if os.environ.get("TOKENBROKER_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    value = f"tb:rl:test:{uuid.uuid4().hex}:"
    yield value
    keys = [k async for k in redis_client.scan_iter(match=value + "*")]
    if keys:
        await redis_client.delete(*keys)


def make_redis(prefix: str) -> RedisRateLimiter:
    # A generous timeout: these tests check semantics, and a busy CI machine may take longer
    # than the hot path's 0.5 s default to open 200 connections at once.
    return RedisRateLimiter.from_url(REDIS_URL, prefix=prefix, timeout=5.0)


async def test_redis_burst_then_refuse(prefix: str, redis_client: aioredis.Redis) -> None:
    rl = make_redis(prefix)
    try:
        limit = Limit(rate=0.01, burst=3)  # refill over the test is negligible
        remaining = [(await rl.hit("k", limit)).remaining for _ in range(3)]
        assert remaining == [2, 1, 0]
        refused = await rl.hit("k", limit)
        assert not refused.allowed
        assert refused.remaining == 0
        assert 99.0 < refused.retry_after <= 100.0
        ttl = await redis_client.pttl(prefix + "k")
        assert 0 < ttl <= 2 * 3 / 0.01 * 1000
    finally:
        await rl.close()


async def test_redis_refills_over_time(prefix: str) -> None:
    rl = make_redis(prefix)
    try:
        limit = Limit(rate=20, burst=2)
        assert (await rl.hit("k", limit)).allowed
        assert (await rl.hit("k", limit)).allowed
        refused = await rl.hit("k", limit)
        assert not refused.allowed
        assert 0 < refused.retry_after <= 0.05
        await asyncio.sleep(0.12)
        assert (await rl.hit("k", limit)).allowed
        assert (await rl.hit("k", limit)).allowed
    finally:
        await rl.close()


async def test_redis_keys_independent_and_cost(prefix: str) -> None:
    rl = make_redis(prefix)
    try:
        limit = Limit(rate=0.01, burst=10)
        assert await rl.hit("a", limit, cost=4) == Verdict(True, 0.0, 6)
        assert await rl.hit("a", limit, cost=4) == Verdict(True, 0.0, 2)
        refused = await rl.hit("a", limit, cost=4)
        assert not refused.allowed
        assert 199.0 < refused.retry_after <= 200.0
        assert await rl.hit("b", limit, cost=10) == Verdict(True, 0.0, 0)
        with pytest.raises(ValueError, match="cost"):
            await rl.hit("a", limit, cost=11)
    finally:
        await rl.close()


async def test_redis_two_replicas_share_one_bucket(prefix: str) -> None:
    one, two = make_redis(prefix), make_redis(prefix)
    try:
        limit = Limit(rate=0.01, burst=4)
        results = [await (one if i % 2 else two).hit("shared", limit) for i in range(6)]
        assert [v.allowed for v in results] == [True] * 4 + [False] * 2
    finally:
        await one.close()
        await two.close()


async def test_redis_concurrent_hits_allow_exactly_the_burst(prefix: str) -> None:
    replicas = [make_redis(prefix) for _ in range(2)]
    try:
        limit = Limit(rate=0.001, burst=50)
        verdicts = await asyncio.gather(*(replicas[i % 2].hit("hot", limit) for i in range(200)))
        assert sum(v.allowed for v in verdicts) == 50
    finally:
        for rl in replicas:
            await rl.close()


async def test_redis_survives_script_flush(prefix: str, redis_client: aioredis.Redis) -> None:
    rl = make_redis(prefix)
    try:
        limit = Limit(rate=0.01, burst=2)
        assert (await rl.hit("k", limit)).allowed
        await redis_client.script_flush()  # EVALSHA now answers NOSCRIPT: the script reloads
        assert await rl.hit("k", limit) == Verdict(True, 0.0, 0)
    finally:
        await rl.close()


async def test_redis_unreachable_fails_closed() -> None:
    rl = RedisRateLimiter.from_url(DEAD_URL)
    try:
        with pytest.raises(RateLimitUnavailable) as info:
            await rl.hit("k", Limit(rate=1, burst=1))
        assert info.value.code == "store_unavailable"
        assert info.value.status == 503
        with pytest.raises(RateLimitUnavailable):
            await rl.hit("k", Limit(rate=1, burst=1))
    finally:
        await rl.close()


async def test_redis_unreachable_fails_open_to_memory(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    rl = RedisRateLimiter.from_url(DEAD_URL, fail_open=True, clock=clock, retry_interval=0)
    caplog.set_level(logging.WARNING, logger="tokenbroker.gateway.ratelimit")
    try:
        limit = Limit(rate=1, burst=2)
        assert await rl.hit("k", limit) == Verdict(True, 0.0, 1)
        assert await rl.hit("k", limit) == Verdict(True, 0.0, 0)
        assert await rl.hit("k", limit) == Verdict(False, 1.0, 0)
        assert len(caplog.records) == 1  # once per minute, not per hit
        clock.advance(61)
        assert (await rl.hit("k", limit)).allowed
        assert len(caplog.records) == 2
    finally:
        await rl.close()


async def test_redis_down_is_not_retried_within_the_interval() -> None:
    clock = FakeClock()
    rl = RedisRateLimiter.from_url(DEAD_URL, clock=clock, retry_interval=5)
    limit = Limit(rate=1, burst=1)
    try:
        with pytest.raises(RateLimitUnavailable) as first:
            await rl.hit("k", limit)
        assert first.value.__cause__ is not None  # Redis was asked and failed
        clock.advance(4)
        with pytest.raises(RateLimitUnavailable) as second:
            await rl.hit("k", limit)
        assert second.value.__cause__ is None  # not asked again within the interval
        clock.advance(2)
        with pytest.raises(RateLimitUnavailable) as third:
            await rl.hit("k", limit)
        assert third.value.__cause__ is not None
    finally:
        await rl.close()
