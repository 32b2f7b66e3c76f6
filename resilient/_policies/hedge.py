"""Hedged reads: when a read is slower than usual, send it once more and take the first answer.

As gRPC's and Envoy's hedging policies and failsafe-go's ``hedgepolicy``: the call starts as one
request; when no answer came after ``delay`` seconds — fixed, or a percentile (``"p95"``) of the
latencies observed for this name — a second request is sent (up to ``max_hedges`` extra), the
first successful answer is returned and the others are cancelled. A failed request does not end
the call while another one is still running.

Only idempotent reads may be hedged: the same request is sent twice. A function whose name is an
order or a cancel (``submit_order``, ``cancel_order``…) is refused at decoration, and the trading
proxies refuse ``hedge_after`` on any method that is not a read. Every extra request is taken from
the retry budget of the same name (given by :func:`use_budgets`: the composition module passes
:func:`resilient._policies.retry.get_retry_budget`), so hedges and retries together stay within the
budget's share of the traffic.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ParamSpec, Protocol, TypeVar, cast

from resilient._core import clock as _clock
from resilient._core import events as _hooks
from resilient._core.deadline import seconds_of
from resilient._core.kinds import guess_kind
from resilient._core.wrapping import Layer, is_async_callable, policy_name, wrap
from resilient.config import current_config

__all__ = ["HedgeStats", "hedge", "hedge_stats", "use_budgets"]

P = ParamSpec("P")
R = TypeVar("R")

_SAMPLES = 256  # latencies remembered per name
_MIN_SAMPLES = 20  # before a percentile delay hedges anything
_RECOMPUTE_EVERY = 16  # samples between two percentile computations


class Budget(Protocol):
    """What a hedge needs of a retry budget: the calls to count, and a retry to spend."""

    calls: int

    def try_spend(self) -> bool: ...


_budget_of: list[Callable[[str], Budget]] = []


def use_budgets(lookup: Callable[[str], Budget]) -> None:
    """Take every hedge from ``lookup(name)``'s budget (set once, by the composition module:
    the retry budget of the same name)."""
    _budget_of[:] = [lookup]


def _parse_delay(delay: float | timedelta | str) -> tuple[float | None, float | None]:
    """``(fixed seconds, percentile 0..1)`` from ``0.05`` / ``"0.05"`` / ``"p95"``."""
    if isinstance(delay, str):
        text = delay.strip().lower()
        if text.startswith("p") and text[1:].isdigit() and 1 <= int(text[1:]) <= 99:
            return None, int(text[1:]) / 100.0
        try:
            delay = float(text)
        except ValueError:
            raise ValueError(
                f'hedge delay must be seconds (0.05) or a latency percentile ("p95"), got {delay!r}'
            ) from None
    seconds = seconds_of(delay, "delay")
    if seconds <= 0:
        raise ValueError(f"hedge delay must be > 0 seconds, got {seconds!r}")
    return seconds, None


@dataclass(frozen=True, slots=True)
class HedgeStats:
    """What the hedges of one name cost and won."""

    name: str
    calls: int
    hedges: int
    """Extra requests sent."""
    wins: int
    """Calls answered by a hedge rather than the first request."""
    budget_refused: int
    """Hedges not sent because the retry budget was spent."""
    delay: float | None
    """The current hedge delay (``None``: not enough latencies observed yet)."""

    @property
    def extra_load(self) -> float:
        """Extra requests per call (0.05 = 5 % more requests)."""
        return self.hedges / self.calls if self.calls else 0.0


class _Hedger:
    """The state of one hedged name: its delay, latencies and counts."""

    __slots__ = (
        "_lock",
        "_since",
        "budget",
        "budget_refused",
        "calls",
        "delay",
        "fixed",
        "hedges",
        "max_hedges",
        "min_delay",
        "name",
        "percentile",
        "samples",
        "wins",
    )

    def __init__(
        self, name: str, fixed: float | None, percentile: float | None, max_hedges: int
    ) -> None:
        res = current_config().resilience
        self.name = name
        self.fixed = fixed
        self.percentile = percentile
        self.max_hedges = max_hedges
        self.min_delay = res.hedge_min_delay
        self.delay: float | None = fixed
        self.samples: deque[float] = deque(maxlen=_SAMPLES)
        self._since = 0
        self._lock = threading.Lock()
        if not _budget_of:
            raise RuntimeError("no retry budgets for hedges: resilient._policies.compose sets them")
        self.budget = _budget_of[0](name)
        self.calls = 0
        self.hedges = 0
        self.wins = 0
        self.budget_refused = 0

    def observe(self, seconds: float) -> None:
        """Remember the latency of a first request (at least ``seconds`` when cancelled)."""
        if self.percentile is None:
            return
        self.samples.append(seconds)
        self._since += 1
        if self._since >= _RECOMPUTE_EVERY and len(self.samples) >= _MIN_SAMPLES:
            self._since = 0
            with self._lock:
                ordered = sorted(self.samples)
            index = min(len(ordered) - 1, int(self.percentile * len(ordered)))
            self.delay = max(self.min_delay, ordered[index])

    def may_hedge(self) -> bool:
        if self.budget.try_spend():
            return True
        self.budget_refused += 1
        return False

    def stats(self) -> HedgeStats:
        return HedgeStats(
            self.name, self.calls, self.hedges, self.wins, self.budget_refused, self.delay
        )


_hedgers: dict[str, _Hedger] = {}


def hedge_stats(name: str | None = None) -> list[HedgeStats]:
    """The counts of every hedged name (or of ``name``), sorted by name."""
    names = sorted(_hedgers) if name is None else [name]
    return [_hedgers[n].stats() for n in names if n in _hedgers]


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a loser's late error is not "never retrieved"


def refuse_unless_read(name: str, kind: str) -> None:
    """Raise a clear error unless ``kind`` is ``"read"``: hedging sends a call twice."""
    if kind != "read":
        raise ValueError(
            f"{name!r} cannot be hedged: hedging sends the same request twice, so only "
            f"idempotent reads may use it, and its kind is {kind!r}. Remove hedge_after / @hedge "
            "from it (orders and cancels are never hedged)"
        )


def hedge(
    delay: float | timedelta | str = "p95",
    *,
    max_hedges: int | None = None,
    name: str | None = None,
    count_calls: bool = True,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Hedge an idempotent async read: resend it when it is slower than ``delay``.

    Args:
        delay: seconds before a hedge is sent, or ``"pNN"``: the NN-th percentile of the
            latencies observed for ``name`` (at least ``resilience.hedge_min_delay``; no hedge
            until 20 latencies are known).
        max_hedges: extra requests at most (``resilience.hedge_max_hedges``).
        name: the statistics' and the retry budget's name (default: the function's).
        count_calls: count each call in the retry budget (``False`` when a ``@retry`` of the
            same name already counts them).

    Raises:
        ValueError: the function is an order or a cancel (by its name), or a bad option.
        TypeError: the function is not async.
    """
    fixed, percentile = _parse_delay(delay)
    if max_hedges is None:
        max_hedges = current_config().resilience.hedge_max_hedges
    if not isinstance(max_hedges, int) or isinstance(max_hedges, bool) or max_hedges < 1:
        raise ValueError(f"max_hedges must be an integer ≥ 1, got {max_hedges!r}")

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        label = name or policy_name(fn)
        refuse_unless_read(label, guess_kind(getattr(fn, "__name__", ""), default="read") or "read")
        if not is_async_callable(fn):
            raise TypeError(
                f"hedge() needs an async function: {label!r} is synchronous (a second request "
                "needs a task to run beside the first)"
            )
        hedger = _hedgers.get(label)
        if hedger is None or (hedger.fixed, hedger.percentile) != (fixed, percentile):
            hedger = _hedgers[label] = _Hedger(label, fixed, percentile, max_hedges)
        hedger.max_hedges = max_hedges
        return cast("Callable[P, R]", _hedged(fn, hedger, count_calls))

    return decorate


def _hedged(fn: Callable[..., Any], h: _Hedger, count_calls: bool) -> Callable[..., Any]:
    afn = cast("Callable[..., Awaitable[Any]]", fn)
    budget = h.budget
    wait_first = asyncio.FIRST_COMPLETED

    async def call(*args: Any, **kwargs: Any) -> Any:
        h.calls += 1
        if count_calls:
            budget.calls += 1
        delay = h.delay
        clock = _clock._current
        start = clock.monotonic()
        first = asyncio.ensure_future(afn(*args, **kwargs))
        if delay is None:  # not enough latencies known yet: a plain call
            try:
                result = await first
            except BaseException:
                h.observe(clock.monotonic() - start)
                raise
            h.observe(clock.monotonic() - start)
            return result
        running: list[asyncio.Future[Any]] = [first]
        sent = 1
        error: BaseException | None = None
        try:
            while running:
                hedging = sent <= h.max_hedges
                done, _ = await asyncio.wait(
                    running, timeout=delay if hedging else None, return_when=wait_first
                )
                if not done:  # slower than the delay: hedge (if the budget allows)
                    if hedging and h.may_hedge():
                        sent += 1
                        h.hedges += 1
                        running.append(asyncio.ensure_future(afn(*args, **kwargs)))
                        if _hooks.hooks:
                            _hooks.event(
                                _hooks.EventKind.HEDGE,
                                h.name,
                                attempt=sent,
                                elapsed=clock.monotonic() - start,
                            )
                    else:
                        sent = h.max_hedges + 1  # wait for what runs, without more hedges
                    continue
                for task in done:
                    running.remove(task)
                    if task is first:
                        h.observe(clock.monotonic() - start)
                    exc = task.exception()
                    if exc is None:
                        if task is not first:
                            h.wins += 1
                        return task.result()
                    error = exc
            assert error is not None
            raise error
        finally:
            for task in running:
                if task is first:
                    h.observe(clock.monotonic() - start)  # at least this slow
                task.cancel()
                task.add_done_callback(_consume)

    return wrap(call, fn, Layer("hedge", h.name), hedger=h)


def hedged(call: Callable[..., Any], name: str, kind: str, hedge_after: str) -> Any:
    """[load] A proxy method's hedge (its retry counts the calls); reads only, async only."""
    refuse_unless_read(name, kind)
    return hedge(hedge_after, name=name, count_calls=False)(call)
