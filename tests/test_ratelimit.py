"""Per-user rate limits: the same behaviour in memory and on the real Redis
(127.0.0.1:6379), atomic across limiter instances, failing open without Redis.

The behaviour tests inject the clock (no sleeps): the memory limiter reads it,
and the Redis script takes it as its `now` instead of the server's TIME. The
server-clock path itself is covered by one short-window test that polls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from automl.errors import RateLimitError, SettingsError
from automl.ratelimit import (
    KEY_PREFIX,
    Decision,
    MemoryRateLimiter,
    RedisRateLimiter,
    get_rate_limiter,
)
from automl.settings import from_environment

REDIS_URL = "redis://127.0.0.1:6379/0"
BACKENDS = ["memory", "redis"]


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll(condition, timeout: float, interval: float = 0.02):
    """The first truthy value of condition(), or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return None


@pytest.fixture(scope="module")
def redis_client():
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.skip(f"no Redis on {REDIS_URL}: {error}")
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client):
    """A key space of this test alone, emptied afterwards."""
    prefix = f"automl-test:ratelimit:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(params=BACKENDS)
def make_limiter(request):
    """make(limit, window=60, clock=None) for each backend."""
    made = []

    def make(limit, window=60.0, clock=None):
        clock = clock or FakeClock()
        if request.param == "memory":
            limiter = MemoryRateLimiter(limit, window, clock=clock)
        else:
            limiter = RedisRateLimiter(REDIS_URL, limit, window, prefix=request.getfixturevalue("prefix"),
                                       clock=clock)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        limiter.close()


# --- same behaviour on both backends -----------------------------------------

def test_exactly_limit_requests_pass_then_retry_after(make_limiter):
    clock = FakeClock(1000.0)
    limiter = make_limiter(3, clock=clock)
    decisions = []
    for at in (1000.0, 1010.0, 1020.0):
        clock.now = at
        decisions.append(limiter.hit("alice"))
    assert decisions == [Decision(True, 3, 2), Decision(True, 3, 1), Decision(True, 3, 0)]

    clock.now = 1030.0
    refused = limiter.hit("alice")
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after == pytest.approx(30.0)  # the request at 1000 leaves the window at 1060
    assert refused.retry_after_seconds == 30

    with pytest.raises(RateLimitError) as caught:
        limiter.check("alice")
    error = caught.value
    assert error.http_status == 429
    assert error.headers == {"Retry-After": "30"}
    assert error.code == "rate_limited"
    assert "3" in error.message("en") and "60" in error.message("en") and "30" in error.message("en")
    assert "réessayez" in error.message("fr")


def test_window_slides_and_refusals_are_not_counted(make_limiter):
    clock = FakeClock(1000.0)
    limiter = make_limiter(3, clock=clock)
    for at in (1000.0, 1010.0, 1020.0):
        clock.now = at
        assert limiter.hit("alice").allowed
    # Hammering while refused records nothing: it does not push the wait back.
    for at in (1030.0, 1040.0, 1050.0):
        clock.now = at
        assert not limiter.hit("alice").allowed

    clock.now = 1059.5
    almost = limiter.hit("alice")
    assert not almost.allowed
    assert almost.retry_after == pytest.approx(0.5)
    assert almost.retry_after_seconds == 1  # rounded up, never 0

    clock.now = 1060.0  # the first request has just left the window
    assert limiter.hit("alice") == Decision(True, 3, 0)
    clock.now = 1060.25
    assert limiter.hit("alice").retry_after == pytest.approx(9.75)  # now the one at 1010 counts
    clock.now = 1070.0
    assert limiter.hit("alice").allowed

    clock.now = 2000.0  # long idle: a full window is free again
    assert [limiter.hit("alice").allowed for _ in range(4)] == [True, True, True, False]


def test_users_are_independent(make_limiter):
    limiter = make_limiter(2)
    assert [limiter.hit("alice").allowed for _ in range(3)] == [True, True, False]
    assert [limiter.hit("bob").allowed for _ in range(3)] == [True, True, False]
    assert not limiter.hit("alice").allowed


@pytest.mark.parametrize("key", ["", None, 42, b"alice"])
def test_bad_key_is_refused_and_counts_nothing(make_limiter, key):
    limiter = make_limiter(1)
    with pytest.raises(ValueError, match="non-empty string"):
        limiter.hit(key)
    with pytest.raises(ValueError):
        limiter.check(key)
    assert limiter.hit("alice").allowed  # the one allowed request is still there


def test_async_variants(make_limiter):
    limiter = make_limiter(2)

    async def scenario():
        first, second = await limiter.ahit("alice"), await limiter.acheck("alice")
        with pytest.raises(RateLimitError) as caught:
            await limiter.acheck("alice")
        if isinstance(limiter, RedisRateLimiter):
            await limiter.aclose()
        return first, second, caught.value

    first, second, error = asyncio.run(scenario())
    assert first.allowed and second.allowed and second.remaining == 0
    assert error.headers == {"Retry-After": "60"}
    assert not limiter.hit("alice").allowed  # sync and async share the same log


@pytest.mark.parametrize("kind", [MemoryRateLimiter, RedisRateLimiter])
@pytest.mark.parametrize("limit, window", [
    (0, 60), (-1, 60), (1.5, 60), (True, 60), ("10", 60), (None, 60),
    (10, 0), (10, -1), (10, float("inf")), (10, float("nan")), (10, "60"), (10, None),
])
def test_bad_limit_or_window_is_refused(kind, limit, window):
    args = (REDIS_URL,) if kind is RedisRateLimiter else ()
    with pytest.raises(ValueError, match="limit|window"):
        kind(*args, limit, window)


# --- memory -----------------------------------------------------------------

def test_memory_forgets_idle_users():
    clock = FakeClock(1000.0)
    limiter = MemoryRateLimiter(2, 60.0, clock=clock)
    for user in ("alice", "bob", "carol"):
        limiter.hit(user)
    clock.now = 1030.0
    limiter.hit("bob")
    assert len(limiter) == 3
    clock.now = 1065.0  # alice and carol idle for a full window; bob's last hit is 35 s old
    limiter.hit("dave")
    assert len(limiter) == 2
    clock.now = 1200.0
    limiter.hit("erin")
    assert len(limiter) == 1
    # A forgotten user starts afresh, as an idle one would have anyway.
    assert [limiter.hit("alice").allowed for _ in range(3)] == [True, True, False]


def test_memory_keeps_at_most_limit_times_per_user():
    clock = FakeClock()
    limiter = MemoryRateLimiter(5, clock=clock)
    for _ in range(100):
        limiter.hit("alice")
    assert len(limiter._log["alice"]) == 5


def test_memory_is_thread_safe():
    """Threads race on many users at once: each user's last free place is a
    race, and a thread switch every microsecond makes an unguarded
    check-then-record over-admit."""
    limiter = MemoryRateLimiter(2, clock=FakeClock())
    users = [f"user{i}" for i in range(500)]
    threads = 8
    barrier = threading.Barrier(threads)
    allowed = []

    def hammer():
        barrier.wait()
        allowed.append(sum(limiter.hit(user).allowed for user in users for _ in range(2)))

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=hammer) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
    finally:
        sys.setswitchinterval(previous)
    assert len(allowed) == threads
    assert sum(allowed) == 2 * len(users)


# --- Redis --------------------------------------------------------------------

def test_redis_key_is_namespaced_and_expires_with_the_window(redis_client, prefix):
    limiter = RedisRateLimiter(REDIS_URL, 3, 60.0, prefix=prefix)
    assert RedisRateLimiter(REDIS_URL, 3).prefix == KEY_PREFIX == "automl:ratelimit:"
    limiter.hit("alice")
    limiter.hit("alice")
    assert redis_client.zcard(prefix + "alice") == 2
    assert 59_000 < redis_client.pttl(prefix + "alice") <= 60_000
    limiter.close()


def test_redis_server_clock_window_slides_and_idle_key_vanishes(redis_client, prefix):
    """No injected clock: the script reads Redis's TIME, as in production."""
    limiter = RedisRateLimiter(REDIS_URL, 3, 0.5, prefix=prefix)
    started = time.monotonic()
    assert [limiter.hit("alice").allowed for _ in range(3)] == [True, True, True]
    refused = limiter.hit("alice")
    assert not refused.allowed
    assert 0 < refused.retry_after <= 0.5
    assert refused.retry_after_seconds == 1

    passed = poll(lambda: limiter.hit("alice").allowed, timeout=5)
    assert passed, "the window never slid"
    assert time.monotonic() - started > 0.25
    # Two more fit (the other two of the first burst have left too), then no more.
    assert [limiter.hit("alice").allowed for _ in range(3)] == [True, True, False]

    assert poll(lambda: not redis_client.exists(prefix + "alice"), timeout=5), "idle key kept"
    limiter.close()


def test_redis_is_atomic_across_instances(redis_client, prefix):
    """Two limiters with their own connection pools, as two service processes
    would have, hammered by threads on many users: exactly `limit` requests
    per user pass (a check and a record in two round trips would over-admit)."""
    limiters = [RedisRateLimiter(REDIS_URL, 2, prefix=prefix) for _ in range(2)]
    users = [f"user{i}" for i in range(100)]
    threads = 8
    barrier = threading.Barrier(threads)
    allowed = []

    def hammer(limiter):
        barrier.wait()
        allowed.append(sum(limiter.hit(user).allowed for user in users for _ in range(2)))

    workers = [threading.Thread(target=hammer, args=(limiters[i % 2],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert len(allowed) == threads
    assert sum(allowed) == 2 * len(users)
    assert {redis_client.zcard(prefix + user) for user in users} == {2}
    for limiter in limiters:
        limiter.close()


def test_redis_smaller_limit_than_the_log_waits_for_enough_to_leave(prefix):
    """A limit lowered while users have a fuller log (rolling restart): the wait
    is until the log is under the new limit, not until the oldest leaves."""
    clock = FakeClock(1000.0)
    wide = RedisRateLimiter(REDIS_URL, 4, prefix=prefix, clock=clock)
    for at in (1000.0, 1010.0, 1020.0, 1030.0):
        clock.now = at
        assert wide.hit("alice").allowed
    narrow = RedisRateLimiter(REDIS_URL, 2, prefix=prefix, clock=clock)
    clock.now = 1040.0
    refused = narrow.hit("alice")
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(40.0)  # 1020 + 60 - 1040: then only 1030 is left
    wide.close()
    narrow.close()


def test_redis_unreachable_fails_open_fast_with_one_warning(caplog):
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there
    limiter = RedisRateLimiter(url, 1, timeout=0.2)
    tries = []
    script = limiter._script
    limiter._script = lambda **kwargs: tries.append(1) or script(**kwargs)
    caplog.set_level(logging.INFO, logger="automl.ratelimit")
    started = time.monotonic()
    decisions = [limiter.hit("alice") for _ in range(5)] + [limiter.check("alice")]
    elapsed = time.monotonic() - started
    assert all(decision.allowed for decision in decisions)
    assert elapsed < 1.0
    assert len(tries) == 1  # then Redis is left alone for retry_interval
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "rate limits are off" in warnings[0].getMessage()
    assert "s3cret" not in warnings[0].getMessage()
    limiter.close()


def test_redis_unreachable_fails_open_in_async_code():
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0", 1, timeout=0.2, retry_interval=0)

    async def scenario():
        decisions = [await limiter.acheck("alice") for _ in range(3)]
        await limiter.aclose()
        return decisions

    started = time.monotonic()
    assert all(decision.allowed for decision in asyncio.run(scenario()))
    assert time.monotonic() - started < 1.0


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server program")
def test_redis_limits_resume_when_redis_comes_back(tmp_path, caplog):
    port = free_port()
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{port}/0", 1, retry_interval=0.05, timeout=0.2)
    caplog.set_level(logging.INFO, logger="automl.ratelimit")
    assert limiter.hit("alice").allowed and limiter.hit("alice").allowed  # down: open
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert poll(lambda: not limiter.hit("alice").allowed, timeout=10), "limits never resumed"
    finally:
        server.terminate()
        server.wait(timeout=10)
        limiter.close()
    messages = [record.getMessage() for record in caplog.records]
    assert sum("rate limits are off" in text for text in messages) == 1
    assert sum("rate limits are on again" in text for text in messages) == 1


# --- settings -----------------------------------------------------------------

SETTINGS = from_environment({})


def test_disabled_gives_no_limiter():
    assert get_rate_limiter(dataclasses.replace(SETTINGS, rate_limit_enabled=False)) is None
    assert get_rate_limiter(dataclasses.replace(SETTINGS, rate_limit_enabled=False, redis_url="nonsense")) is None


def test_memory_without_redis_url_and_redis_with_it():
    limiter = get_rate_limiter(dataclasses.replace(SETTINGS, default_rate_limit=7))
    assert type(limiter) is MemoryRateLimiter
    assert (limiter.limit, limiter.window) == (7, 60.0)
    limiter = get_rate_limiter(dataclasses.replace(SETTINGS, default_rate_limit=7, redis_url=REDIS_URL))
    assert type(limiter) is RedisRateLimiter
    assert (limiter.limit, limiter.window) == (7, 60.0)
    limiter.close()


@pytest.mark.parametrize("url", ["localhost:6379", "http://127.0.0.1:6379", "redis://:pw-secret@host:port/0"])
def test_bad_redis_url_is_a_settings_error(url):
    with pytest.raises(SettingsError) as caught:
        get_rate_limiter(dataclasses.replace(SETTINGS, redis_url=url))
    assert caught.value.code == "rate_limit_redis_url"
    assert "pw-secret" not in caught.value.message("en")
    assert "REDIS_URL" in caught.value.message("fr")


@pytest.mark.parametrize("limit, code", [(0, "setting_too_small"), (-5, "setting_too_small"),
                                         ("120", "setting_not_integer"), (2.5, "setting_not_integer")])
def test_bad_default_rate_limit_is_a_settings_error(limit, code):
    with pytest.raises(SettingsError) as caught:
        get_rate_limiter(dataclasses.replace(SETTINGS, default_rate_limit=limit))
    assert caught.value.code == code
    assert "DEFAULT_RATE_LIMIT" in caught.value.message("en")
