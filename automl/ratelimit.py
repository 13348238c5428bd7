"""Per-user rate limits of the platform service (RATE_LIMIT_ENABLED,
DEFAULT_RATE_LIMIT requests per user per minute).

The algorithm is a sliding-window log: each user's recent request times are
kept, and a request passes when fewer than `limit` of them lie in the last
`window` seconds. Unlike fixed minute buckets it is exact — never more than
`limit` requests in ANY `window` seconds, with no double burst at a bucket's
edge — and unlike a token bucket it says what the setting says. It costs at
most `limit` timestamps per active user, freed once the user is idle.
Refused requests are not recorded, so a client that keeps hammering gets
through again as soon as its oldest request leaves the window.

The embedded default keeps the log in this process's memory
(`MemoryRateLimiter`): right for one service process. With REDIS_URL, the log
lives in Redis (`RedisRateLimiter`) and one Lua script trims, counts and
records in a single atomic step, so several service processes share one
limit per user.

`get_rate_limiter()` is called once when the app starts; a handler then calls
`check(user)` / `await acheck(user)`, which raise `RateLimitError` (429 with
Retry-After) when the user is over the limit.
"""

from __future__ import annotations

import abc
import itertools
import logging
import math
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import RateLimitError, SettingsError
from .settings import Settings, get_settings

__all__ = [
    "Decision",
    "RateLimiter",
    "MemoryRateLimiter",
    "RedisRateLimiter",
    "get_rate_limiter",
]

log = logging.getLogger(__name__)

KEY_PREFIX = "automl:ratelimit:"


@dataclass(frozen=True)
class Decision:
    """The answer for one request. `retry_after` is in seconds, exact, and 0
    for a request that passes."""

    allowed: bool
    limit: int
    remaining: int  # requests left in the window after this one
    retry_after: float = 0.0

    @property
    def retry_after_seconds(self) -> int:
        """Retry-After as HTTP wants it: whole seconds, rounded up, at least 1,
        so that a client that waits this long is let through."""
        return max(1, math.ceil(self.retry_after))


def _check_key(key) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"a rate limit key must be a non-empty string, not {key!r}")
    return key


class RateLimiter(abc.ABC):
    """At most `limit` requests per key in any `window` seconds."""

    def __init__(self, limit: int, window: float = 60.0):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a whole number >= 1, not {limit!r}")
        if isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 < window < math.inf:
            raise ValueError(f"window must be a number of seconds > 0, not {window!r}")
        self.limit = limit
        self.window = float(window)

    @abc.abstractmethod
    def hit(self, key: str) -> Decision:
        """Count one request of `key` if it passes, and say whether it does."""

    async def ahit(self, key: str) -> Decision:
        """`hit` for async code; the default suits limiters that never wait."""
        return self.hit(key)

    def check(self, key: str) -> Decision:
        """`hit`, raising RateLimitError (429, Retry-After) on a refusal."""
        return self._raise_if_refused(self.hit(key))

    async def acheck(self, key: str) -> Decision:
        return self._raise_if_refused(await self.ahit(key))

    def _raise_if_refused(self, decision: Decision) -> Decision:
        if not decision.allowed:
            raise RateLimitError(retry_after=decision.retry_after_seconds, limit=self.limit,
                                 window=f"{self.window:g}")
        return decision

    def close(self) -> None:
        """Release connections; nothing to do for memory."""


class MemoryRateLimiter(RateLimiter):
    """The log in this process's memory: the embedded default.

    One lock guards it, since the service runs sync handlers in a thread pool;
    a hit holds it for microseconds. Once per window the users with no request
    in the last window are dropped, so memory follows the active users only.
    `clock` is injectable so that tests need no sleeps.
    """

    def __init__(self, limit: int, window: float = 60.0, clock=time.monotonic):
        super().__init__(limit, window)
        self._clock = clock
        self._lock = threading.Lock()
        self._log: dict[str, deque[float]] = {}
        self._next_sweep = clock() + self.window

    def __len__(self) -> int:
        """How many users are tracked now."""
        return len(self._log)

    def hit(self, key: str) -> Decision:
        _check_key(key)
        with self._lock:
            now = self._clock()
            if now >= self._next_sweep:
                self._forget_idle(now)
            times = self._log.get(key)
            if times is None:
                times = self._log[key] = deque(maxlen=self.limit)
            while times and times[0] + self.window <= now:
                times.popleft()
            if len(times) < self.limit:
                times.append(now)
                return Decision(True, self.limit, self.limit - len(times))
            return Decision(False, self.limit, 0, times[0] + self.window - now)

    def _forget_idle(self, now: float) -> None:
        idle = [key for key, times in self._log.items() if not times or times[-1] + self.window <= now]
        for key in idle:
            del self._log[key]
        self._next_sweep = now + self.window


# KEYS[1]: the user's log, a sorted set of request times (seconds) with unique
# members. ARGV: limit, window, a unique member, now ('' = the Redis server's
# clock: one clock for all service processes, whatever their hosts' drift).
# Returns {allowed, remaining, retry_after as a string (Lua would truncate a
# number)}. The key expires one window after its newest request: an idle user
# costs nothing (writing after TIME needs Redis >= 5, which replicates a
# script's effects). When over the limit (a smaller limit than the log was filled
# with counts too), the wait is until enough old requests leave the window.
SLIDING_WINDOW_LUA = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[4])
if now == nil then
    local t = redis.call('TIME')
    now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now - window))
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
    redis.call('ZADD', KEYS[1], string.format('%.6f', now), ARGV[3])
    redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
    return {1, limit - count - 1, '0'}
end
local oldest = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return {0, 0, string.format('%.6f', tonumber(oldest[2]) + window - now)}
"""


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="").geturl()


class RedisRateLimiter(RateLimiter):
    """The log in Redis, shared by every service process.

    Fails OPEN: when Redis cannot be reached or answers an error, the request
    passes and a warning is logged once per outage. Rate limits protect the
    service from floods; they guard no data, so an outage of Redis must not
    become an outage of the whole API. After a failure Redis is left alone for
    `retry_interval` seconds, so that a host that swallows packets costs one
    `timeout` per interval, not one per request. Each call is one round trip
    (EVALSHA; the script is loaded again by redis-py if Redis lost it).

    `clock` (seconds) replaces the Redis server's clock, for tests only.
    `ahit` uses redis.asyncio, whose connections belong to the event loop that
    first used them: call it from one loop (the app's).
    """

    def __init__(self, url: str, limit: int, window: float = 60.0, *, prefix: str = KEY_PREFIX,
                 timeout: float = 0.5, retry_interval: float = 5.0, clock=None):
        super().__init__(limit, window)
        import redis  # lazy: only deployments with REDIS_URL need the client
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One immediate retry heals a pooled connection that the server closed;
        # redis-py's default (10 retries with backoff) would hold a request for
        # seconds while Redis is down.
        self._options = dict(socket_timeout=timeout, socket_connect_timeout=timeout,
                             retry=Retry(NoBackoff(), 1))
        self._redis = redis.Redis.from_url(url, **self._options)
        self._script = self._redis.register_script(SLIDING_WINDOW_LUA)
        self._async = None
        self._url = url
        self._where = _without_password(url)
        self._errors = redis.RedisError
        self.prefix = prefix
        self.retry_interval = retry_interval
        self._clock = clock
        self._retry_at = 0.0
        self._failing = False
        self._instance = secrets.token_hex(6)
        self._sequence = itertools.count()

    def _args(self) -> list:
        now = "" if self._clock is None else repr(float(self._clock()))
        return [self.limit, repr(self.window), f"{self._instance}:{next(self._sequence)}", now]

    def _decision(self, reply) -> Decision:
        if self._failing:
            self._failing = False
            log.info("rate limits are on again: Redis at %s answers", self._where)
        allowed, remaining, retry_after = reply
        return Decision(bool(allowed), self.limit, int(remaining), float(retry_after))

    def _skip(self) -> bool:
        return self._failing and time.monotonic() < self._retry_at

    def _fail_open(self, error: Exception) -> Decision:
        if not self._failing:
            log.warning("rate limits are off: Redis at %s fails (%s); requests pass until it answers",
                        self._where, error)
        self._failing = True
        self._retry_at = time.monotonic() + self.retry_interval
        return Decision(True, self.limit, self.limit)

    def hit(self, key: str) -> Decision:
        key = self.prefix + _check_key(key)
        if self._skip():
            return Decision(True, self.limit, self.limit)
        try:
            reply = self._script(keys=[key], args=self._args())
        except self._errors as error:
            return self._fail_open(error)
        return self._decision(reply)

    async def ahit(self, key: str) -> Decision:
        key = self.prefix + _check_key(key)
        if self._skip():
            return Decision(True, self.limit, self.limit)
        if self._async is None:
            import redis.asyncio

            self._async = redis.asyncio.Redis.from_url(self._url, **self._options)
            self._async_script = self._async.register_script(SLIDING_WINDOW_LUA)
        try:
            reply = await self._async_script(keys=[key], args=self._args())
        except self._errors as error:
            return self._fail_open(error)
        return self._decision(reply)

    def close(self) -> None:
        self._redis.close()

    async def aclose(self) -> None:
        """Close the async connections too (from the loop that used them)."""
        if self._async is not None:
            await self._async.aclose()
            self._async = None
        self.close()


def get_rate_limiter(settings: Settings | None = None) -> RateLimiter | None:
    """The deployment's limiter, or None when RATE_LIMIT_ENABLED is off. Call
    it once at start and keep it: the memory limiter IS the state."""
    settings = settings or get_settings()
    if not settings.rate_limit_enabled:
        return None
    limit = settings.default_rate_limit
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise SettingsError("setting_not_integer", name="DEFAULT_RATE_LIMIT", value=limit)
    if limit < 1:
        raise SettingsError("setting_too_small", name="DEFAULT_RATE_LIMIT", value=limit, low=1)
    if not settings.redis_url:
        return MemoryRateLimiter(limit)
    try:
        return RedisRateLimiter(settings.redis_url, limit)
    except ValueError as error:  # redis-py's word for a malformed URL
        raise SettingsError("rate_limit_redis_url", reason=str(error)) from None
