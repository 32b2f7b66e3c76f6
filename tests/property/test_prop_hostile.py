"""Hostile input properties: raising user callbacks never wedge a breaker or replace an error;
every walk over an exception's chain ends, whatever graph the chain links form."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import pybreaker
import pytest
from _budget import examples
from hypothesis import given
from hypothesis import strategies as st

from resilient import CircuitOpenError, add_hook, breaker, breakers, classify, retry
from resilient._core.classify import MAX_CHAIN, _chain
from resilient._core.events import category_of
from resilient.errors import is_transient, proves_not_sent, retry_after
from resilient.testing import use_fake_clock, zero_wait_retries

_names = itertools.count()


class Bug(Exception):
    """Raised by a broken user callback."""


# Which callbacks are broken, and on which calls: (exclude, listener, hook) × call index mask.
callbacks = st.fixed_dictionaries(
    {
        "exclude": st.sampled_from(["none", "raises", "raises-odd", "attr"]),
        "listener": st.sets(st.sampled_from(["before_call", "success", "failure", "state_change"])),
        "hook": st.booleans(),
    }
)
ERRORS: list[Callable[[], Exception]] = [
    lambda: ConnectionError("down"),
    lambda: TimeoutError("slow"),
    lambda: KeyError("business"),
    lambda: RuntimeError("wrapped"),
]
schedule = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40).map(lambda q: q / 4),  # gap 0 .. 10 s
        st.one_of(st.none(), st.integers(min_value=0, max_value=len(ERRORS) - 1)),
        st.booleans(),  # a cyclic cause chain on the error
    ),
    min_size=1,
    max_size=25,
)
params = st.fixed_dictionaries(
    {
        "failure_threshold": st.integers(min_value=1, max_value=4),
        "reset_timeout": st.sampled_from([1.0, 5.0]),
        "success_threshold": st.integers(min_value=1, max_value=3),
        "half_open_max_calls": st.integers(min_value=1, max_value=3),
    }
)


def _exclude(kind: str) -> Callable[[BaseException], bool] | None:
    count = itertools.count()
    if kind == "none":
        return None
    if kind == "attr":
        return lambda e: e.status == 422  # type: ignore[attr-defined]

    def predicate(exc: BaseException) -> bool:
        if kind == "raises" or next(count) % 2:
            raise Bug("predicate")
        return isinstance(exc, KeyError)

    return predicate


class BrokenListener(pybreaker.CircuitBreakerListener):
    def __init__(self, broken: set[str]) -> None:
        self.broken = broken

    def _maybe(self, what: str) -> None:
        if what in self.broken:
            raise Bug(what)

    def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        self._maybe("before_call")

    def success(self, cb: Any) -> None:
        self._maybe("success")

    def failure(self, cb: Any, exc: BaseException) -> None:
        self._maybe("failure")

    def state_change(self, cb: Any, old: Any, new: Any) -> None:
        self._maybe("state_change")


def _error(index: int | None, cyclic: bool) -> Exception | None:
    if index is None:
        return None
    exc = ERRORS[index]()
    if cyclic:
        other = RuntimeError("loop")
        exc.__cause__ = other
        other.__cause__ = exc
    return exc


def _hook(event: Any) -> None:
    raise Bug("hook")


async def _run(
    steps: list[tuple[float, int | None, bool]],
    options: dict[str, Any],
    broken: dict[str, Any],
    asynchronous: bool,
) -> None:
    name = f"prop-hostile-{next(_names)}"
    remove = add_hook(_hook) if broken["hook"] else None
    try:
        with use_fake_clock() as clock:
            pending: list[Exception | None] = []

            def body() -> str:
                err = pending.pop()
                if err is not None:
                    raise err
                return "ok"

            if asynchronous:

                async def target() -> str:
                    await asyncio.sleep(0)
                    return body()

                fn: Callable[[], Any] = target
            else:
                fn = body
            exclude = _exclude(broken["exclude"])
            guarded = breaker(name, exclude=exclude or (), **options)(fn)
            cb = breakers.get(name)
            cb.add_listener(BrokenListener(broken["listener"]))

            async def call() -> Any:
                result = guarded()
                return await result if asynchronous else result

            for gap, index, cyclic in steps:
                clock.advance(gap)
                err = _error(index, cyclic)
                pending[:] = [err]
                outcome: Any
                try:
                    outcome = await call()
                except Exception as exc:
                    outcome = exc
                if isinstance(outcome, CircuitOpenError):
                    assert pending == [err]  # rejected: the function did not run
                elif err is not None:
                    assert outcome is err  # the caller's own error, never a callback's
                else:
                    assert outcome == "ok"
            # A healthy service closes the breaker again, whatever happened before.
            for _ in range(options["success_threshold"] + 1):
                clock.advance(options["reset_timeout"])
                pending[:] = [None]
                with contextlib.suppress(CircuitOpenError):
                    assert await call() == "ok"
            assert cb.state == "closed", cb.snapshot()
            assert cb._permits == 0 or cb.state == "closed"
    finally:
        if remove is not None:
            remove()
        breakers.remove(name)


@given(steps=schedule, options=params, broken=callbacks)
@examples(ci=1500)
def test_sync_breaker_survives_raising_callbacks(
    steps: list[tuple[float, int | None, bool]],
    options: dict[str, Any],
    broken: dict[str, Any],
) -> None:
    """Random schedules × random broken predicates, listeners and hooks (sync): errors are the
    callers' own and a healthy service always closes the circuit."""
    asyncio.run(_run(steps, options, broken, asynchronous=False))


@given(steps=schedule, options=params, broken=callbacks)
@examples(ci=1500)
async def test_async_breaker_survives_raising_callbacks(
    steps: list[tuple[float, int | None, bool]],
    options: dict[str, Any],
    broken: dict[str, Any],
) -> None:
    """The same for ``async def`` functions."""
    await _run(steps, options, broken, asynchronous=True)


# --- chain graphs ----------------------------------------------------------------------------

KINDS: list[Callable[[], BaseException]] = [
    lambda: RuntimeError("wrapper"),
    lambda: ConnectionRefusedError("refused"),
    lambda: ValueError("bad"),
    lambda: TimeoutError("slow"),
    lambda: KeyboardInterrupt(),
    lambda: type("OperationalError", (Exception,), {"__module__": "sqlalchemy.exc"})("db"),
]


@st.composite
def chain_graphs(draw: st.DrawFn) -> BaseException:
    """Up to 40 exceptions whose __cause__, __context__ and .orig point anywhere (cycles,
    self-loops, long paths)."""
    n = draw(st.integers(min_value=1, max_value=40))
    nodes = [KINDS[draw(st.integers(0, len(KINDS) - 1))]() for _ in range(n)]
    targets = st.one_of(st.none(), st.integers(0, n - 1))
    for node in nodes:
        cause, context, orig = draw(targets), draw(targets), draw(targets)
        if cause is not None:
            node.__cause__ = nodes[cause]
        if context is not None:
            node.__context__ = nodes[context]
        if orig is not None:
            node.orig = nodes[orig]  # type: ignore[attr-defined]
    return nodes[draw(st.integers(0, n - 1))]


@given(exc=chain_graphs())
@examples(ci=2000)
def test_every_chain_walk_ends(exc: BaseException) -> None:
    """classify, is_transient, proves_not_sent, retry_after and the chain walk end on any
    graph, and the walk visits each link at most once and at most MAX_CHAIN links."""
    links = list(_chain(exc))
    assert len(links) <= MAX_CHAIN
    assert len({id(link) for link in links}) == len(links)
    assert classify(exc).value
    assert isinstance(is_transient(exc), bool)
    assert isinstance(proves_not_sent(exc), bool)
    assert retry_after(exc) is None
    assert category_of(exc) == classify(exc).value


@given(exc=chain_graphs())
@examples(ci=1000)
def test_retry_reraises_any_chain_as_it_is(exc: BaseException) -> None:
    """A retried function raising an exception with any chain graph ends with that
    exception (or one of the same retried attempts), never a RecursionError."""
    if not isinstance(exc, Exception):
        return
    fn = retry(max_attempts=3, name="prop-chains")(lambda: (_ for _ in ()).throw(exc))
    with zero_wait_retries(), pytest.raises(Exception) as info:
        fn()
    assert info.value is exc
