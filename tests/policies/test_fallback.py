"""@fallback: value, func, last good result with age, filters, risk limits, episodes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from _policy_support import MODES, Script, invoke, make

from resilient import (
    CachedValue,
    CircuitOpenError,
    EventKind,
    FakeClock,
    RiskLimitError,
    TradingDisabledError,
    fallback,
    fallback_status,
    get_fallback_cache,
    set_fallback_cache,
)
from resilient._policies.cache import MemoryCache, cache_key
from resilient.testing import capture_events


@pytest.fixture(autouse=True)
def clock(fake_clock: FakeClock) -> FakeClock:
    return fake_clock


@pytest.fixture
def name() -> str:
    return f"fb-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("mode", MODES)
async def test_value_fallback(mode: str, name: str) -> None:
    """A failure returns the fallback value; a success returns the result."""
    fn = fallback(value=-1.0, name=name)(make(mode, Script(ConnectionError("x"), 5.0)))
    assert await invoke(fn) == -1.0
    assert await invoke(fn) == 5.0


@pytest.mark.parametrize("mode", MODES)
async def test_func_fallback_gets_the_error_and_arguments(mode: str, name: str) -> None:
    """func(exc, *args, **kwargs) computes the fallback."""
    seen: list[Any] = []

    def backup(exc: Exception, symbol: str, *, venue: str) -> str:
        seen.append((type(exc), symbol, venue))
        return f"backup {symbol}"

    fn = fallback(func=backup, name=name)(make(mode, Script(ConnectionError("x"))))
    assert await invoke(fn, "AAPL", venue="XNAS") == "backup AAPL"
    assert seen == [(ConnectionError, "AAPL", "XNAS")]


async def test_async_func_fallback_for_async_function(name: str) -> None:
    """An async fallback function is awaited."""

    async def backup(exc: Exception, symbol: str) -> str:
        await asyncio.sleep(0)
        return symbol.lower()

    fn = fallback(func=backup, name=name)(make("async", Script(TimeoutError("slow"))))
    assert await fn("AAPL") == "aapl"


def test_async_func_fallback_on_sync_function_is_refused(name: str) -> None:
    """A sync function cannot await an async fallback: refused at decoration."""

    async def backup(exc: Exception) -> int:
        return 1

    with pytest.raises(TypeError, match="async"):
        fallback(func=backup, name=name)(lambda: 1)


@pytest.mark.parametrize("mode", MODES)
async def test_cache_serves_last_good_result_per_arguments(
    mode: str, name: str, clock: FakeClock
) -> None:
    """cache=True returns the last good result for the same arguments, with its age."""
    prices = {"AAPL": 190.0, "MSFT": 410.0}
    down = False

    def quote(symbol: str) -> float:
        if down:
            raise ConnectionError("feed down")
        return prices[symbol]

    fn = fallback(cache=True, name=name)(make(mode, quote))
    assert await invoke(fn, "AAPL") == 190.0
    clock.advance(12)
    assert await invoke(fn, "MSFT") == 410.0
    down = True
    with capture_events() as events:
        assert await invoke(fn, "AAPL") == 190.0
        assert await invoke(fn, "MSFT") == 410.0
    ages = [e.cache_age for e in events if e.kind is EventKind.FALLBACK_SERVED]
    assert ages == [pytest.approx(12.0), pytest.approx(0.0)]
    assert all(e.source == "cache" for e in events if e.kind is EventKind.FALLBACK_SERVED)


@pytest.mark.parametrize("mode", MODES)
async def test_cache_miss_reraises_the_original(mode: str, name: str) -> None:
    """Nothing cached for these arguments: the original error is raised."""
    error = ConnectionError("down")
    fn = fallback(cache=True, name=name)(make(mode, Script(error)))
    with pytest.raises(ConnectionError) as info:
        await invoke(fn, "never-seen")
    assert info.value is error


@pytest.mark.parametrize("mode", MODES)
async def test_cache_then_value(mode: str, name: str) -> None:
    """cache=True with value=: the value when nothing is cached."""
    fn = fallback(cache=True, value=0.0, name=name)(make(mode, Script(ConnectionError("x"))))
    assert await invoke(fn, "X") == 0.0


@pytest.mark.parametrize("mode", MODES)
async def test_cached_results_expire(mode: str, name: str, clock: FakeClock) -> None:
    """An entry older than cache_ttl is not served."""
    fn = fallback(cache=True, cache_ttl=60, name=name)(
        make(mode, Script(1.0, ConnectionError("x"), ConnectionError("y")))
    )
    assert await invoke(fn) == 1.0
    clock.advance(59)
    assert await invoke(fn) == 1.0
    clock.advance(2)
    with pytest.raises(ConnectionError):
        await invoke(fn)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "on", [ConnectionError, (KeyError, ConnectionError), lambda e: "feed" in str(e)]
)
async def test_on_filters_what_is_replaced(mode: str, on: Any, name: str) -> None:
    """on= chooses the errors replaced; others propagate."""
    fn = fallback(value="fb", on=on, name=name)(
        make(mode, Script(ConnectionError("feed down"), ValueError("bad")))
    )
    assert await invoke(fn) == "fb"
    with pytest.raises(ValueError):
        await invoke(fn)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "error",
    [RiskLimitError("trading.max_order_size", 10, 20), TradingDisabledError("features.live")],
)
async def test_risk_limits_never_fall_back(mode: str, error: Exception, name: str) -> None:
    """A refused order stays refused, whatever on= says."""
    fn = fallback(value="filled", on=Exception, name=name)(make(mode, Script(error)))
    with pytest.raises(RiskLimitError) as info:
        await invoke(fn)
    assert info.value is error


@pytest.mark.parametrize("mode", MODES)
async def test_open_circuit_is_a_reason_to_fall_back(mode: str, name: str) -> None:
    """An open circuit is replaced even when on= names other errors."""
    fn = fallback(value="stale", on=KeyError, name=name)(
        make(mode, Script(CircuitOpenError("svc", "open", 5.0)))
    )
    assert await invoke(fn) == "stale"


@pytest.mark.parametrize("mode", MODES)
async def test_degraded_episode_logged_once_and_counted(mode: str, name: str) -> None:
    """Serving fallbacks marks the name degraded; only the first of an episode is flagged,
    every one is counted; a success ends the episode."""
    script = Script(ConnectionError("a"), ConnectionError("b"), "ok", ConnectionError("c"))
    fn = fallback(value=0, name=name)(make(mode, script))
    with capture_events() as events:
        await invoke(fn)
        await invoke(fn)
        assert fallback_status()[name].degraded
        assert await invoke(fn) == "ok"
        assert not fallback_status()[name].degraded
        await invoke(fn)
    served = [e for e in events if e.kind is EventKind.FALLBACK_SERVED]
    assert [e.first_in_episode for e in served] == [True, False, True]
    assert [e.kind for e in events].count(EventKind.FALLBACK_RECOVERED) == 1
    status = fallback_status()[name]
    assert (status.served, status.episodes, status.last_category) == (3, 2, "network")


def test_choice_is_required_and_unambiguous(name: str) -> None:
    """fallback() needs value=, func= or cache=True, and not value and func together."""
    with pytest.raises(ValueError, match="needs"):
        fallback(name=name)
    with pytest.raises(ValueError, match="not both"):
        fallback(value=1, func=lambda e: 2, name=name)


async def test_pluggable_cache(name: str) -> None:
    """Another FallbackCache (the Redis one) plugs in with set_fallback_cache."""

    class Recording(MemoryCache):
        def __init__(self) -> None:
            super().__init__()
            self.keys: list[str] = []

        async def set(self, key: str, value: Any, ttl: float) -> None:
            self.keys.append(key)
            await super().set(key, value, ttl)

    store = Recording()
    previous = set_fallback_cache(store)
    try:
        assert get_fallback_cache() is store
        fn = fallback(cache=True, name=name)(make("async", Script(3.0, ConnectionError("x"))))
        assert await fn("AAPL", token="s3cr3t-token") == 3.0
        assert await fn("AAPL", token="s3cr3t-token") == 3.0
        assert store.keys == [cache_key(name, ("AAPL",), {"token": "s3cr3t-token"})]
        assert "s3cr3t" not in store.keys[0] and store.keys[0].startswith(name + ":")
    finally:
        set_fallback_cache(previous)
    with pytest.raises(TypeError, match="FallbackCache"):
        set_fallback_cache(object())  # type: ignore[arg-type]


def test_memory_cache_is_bounded(clock: FakeClock) -> None:
    """The in-process cache evicts the least recently used entries beyond max_entries."""
    cache = MemoryCache(max_entries=2)
    cache.set_sync("a", 1, 10)
    cache.set_sync("b", 2, 10)
    assert cache.get_sync("a") == CachedValue(1, 0.0)
    cache.set_sync("c", 3, 10)
    assert cache.get_sync("b") is None
    assert len(cache) == 2


# -- the in-process cache: isolation, typed keys, arguments that cannot be keyed ----------


@pytest.fixture
def log_lines() -> Any:
    """The package's log lines while the test runs."""
    from resilient import disable_logging, enable_logging

    lines: list[str] = []
    enable_logging("DEBUG", json_lines=False, sink=lines.append)
    yield lines
    disable_logging()


@pytest.mark.parametrize("mode", MODES)
async def test_cached_value_is_isolated_from_callers(mode: str, name: str) -> None:
    """A caller mutating the result it got (fresh or from the cache), or the function mutating
    the object it returned, never changes the last good value."""
    state = {"down": False}
    account = {"id": "A-1", "cash": 100.0, "positions": [{"symbol": "AAPL", "qty": 10}]}

    def get_account(account_id: str) -> dict[str, Any]:
        if state["down"]:
            raise ConnectionError("broker down")
        return account  # the same object every time, as a client's own cache would

    fn = fallback(cache=True, name=name)(make(mode, get_account))
    got = await invoke(fn, "A-1")
    got["cash"] = -1.0
    got["positions"][0]["qty"] = 0
    account["positions"].append({"symbol": "MSFT", "qty": 1})  # the function's object changes
    state["down"] = True
    served = await invoke(fn, "A-1")
    snapshot = {"id": "A-1", "cash": 100.0, "positions": [{"symbol": "AAPL", "qty": 10}]}
    assert served == snapshot  # the result as it was returned
    served["cash"] = 5.0
    served["positions"].clear()
    again = await invoke(fn, "A-1")
    assert again == snapshot
    assert again is not served


def test_memory_cache_snapshots_values_it_stores(clock: FakeClock) -> None:
    """MemoryCache itself hands out copies of mutable values and shares immutable ones."""
    cache = MemoryCache()
    value = {"bars": [1.0, 2.0]}
    cache.set_sync("k", value, 10)
    value["bars"].append(3.0)
    first = cache.get_sync("k")
    assert first is not None and first.value == {"bars": [1.0, 2.0]}
    first.value["bars"].clear()
    second = cache.get_sync("k")
    assert second is not None and second.value == {"bars": [1.0, 2.0]}
    frozen = ("AAPL", 190.0, frozenset({1}))
    cache.set_sync("t", frozen, 10)
    hit = cache.get_sync("t")
    assert hit is not None and hit.value is frozen  # immutable: no copy needed


class _Account:
    """An argument whose repr hides what tells two of them apart."""

    def __init__(self, number: str) -> None:
        self.number = number

    def __repr__(self) -> str:
        return "Account(***)"


@pytest.mark.parametrize("mode", MODES)
async def test_arguments_with_the_same_repr_never_share_a_slot(mode: str, name: str) -> None:
    """Account B-2 is never served account A-1's data, though both print the same."""
    state = {"down": False}

    def balance(account: Any) -> str:
        if state["down"]:
            raise ConnectionError("broker down")
        return f"balance of {account.number}"

    fn = fallback(cache=True, name=name)(make(mode, balance))
    a1 = _Account("A-1")
    assert await invoke(fn, a1) == "balance of A-1"
    state["down"] = True
    assert await invoke(fn, a1) == "balance of A-1"
    with pytest.raises(ConnectionError):
        await invoke(fn, _Account("B-2"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("first", "second"),
    [(1, 1.0), (1, True), (1, "1"), ("1", b"1"), ((1, 2), [1, 2]), ({"a": 1}, [("a", 1)])],
)
async def test_keys_are_typed(mode: str, first: Any, second: Any, name: str) -> None:
    """Equal-looking arguments of different types have different slots."""
    fn = fallback(cache=True, name=name)(make(mode, Script("first", ConnectionError("x"))))
    assert await invoke(fn, first) == "first"
    with pytest.raises(ConnectionError):
        await invoke(fn, second)


class _Unreadable:
    """Cannot be printed, hashed, compared by value, copied or weakly referenced."""

    __slots__ = ()

    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    def __hash__(self) -> int:
        raise RuntimeError("hash exploded")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq exploded")

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise RuntimeError("cannot reduce")


@pytest.mark.parametrize("mode", MODES)
async def test_an_argument_that_cannot_be_keyed_only_disables_caching(
    mode: str, name: str, log_lines: list[str]
) -> None:
    """The call succeeds; its failure re-raises the original error (nothing was cached); the
    skipped caching is logged once, naming the function and the type, never the value."""
    error = ConnectionError("down")
    fn = fallback(cache=True, name=name)(make(mode, Script("ok", "ok", error, error)))
    bad = _Unreadable()
    assert await invoke(fn, bad) == "ok"
    assert await invoke(fn, "AAPL", extra=[bad]) == "ok"
    with pytest.raises(ConnectionError) as info:
        await invoke(fn, bad)
    assert info.value is error
    with pytest.raises(ConnectionError):
        await invoke(fn, "AAPL", extra=[bad])
    logged = [line for line in log_lines if "cannot be keyed" in line]
    assert len(logged) == 1, log_lines
    assert name in logged[0] and "_Unreadable" in logged[0]


@pytest.mark.parametrize("mode", MODES)
async def test_a_raising_repr_never_fails_the_call(mode: str, name: str) -> None:
    """An argument whose __repr__ and __hash__ raise still gets its call, and its own slot."""

    class Token:
        def __repr__(self) -> str:
            raise RuntimeError("repr exploded")

        def __hash__(self) -> int:
            raise RuntimeError("hash exploded")

    fn = fallback(cache=True, name=name)(make(mode, Script(1, ConnectionError("x"), 2)))
    token = Token()
    assert await invoke(fn, token) == 1
    assert await invoke(fn, token) == 1  # served: the same object has its own slot
    assert await invoke(fn, Token()) == 2


async def test_a_proxy_read_with_an_argument_that_cannot_be_keyed_runs_uncached() -> None:
    """The trading proxies key their cached reads the same way: an argument that cannot be
    keyed never fails the read, and a later failure is not answered from another slot."""
    from resilient.config import current_config
    from resilient.integration import ResilienceFactory

    class Feed:
        def __init__(self) -> None:
            self.down = False

        async def get_current_price(self, symbol: Any) -> float:
            if self.down:
                raise ConnectionError("feed down")
            return 101.5

    factory = ResilienceFactory(current_config(), database=False, logging=False)
    feed = Feed()
    data = factory.create_resilient_market_data(feed, f"feed-{uuid.uuid4().hex[:8]}")
    try:
        bad = _Unreadable()
        assert await data.get_current_price(bad) == 101.5
        assert await data.get_current_price(_Account("A-1")) == 101.5
        feed.down = True
        with pytest.raises(ConnectionError):
            await data.get_current_price(bad)
        # prints like A-1, never gets its slot (the circuit may have opened meanwhile)
        with pytest.raises((ConnectionError, CircuitOpenError)):
            await data.get_current_price(_Account("B-2"))
    finally:
        await factory.shutdown()
