"""Fallback properties: the fallback is served exactly when the call failed, through the stack."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import enum
import itertools
import math
from typing import Any

from _budget import examples
from hypothesis import given
from hypothesis import strategies as st

from resilient import CircuitOpenError, breakers, fallback, fallback_status, resilient
from resilient._policies.cache import UnkeyableError, cache_key, cache_key_or_none
from resilient.testing import (
    FlakyService,
    Outcome,
    assert_fallback_iff_failed,
    assert_no_call_while_open,
    assert_within_policy,
    reset_state,
    use_fake_clock,
)
from resilient.testing.strategies import outcomes

FALLBACK = -1.0

gaps = st.integers(min_value=0, max_value=120).map(lambda q: q / 4)  # 0 .. 30 s
invocations = st.lists(gaps, min_size=1, max_size=12)
schedules = st.lists(outcomes(max_latency=2.0, hang_seconds=20.0), max_size=40)
stacks = st.fixed_dictionaries(
    {
        "failure_threshold": st.integers(min_value=1, max_value=4),
        "reset_timeout": st.sampled_from([2.0, 15.0, 60.0]),
        "max_attempts": st.integers(min_value=1, max_value=4),
        "initial_delay": st.sampled_from([0.25, 1.0]),
        "max_delay": st.sampled_from([1.0, 4.0]),
    }
)


def _stack(service: FlakyService, options: dict[str, Any], asynchronous: bool) -> tuple[str, Any]:
    # One name for every example, with the registries reset in between: per-name state
    # (fallback episodes, metrics) stays small however many examples run.
    reset_state(forget_breakers=True)
    name = "prop-stack"
    decorate = resilient(name, value=FALLBACK, budget=False, **options)
    if asynchronous:

        async def get_price(symbol: str) -> float:
            return 101.25

        return name, decorate(service.wrap(get_price))
    return name, decorate(service.wrap(lambda symbol: 101.25))


def _check_invocation(
    name: str, service: FlakyService, before: int, result: float, options: dict[str, Any]
) -> None:
    calls = service.calls[before:]
    assert_fallback_iff_failed(result, calls, fallback=FALLBACK)
    assert_no_call_while_open(calls)
    assert_within_policy(
        calls, max_attempts=options["max_attempts"], max_delay=options["max_delay"]
    )
    status = fallback_status()[name]
    assert status.degraded == (result == FALLBACK)


@given(schedule=schedules, waits=invocations, options=stacks)
@examples(ci=1800)
def test_sync_stack_serves_fallback_exactly_on_failure(
    schedule: list[Outcome], waits: list[float], options: dict[str, Any]
) -> None:
    """fallback(retry(breaker(fn))): every invocation returns the real price or, exactly when
    it failed, the fallback; no call passes an open circuit; retries stay within policy."""
    with use_fake_clock() as clock:
        service = FlakyService(schedule)
        name, get_price = _stack(service, options, asynchronous=False)
        service.observe = lambda: breakers.get(name).state
        served = 0
        try:
            for wait in waits:
                clock.advance(wait)
                before = len(service.calls)
                result = get_price("AAPL")
                served += result == FALLBACK
                _check_invocation(name, service, before, result, options)
            assert fallback_status()[name].served == served
        finally:
            breakers.remove(name)


@given(schedule=schedules, waits=invocations, options=stacks)
@examples(ci=1500)
async def test_async_stack_serves_fallback_exactly_on_failure(
    schedule: list[Outcome], waits: list[float], options: dict[str, Any]
) -> None:
    """The same stack on an ``async def`` function."""
    with use_fake_clock() as clock:
        service = FlakyService(schedule)
        name, get_price = _stack(service, options, asynchronous=True)
        service.observe = lambda: breakers.get(name).state
        try:
            for wait in waits:
                clock.advance(wait)
                before = len(service.calls)
                result = await get_price("AAPL")
                _check_invocation(name, service, before, result, options)
        finally:
            breakers.remove(name)


symbols = st.sampled_from(["AAPL", "MSFT", "SPY"])


@given(
    steps=st.lists(st.tuples(gaps, symbols), min_size=1, max_size=15),
    schedule=schedules,
    ttl=st.sampled_from([3.3, 10.7, 45.1]),
)
@examples(ci=1200)
def test_cached_fallback_serves_the_last_good_result(
    steps: list[tuple[float, str]], schedule: list[Outcome], ttl: float
) -> None:
    """``fallback(cache=True)`` serves the last good result for the same arguments while it is
    younger than the TTL, and re-raises the original error when there is none."""
    with use_fake_clock() as clock:
        service = FlakyService(schedule)
        quotes = itertools.count()
        fn = service.wrap(lambda symbol: f"{symbol}#{next(quotes)}")
        reset_state(
            forget_breakers=True
        )  # an empty cache and fresh fallback counters for every example
        get_quote = fallback(cache=True, cache_ttl=ttl, name="prop-cache")(fn)
        last_good: dict[str, tuple[str, float]] = {}
        for wait, symbol in steps:
            clock.advance(wait)
            before = len(service.calls)
            try:
                result: str | None = get_quote(symbol)
                error = None
            except Exception as exc:
                result, error = None, exc
            call = service.calls[before]
            now = clock.monotonic()
            if not call.failed:
                assert result == call.result
                last_good[symbol] = (call.result, call.ended or now)
                continue
            cached = last_good.get(symbol)
            if cached is not None and now < cached[1] + ttl:
                assert result == cached[0], f"expected the cached {cached[0]!r}"
            else:
                assert error is call.exception, "the original error must be re-raised"


@given(schedule=schedules, waits=invocations)
@examples(ci=600)
def test_fallback_func_gets_the_original_error(schedule: list[Outcome], waits: list[float]) -> None:
    """``fallback(func=f)`` calls ``f(exc, *args)`` with the error that ended the call."""
    seen: list[BaseException] = []

    def stale_price(exc: BaseException, symbol: str) -> float:
        seen.append(exc)
        return FALLBACK

    with use_fake_clock() as clock:
        service = FlakyService(schedule)
        reset_state(forget_breakers=True)
        name = "prop-func"
        decorate = resilient(name, func=stale_price, failure_threshold=2, max_attempts=2)
        get_price = decorate(service.wrap(lambda symbol: 101.25))
        try:
            for wait in waits:
                clock.advance(wait)
                before, handled = len(service.calls), len(seen)
                result = get_price("AAPL")
                calls = service.calls[before:]
                assert_fallback_iff_failed(result, calls, fallback=FALLBACK)
                if result == FALLBACK:
                    exc = seen[handled]
                    if calls:
                        assert exc is calls[-1].exception or isinstance(exc, CircuitOpenError)
                    else:
                        assert isinstance(exc, CircuitOpenError)
        finally:
            breakers.remove(name)


# -- typed cache keys: two arguments share a slot exactly when they are the same value ------


class Lookalike:
    """Compared by identity, printed alike: only the very same object may share a slot."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def __repr__(self) -> str:
        return "Lookalike(...)"


class ValueLookalike:
    """Compared by value, printed alike: equal payloads share a slot, others never do."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return type(other) is ValueLookalike and other.payload == self.payload

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "ValueLookalike(...)"


@dataclasses.dataclass(frozen=True)
class Order:
    symbol: str
    qty: Any


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    st.integers(),
    st.integers(min_value=10**400, max_value=10**401),
    st.floats(),
    st.sampled_from([0.0, -0.0, 1.0, float("inf"), float("nan")]),
    st.text(max_size=6),
    st.binary(max_size=6),
    st.decimals(allow_nan=False, places=2, min_value=-100, max_value=100),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.dates(),
    st.timedeltas(),
    st.uuids(),
    st.sampled_from(Side),
)
hashables = st.recursive(
    atoms,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=4,
).filter(lambda v: not _has_nan(v))
arguments = st.recursive(
    atoms
    | st.builds(Lookalike, st.integers(0, 3))
    | st.builds(ValueLookalike, st.integers(0, 3))
    | st.builds(Order, st.sampled_from(["AAPL", "MSFT"]), st.integers(0, 3)),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(hashables, inner, max_size=3)
        | st.sets(hashables, max_size=3)
        | st.frozensets(hashables, max_size=3)
    ),
    max_leaves=8,
)


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, tuple | frozenset):
        return any(_has_nan(v) for v in value)
    return False


def same(a: Any, b: Any) -> bool:
    """The same value, of the same types all the way down (identity for identity objects)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a.hex() == b.hex()
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(same(k, k2) and same(v, v2) for k2, v2 in b.items()) for k, v in a.items()
        )
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, Lookalike | Side):
        return a is b
    if isinstance(a, ValueLookalike | Order):
        return same(vars(a), vars(b))
    if isinstance(a, datetime.datetime | datetime.time):
        return repr(a) == repr(b) and a.fold == b.fold
    return repr(a) == repr(b)  # ints, text, bytes, Decimal, dates, UUIDs: repr is exact


@st.composite
def lookalike_of(draw: st.DrawFn, value: Any) -> Any:
    """A value that prints, compares or looks like ``value`` (or is ``value`` itself)."""
    kind = type(value)
    choices: list[Any] = [value, copy.deepcopy(value)]
    if kind is int:
        choices += [float(value) if abs(value) < 2**53 else value, str(value), value + 1]
        if value in (0, 1):
            choices.append(bool(value))
    elif kind is float and math.isfinite(value):
        choices += [-value, str(value)]
        if value.is_integer():
            choices.append(int(value))
    elif kind is str:
        choices += [value.encode("utf-8", "surrogatepass"), value + "x"]
    elif kind is list:
        choices += [tuple(value), [draw(lookalike_of(v)) for v in value]]
    elif kind is tuple:
        choices += [list(value), tuple(draw(lookalike_of(v)) for v in value)]
    elif kind is dict:
        choices += [list(value.items()), {k: draw(lookalike_of(v)) for k, v in value.items()}]
        choices.append(dict(reversed(list(value.items()))))
    elif kind is set:
        choices += [frozenset(value)]
    elif kind is Lookalike:
        choices += [Lookalike(value.payload)]
    elif kind is ValueLookalike:
        choices += [ValueLookalike(value.payload), ValueLookalike(value.payload + 1)]
    elif kind is Order:
        choices += [Order(value.symbol, float(value.qty)), Order(value.symbol, value.qty + 1)]
    return draw(st.sampled_from(choices))


@given(data=st.data(), first=arguments)
@examples(ci=1200)
def test_two_arguments_share_a_slot_exactly_when_they_are_the_same(
    data: st.DataObject, first: Any
) -> None:
    """cache_key(a) == cache_key(b) iff a and b are the same typed value: never for two
    values that merely print alike or compare equal across types (1, 1.0, True, "1")."""
    second = data.draw(lookalike_of(first) | arguments, label="second")
    kwarg = data.draw(st.sampled_from([{}, {"account": first}]), label="kwargs")
    key_a = cache_key("prop-key", (first,), kwarg)
    key_b = cache_key("prop-key", (second,), dict.fromkeys(kwarg, second))
    assert (key_a == key_b) == same(first, second), (first, second)
    assert key_a == cache_key("prop-key", (first,), kwarg)  # deterministic


@given(data=st.data(), first=arguments)
@examples(ci=500)
async def test_a_cached_fallback_is_only_served_for_the_same_arguments(
    data: st.DataObject, first: Any
) -> None:
    """Through the decorator: after a success for ``a``, a failing call for ``b`` gets ``a``'s
    result exactly when ``b`` is ``a``, and otherwise the original error."""
    second = data.draw(lookalike_of(first), label="second")
    asynchronous = data.draw(st.booleans(), label="async")
    reset_state(forget_breakers=True)
    results = itertools.count()
    error = ConnectionError("down")

    def body(arg: Any) -> int:
        n = next(results)
        if n:
            raise error
        return n

    if asynchronous:

        async def afn(arg: Any) -> int:
            return body(arg)

        fn: Any = fallback(cache=True, name="prop-slots")(afn)
    else:
        fn = fallback(cache=True, name="prop-slots")(body)
    got = fn(first)
    assert (await got if asynchronous else got) == 0
    outcome: Any
    try:
        got = fn(second)
        outcome = await got if asynchronous else got
    except ConnectionError as exc:
        outcome = exc
    if same(first, second):
        assert outcome == 0, (first, second)
    else:
        assert outcome is error, (first, second)


class Hostile:
    """Every dunder a key builder might touch raises."""

    __slots__ = ()

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise RuntimeError("reduce")


hostile_values = st.recursive(
    st.builds(Hostile) | atoms, lambda inner: st.lists(inner, max_size=3), max_leaves=6
)


@given(value=hostile_values)
@examples(ci=300)
def test_keying_never_raises_anything_but_unkeyable(value: Any) -> None:
    """An argument holding something that cannot be keyed gives UnkeyableError (and None from
    cache_key_or_none), never another exception."""
    try:
        key: str | None = cache_key("prop-hostile", (value,), {})
    except UnkeyableError:
        key = None
    assert (key is None) == _holds_hostile(value)
    assert cache_key_or_none("prop-hostile", (value,), {}) == key


def _holds_hostile(value: Any) -> bool:
    if isinstance(value, list):
        return any(_holds_hostile(v) for v in value)
    return isinstance(value, Hostile)
