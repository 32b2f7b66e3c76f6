"""The Redis fallback cache: shared values with TTL and age, in-process stand-in, bounded
latency on a dead or black-holed Redis, no redis exception ever reaching the caller."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import decimal
import enum
import fractions
import pickle
import time
import uuid
import zoneinfo
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient import (
    FakeClock,
    FallbackCache,
    fallback,
    get_fallback_cache,
    register_cache_type,
    set_fallback_cache,
    use_clock,
)
from resilient._backends.redis import (
    RedisCache,
    close_workers,
    enable_redis_cache,
    make_redis_client,
    register_health_checks,
)
from resilient.health import HealthRegistry
from resilient.testing.faults import FaultProxy
from resilient.testing.servers import free_port


@pytest.fixture(autouse=True)
def _workers() -> Iterator[None]:
    yield
    close_workers()


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """The package's log lines while the test runs."""
    from resilient import disable_logging, enable_logging

    lines: list[str] = []
    enable_logging("DEBUG", json_lines=False, sink=lines.append)
    yield lines
    disable_logging()


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """A unique key prefix in DB 15; its keys are deleted afterwards."""
    name = f"rt-{uuid.uuid4().hex[:8]}"
    yield name
    client = aioredis.Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_client_has_short_timeouts_and_no_hidden_retries() -> None:
    client = make_redis_client("redis://127.0.0.1:1/0", timeout=0.05)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.05
    assert kwargs["socket_connect_timeout"] == 0.05
    assert kwargs["retry"].get_retries() == 0
    started = time.perf_counter()
    with pytest.raises(Exception) as info:
        await client.ping()
    assert time.perf_counter() - started < 0.5
    assert type(info.value).__module__.startswith("redis")
    await client.aclose()


async def test_values_are_shared_with_age_and_ttl(redis_url: str, prefix: str) -> None:
    writer = RedisCache(redis_url, prefix=prefix)
    reader = RedisCache(redis_url, prefix=prefix)  # another process's view: its own local layer
    assert isinstance(writer, FallbackCache)
    await writer.set("quote:AAPL", {"price": 187.5}, 30.0)
    assert writer.worker is not None
    await writer.worker.drain()
    entry = await reader.entry("quote:AAPL")
    assert entry is not None
    assert entry.source == "redis"
    assert entry.value == {"price": 187.5}
    assert entry.ttl == 30.0
    assert 0.0 <= entry.age < 5.0
    assert entry.stored_at <= time.time()
    cached = await reader.get("quote:AAPL")
    assert cached is not None and cached.value == {"price": 187.5}
    client = aioredis.Redis.from_url(redis_url)
    raw = await client.pttl(f"{prefix}:cache:quote:AAPL")
    await client.aclose()
    assert 0 < raw <= 30_000


async def test_expired_values_are_not_served(redis_url: str, prefix: str) -> None:
    with use_clock(FakeClock()) as clock:
        cache = RedisCache(redis_url, prefix=prefix)
        await cache.set("k", 1.5, 10.0)
        assert cache.worker is not None
        await cache.worker.drain()
        clock.advance(5.0)
        entry = await cache.entry("k")
        assert entry is not None and entry.age == pytest.approx(5.0, abs=0.5)
        clock.advance(6.0)
        assert await cache.get("k") is None


async def test_value_json_cannot_hold_stays_in_process(redis_url: str, prefix: str) -> None:
    cache = RedisCache(redis_url, prefix=prefix)
    other = RedisCache(redis_url, prefix=prefix)
    await cache.set("obj", Unregistered(1), 30.0)
    assert cache.worker is not None
    await cache.worker.drain()
    assert (await cache.get("obj")) is not None  # served from the in-process layer
    assert await other.get("obj") is None


async def test_pickle_serializer_is_refused(redis_url: str) -> None:
    """Nothing read from Redis is ever unpickled: the pickle option is gone, with a way out."""
    with pytest.raises(ValueError, match=r"never unpickled.*register_cache_type"):
        RedisCache(redis_url, serializer="pickle")
    with pytest.raises(ValueError, match="serializer"):
        RedisCache(redis_url, serializer="yaml")


async def test_sync_interface(redis_url: str, prefix: str) -> None:
    cache = RedisCache(redis_url, prefix=prefix)
    other = RedisCache(redis_url, prefix=prefix)
    cache.set_sync("s", [1, 2], 30.0)
    assert cache.worker is not None
    await cache.worker.drain()
    got = await asyncio.to_thread(other.get_sync, "s")
    assert got is not None and got.value == [1, 2]


async def test_dead_redis_falls_back_to_in_process_without_raising() -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", timeout=0.1)
    await cache.set("k", "v", 30.0)
    for _ in range(5):
        started = time.perf_counter()
        got = await cache.get("k")
        assert time.perf_counter() - started < 0.15
        assert got is not None and got.value == "v"
    assert cache.worker is not None and cache.worker.guard.is_open
    health = await cache.health_check()
    assert health["status"] == "degraded"
    assert "in-process" in health["detail"]


async def test_blackholed_redis_costs_at_most_the_timeout(redis_url: str, prefix: str) -> None:
    """A silent Redis delays a read by ≤ redis.timeout, then is skipped entirely."""
    async with FaultProxy("127.0.0.1", 6379) as proxy:
        url = redis_url.replace(":6379/", f":{proxy.port}/")
        cache = RedisCache(url, prefix=prefix, timeout=0.1)
        await cache.set("k", 42, 30.0)
        assert cache.worker is not None
        await cache.worker.drain()
        cache.local.clear()
        assert (await cache.get("k")) is not None
        await cache.set("k", 42, 30.0)  # the in-process copy
        proxy.blackhole = True
        durations = []
        for _ in range(6):
            started = time.perf_counter()
            got = await cache.get("k")
            durations.append(time.perf_counter() - started)
            assert got is not None and got.value == 42
        assert max(durations) < 0.1 + 0.05
        assert sum(d > 0.05 for d in durations) <= 2  # then the guard skips Redis
        proxy.blackhole = False


async def test_password_never_in_repr_or_health() -> None:
    secret = "rds-secret-XYZ"
    cache = RedisCache(f"redis://:{secret}@127.0.0.1:{free_port()}/0", timeout=0.05)
    await cache.get("x")
    await cache.get("x")
    assert secret not in repr(cache)
    assert secret not in str(await cache.health_check())


async def test_no_url_is_in_process_and_healthy() -> None:
    cache = RedisCache(url="", prefix="x")
    assert cache.worker is None
    await cache.set("a", 1, 10.0)
    got = await cache.get("a")
    assert got is not None and got.value == 1
    assert (await cache.health_check())["status"] == "healthy"


async def test_fallback_serves_the_value_another_process_cached(
    redis_url: str, prefix: str
) -> None:
    """@fallback(cache=True) on the Redis cache: process B serves what process A stored."""
    previous = get_fallback_cache()
    try:
        cache_a = enable_redis_cache(redis_url)
        cache_a.prefix = f"{prefix}:cache:"
        calls = {"fail": False}

        @fallback(cache=True, name=f"quotes-{prefix}")
        async def quote(symbol: str) -> float:
            if calls["fail"]:
                raise ConnectionError("vendor down")
            return 101.25

        assert await quote("MSFT") == 101.25
        assert cache_a.worker is not None
        await cache_a.worker.drain()
        cache_b = RedisCache(redis_url, prefix=prefix)
        set_fallback_cache(cache_b)  # a fresh process: empty in-process layer
        calls["fail"] = True
        assert await quote("MSFT") == 101.25
        assert cache_b.hits["redis"] == 1
    finally:
        set_fallback_cache(previous)


async def test_cache_health_component_registers(redis_url: str, prefix: str) -> None:
    registry = HealthRegistry()
    register_health_checks(registry, RedisCache(redis_url, prefix=prefix))
    report = await registry.check_all()
    assert report.components["cache"].status == "healthy"
    assert report.components["cache"].critical is False


def test_sync_calls_on_a_dead_redis_are_bounded_and_quiet() -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", timeout=0.1)
    cache.set_sync("k", {"v": 1}, 30.0)
    for _ in range(4):
        started = time.perf_counter()
        got = cache.get_sync("k")
        assert time.perf_counter() - started < 0.15
        assert got is not None and got.value == {"v": 1}
    assert cache.worker is not None and cache.worker.guard.is_open


# -- values keep their types through Redis ---------------------------------------------------


@register_cache_type
class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


@register_cache_type
@dataclasses.dataclass(frozen=True)
class Fill:
    symbol: str
    qty: decimal.Decimal
    side: Side
    at: datetime.datetime | None = None
    tags: tuple[str, ...] = ()


@dataclasses.dataclass
class Unregistered:
    n: int


def same(a: Any, b: Any) -> bool:
    """The same value, of the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a.hex() == b.hex()
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return (
            list(a) == list(b)
            and all(same(v, b[k]) for k, v in a.items())
            and all(same(k, k2) for k, k2 in zip(a, b, strict=True))
        )
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, Side):
        return a is b
    if isinstance(a, Fill):
        return same(vars(a), vars(b))
    if isinstance(a, datetime.datetime | datetime.time):
        return repr(a) == repr(b) and a.fold == b.fold
    return repr(a) == repr(b)  # ints, text, bytes, Decimal, Fraction, dates, UUIDs


async def _round_trip(url: str, prefix: str, key: str, value: Any) -> Any:
    writer = RedisCache(url, prefix=prefix)
    reader = RedisCache(url, prefix=prefix)  # another process: nothing in its local layer
    await writer.set(key, value, 30.0)
    assert writer.worker is not None
    await writer.worker.drain()
    entry = await reader.entry(key)
    assert entry is not None and entry.source == "redis", f"{value!r} did not reach Redis"
    return entry.value


EXAMPLES = [
    ("a", 1, 2.5),
    {1: 100, 2: 200},
    {(1, "a"): {"nested": [1, (2, 3)]}, None: b"\x00\xff"},
    {"$": "tuple", "v": [1]},
    decimal.Decimal("101.2500"),
    datetime.datetime(2026, 3, 8, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York")),
    datetime.datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("America/New_York")),
    datetime.datetime(2026, 1, 2, 3, 4, 5, 6),
    datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=2), "EET")),
    datetime.date(2026, 1, 2),
    datetime.time(9, 30, tzinfo=datetime.UTC),
    datetime.timedelta(days=-1, microseconds=5),
    {1, 2, 3},
    frozenset({"a", ("b", 1)}),
    [float("nan"), float("inf"), -0.0, 10**30],
    fractions.Fraction(1, 3),
    uuid.UUID(int=7),
    Side.SELL,
    Fill("AAPL", decimal.Decimal("10"), Side.BUY, datetime.datetime(2026, 1, 2), ("x",)),
]


@pytest.mark.parametrize("value", EXAMPLES, ids=lambda v: type(v).__name__)
async def test_values_come_back_equal_and_of_the_same_type(
    redis_url: str, prefix: str, value: Any
) -> None:
    """A tuple stays a tuple, {1: 100} keeps its int keys, Decimal, datetime (with its zone
    and fold), bytes, sets and registered dataclasses and enums come back as they went in."""
    got = await _round_trip(redis_url, prefix, "v", value)
    assert same(got, value), f"{value!r} came back as {got!r}"


async def test_an_unstorable_value_stays_in_process_with_one_warning(
    redis_url: str, prefix: str, log_lines: list[str]
) -> None:
    """An unregistered type is not stored in Redis (one warning naming the type and the
    registration function), and an older value of the same key in Redis is not served."""

    @dataclasses.dataclass
    class Quote:  # a type no other test stores: its warning is still to come
        price: float

    writer = RedisCache(redis_url, prefix=prefix)
    reader = RedisCache(redis_url, prefix=prefix)
    assert writer.worker is not None
    await writer.set("k", {"old": 1}, 30.0)
    await writer.worker.drain()
    for n in range(3):
        await writer.set("k", [Quote(n)], 30.0)
    await writer.worker.drain()
    local = await writer.get("k")
    assert local is not None and local.value == [Quote(2)]
    assert await reader.get("k") is None  # neither the new value nor the stale one
    warnings = [line for line in log_lines if "Quote" in line]
    assert len(warnings) == 1 and "register_cache_type" in warnings[0]


_unpickled: list[str] = []


def _record_unpickle(note: str) -> str:
    _unpickled.append(note)
    return note


class _Trap:
    def __reduce__(self) -> Any:
        return (_record_unpickle, ("ran",))


async def test_redis_payloads_are_never_unpickled(redis_url: str, prefix: str) -> None:
    """A pickle (or an old untyped JSON entry) written into the cache's keys is a miss: the
    process never runs code chosen by whoever can write to Redis."""
    reader = RedisCache(redis_url, prefix=prefix)
    client = aioredis.Redis.from_url(redis_url)
    now = time.time()
    try:
        await client.set(f"{prefix}:cache:p", b"P" + pickle.dumps((_Trap(), now, 30.0)))
        await client.set(f"{prefix}:cache:j", b'J{"v":[1,2],"t":%f,"ttl":30}' % now)
        await client.set(f"{prefix}:cache:t", b'T1{"v":{"$":"dataclass","n":"os.system"}}')
    finally:
        await client.aclose()
    for key in ("p", "j", "t"):
        assert await reader.get(key) is None
    assert _unpickled == []


def test_register_cache_type_refuses_what_it_cannot_rebuild() -> None:
    """Only dataclasses and enums register; a name stays bound to its first class."""
    with pytest.raises(TypeError, match="dataclass or an Enum"):
        register_cache_type(dict)

    @dataclasses.dataclass
    class Other:
        x: int

    with pytest.raises(ValueError, match="already registered"):
        register_cache_type(Other, name=f"{Fill.__module__}.{Fill.__qualname__}")
    assert register_cache_type(Fill) is Fill  # registering again is harmless


hashable_atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.decimals(allow_nan=False),
    st.fractions(),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.dates(),
    st.times(timezones=st.none() | st.timezones()),
    st.timedeltas(),
    st.uuids(),
    st.sampled_from(Side),
)
hashables = st.recursive(
    hashable_atoms,
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=5,
)
fills = st.builds(
    Fill,
    st.text(max_size=5),
    st.decimals(),
    st.sampled_from(Side),
    st.none() | st.datetimes(timezones=st.none() | st.timezones()),
    st.lists(st.text(max_size=3), max_size=2).map(tuple),
)
storable = st.recursive(
    hashable_atoms | st.floats() | st.decimals() | fills,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=3) | st.sampled_from(["$", "v", "n"]), inner, max_size=3)
        | st.dictionaries(hashables, inner, max_size=3)
        | st.sets(hashables, max_size=3)
        | st.frozensets(hashables, max_size=3)
    ),
    max_leaves=10,
)


@given(value=storable)
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_generated_values_survive_redis_with_their_types(
    redis_url: str, prefix: str, value: Any
) -> None:
    """Whatever storable value goes into the Redis cache comes out of another process's
    cache the same, type for type."""
    key = uuid.uuid4().hex
    got = await _round_trip(redis_url, prefix, key, value)
    assert same(got, value), f"{value!r} came back as {got!r}"


class _Odd(str):
    """A str subclass: it would come back as a plain str, so it must not go to Redis."""


unstorable_leaves = st.one_of(
    st.builds(Unregistered, st.integers()),
    st.text(max_size=3).map(_Odd),
    st.builds(collections.OrderedDict, st.dictionaries(st.text(max_size=2), st.integers())),
    st.just(object()),
    st.complex_numbers(allow_nan=False),
)


@st.composite
def with_unstorable(draw: st.DrawFn) -> Any:
    """A storable container with one unstorable value somewhere inside."""
    leaf = draw(unstorable_leaves)
    wrap = draw(
        st.sampled_from(
            [
                lambda v: v,
                lambda v: [1, v],
                lambda v: (v, "x"),
                lambda v: {"k": {"n": [v]}},
                lambda v: {1: v},
                lambda v: Fill("AAPL", decimal.Decimal(1), Side.BUY, tags=(v,)),
            ]
        )
    )
    return wrap(leaf)


@given(value=with_unstorable())
@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_unstorable_values_stay_in_process(redis_url: str, prefix: str, value: Any) -> None:
    """A value with anything the codec cannot rebuild exactly is served from the process that
    stored it and is a miss for every other process, never a changed value."""
    key = uuid.uuid4().hex
    writer = RedisCache(redis_url, prefix=prefix)
    reader = RedisCache(redis_url, prefix=prefix)
    await writer.set(key, value, 30.0)
    assert writer.worker is not None
    await writer.worker.drain()
    assert await reader.get(key) is None
    local = await writer.get(key)
    assert local is not None and type(local.value) is type(value)


def test_the_redis_guard_is_a_breaker(fake_clock: FakeClock) -> None:
    """The guard around Redis is a Breaker (outside the registry): it fails fast while Redis
    is down, lets one probe through per interval and recovers on its success."""
    from resilient import Breaker, breakers
    from resilient._backends.redis import RedisGuard

    guard = RedisGuard(failure_threshold=2, probe_interval=1.0)
    assert isinstance(guard, Breaker) and guard.name not in breakers
    assert guard.allow() and not guard.is_open
    guard.failure(ConnectionError("refused"))
    assert guard.allow() and not guard.is_open  # one failure is not an outage
    guard.failure(ConnectionError("refused"))
    assert guard.is_open and guard.failures == 2 and "ConnectionError" in guard.last_error
    assert not guard.allow() and not guard.allow_peek()
    fake_clock.advance(1.0)
    assert guard.allow_peek() and guard.allow()  # the probe
    assert not guard.allow() and not guard.allow_peek()  # only one
    guard.failure(ConnectionError("still refused"))  # the probe failed: open again
    assert guard.is_open and not guard.allow()
    fake_clock.advance(1.0)
    assert guard.allow()
    guard.success()
    assert not guard.is_open and guard.failures == 0 and guard.allow()
