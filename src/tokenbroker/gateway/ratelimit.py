"""Token-bucket rate limits for the gateway: in-process, or shared across replicas through Redis.

A bucket holds at most ``burst`` tokens and refills at ``rate`` tokens per second; a request
takes ``cost`` tokens or is refused (nothing is taken) with the seconds to wait before enough
tokens are back. A missing bucket is a full one, so forgetting an idle full bucket loses nothing:
the in-process limiter evicts those when it grows, and Redis expires them with ``PEXPIRE``.

Keys are opaque (the gateway builds e.g. ``user:<id>:provider:<name>`` and ``agent:<id>``); the
limit travels with each call, so one limiter serves every policy.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from tokenbroker.errors import RateLimitUnavailable

log = logging.getLogger("tokenbroker.gateway.ratelimit")

MonotonicClock = Callable[[], float]

DEFAULT_PREFIX = "tb:rl:"
DEFAULT_MAX_KEYS = 100_000
WARN_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class Limit:
    """``rate`` tokens per second, at most ``burst`` tokens banked."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError("rate limit: rate must be a positive number of tokens per second")
        if self.burst < 1:
            raise ValueError("rate limit: burst must be at least 1")


class Verdict(NamedTuple):
    """The answer to one hit: ``retry_after`` is 0 when allowed; ``remaining`` is whole tokens.
    (A named tuple: the gateway makes two per request, cheaper to build than a frozen
    dataclass.)"""

    allowed: bool
    retry_after: float
    remaining: int

    def retry_after_header(self) -> str:
        """The ``Retry-After`` value for a 429: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(self.retry_after)))


class RateLimiter(Protocol):
    """Takes ``cost`` tokens from the bucket ``key`` under ``limit``, or says how long to wait."""

    async def hit(self, key: str, limit: Limit, cost: int = 1) -> Verdict: ...

    async def close(self) -> None: ...


def _check_cost(limit: Limit, cost: int) -> None:
    if cost < 1 or cost > limit.burst:
        raise ValueError(f"rate limit: cost {cost} outside 1..burst ({limit.burst})")


class MemoryRateLimiter:
    """Buckets in a dict; each hit is one synchronous step, so asyncio needs no lock.

    Memory is bounded: at ``max_keys`` buckets, the full (idle) ones are dropped; if the
    dict is still above 90 % of ``max_keys`` the oldest-created buckets go too, which can only
    grant those keys a fresh burst.
    """

    def __init__(
        self, *, clock: MonotonicClock = time.monotonic, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._clock = clock
        self._max_keys = max_keys
        # key -> [tokens, last_refill, full_at]; a list is cheaper to update than an object.
        self._buckets: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    async def hit(self, key: str, limit: Limit, cost: int = 1) -> Verdict:
        return self.hit_now(key, limit, cost)

    def hit_now(self, key: str, limit: Limit, cost: int = 1) -> Verdict:
        """The synchronous core of :meth:`hit`."""
        rate = limit.rate
        burst = limit.burst
        if cost < 1 or cost > burst:
            _check_cost(limit, cost)
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._evict(now)
            tokens = float(burst)
            bucket = [tokens, now, now]
            self._buckets[key] = bucket
        else:
            elapsed = now - bucket[1]
            tokens = bucket[0] + elapsed * rate if elapsed > 0 else bucket[0]
            if tokens > burst:
                tokens = float(burst)
        if tokens >= cost:
            tokens -= cost
            bucket[0] = tokens
            bucket[1] = now
            bucket[2] = now + (burst - tokens) / rate
            return Verdict(True, 0.0, int(tokens))
        bucket[0] = tokens
        bucket[1] = now
        bucket[2] = now + (burst - tokens) / rate
        return Verdict(False, (cost - tokens) / rate, int(tokens))

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        for key in [k for k, b in buckets.items() if b[2] <= now]:
            del buckets[key]
        low_water = (self._max_keys * 9) // 10
        excess = len(buckets) - low_water
        if excess > 0:
            for key in [k for k, _ in zip(buckets, range(excess), strict=False)]:
                del buckets[key]

    async def close(self) -> None:
        self._buckets.clear()


# KEYS[1] bucket; ARGV rate (tokens/s), burst, cost. Returns {allowed, retry_after, remaining}.
# Time comes from the server so replicas with skewed clocks agree; microseconds fit a double.
_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local h = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(h[1])
local ts = tonumber(h[2])
if tokens == nil or ts == nil then
  tokens = burst
elseif now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000000)
else
  tokens = math.min(burst, tokens)
end
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'ts', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], math.max(1000, math.ceil(2000 * burst / rate)))
return {allowed, string.format('%.17g', retry), math.floor(tokens)}
"""


class RedisRateLimiter:
    """One Lua script refills and takes atomically; buckets are hashes under ``prefix``.

    When Redis fails, :meth:`hit` raises :class:`RateLimitUnavailable`, or with
    ``fail_open=True`` answers from an in-process limiter (each replica then limits alone)
    and logs a warning at most once a minute. After a failure Redis is left alone for
    ``retry_interval`` seconds, so an outage costs no connect timeout per request.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        fail_open: bool = False,
        retry_interval: float = 1.0,
        clock: MonotonicClock = time.monotonic,
        owns_client: bool = True,
    ) -> None:
        self._redis = client
        self._script = client.register_script(_LUA)
        self._prefix = prefix
        self._fail_open = fail_open
        self._retry_interval = retry_interval
        self._clock = clock
        self._owns_client = owns_client
        self._fallback = MemoryRateLimiter(clock=clock)
        self._down_until = -math.inf
        self._last_warning = -math.inf

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        fail_open: bool = False,
        timeout: float = 0.5,
        prefix: str = DEFAULT_PREFIX,
        retry_interval: float = 1.0,
        clock: MonotonicClock = time.monotonic,
    ) -> RedisRateLimiter:
        """A limiter owning a client with short timeouts and a single immediate retry."""
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        return cls(
            client,
            prefix=prefix,
            fail_open=fail_open,
            retry_interval=retry_interval,
            clock=clock,
        )

    async def hit(self, key: str, limit: Limit, cost: int = 1) -> Verdict:
        _check_cost(limit, cost)
        now = self._clock()
        if now < self._down_until:
            return self._unavailable(key, limit, cost, now, None)
        try:
            reply: Any = await self._script(
                keys=[self._prefix + key], args=[repr(limit.rate), limit.burst, cost]
            )
        except (RedisError, OSError) as exc:
            self._down_until = now + self._retry_interval
            return self._unavailable(key, limit, cost, now, exc)
        allowed, retry, remaining = reply
        if isinstance(retry, bytes):
            retry = retry.decode()
        return Verdict(bool(allowed), 0.0 if allowed else float(retry), int(remaining))

    def _unavailable(
        self, key: str, limit: Limit, cost: int, now: float, exc: BaseException | None
    ) -> Verdict:
        if not self._fail_open:
            err = RateLimitUnavailable("the rate-limit store (Redis) is unavailable")
            raise err from exc
        if now - self._last_warning >= WARN_INTERVAL:
            self._last_warning = now
            log.warning(
                "rate-limit store (Redis) unavailable (%s); limiting per replica in memory",
                type(exc).__name__ if exc is not None else "still down",
            )
        return self._fallback.hit_now(key, limit, cost)

    async def close(self) -> None:
        await self._fallback.close()
        if self._owns_client:
            await self._redis.aclose()


def limiter_from_url(redis_url: str | None, *, fail_open: bool = False) -> RateLimiter:
    """Redis-backed when ``redis_url`` is set, in-process otherwise."""
    if redis_url:
        return RedisRateLimiter.from_url(redis_url, fail_open=fail_open)
    return MemoryRateLimiter()
