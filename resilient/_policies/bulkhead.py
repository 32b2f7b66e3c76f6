"""Bulkheads: a concurrency limit per name, with a bounded queue served by priority.

As Polly's ``ConcurrencyLimiter`` and Resilience4j's semaphore bulkhead: at most
``max_concurrent`` calls of one name run at once; further calls wait in a queue of at most
``max_queue`` places for up to ``queue_timeout`` seconds, then are refused with
:class:`~resilient.BulkheadFullError` without calling the function.

The queue is served by priority class, highest first (``cancel`` > ``order`` > ``other`` >
``read``), first come first served within a class. A call arriving at a full queue takes the
place of the newest waiting call of a lower class (that one is refused, ``"displaced"``), so a
burst of market-data reads can never keep an order or a cancel out. ``priorities=False`` serves
the queue strictly first come first served.

One algorithm for both worlds: the counts live under one ``threading.Lock``; an async caller
waits on a future of its loop, a sync caller on a ``threading.Event``; a freed slot is handed to
the next waiter directly. A call that finds a free slot and an empty queue takes no lock and
allocates nothing (see :class:`Bulkhead`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, cast

from resilient._core import events as _hooks
from resilient._core.deadline import seconds_of
from resilient._core.exceptions import BulkheadFullError
from resilient._core.wrapping import Layer, is_async_callable, wrap
from resilient.config import current_config, switches

__all__ = [
    "PRIORITIES",
    "Bulkhead",
    "BulkheadRegistry",
    "BulkheadSnapshot",
    "bulkhead",
    "bulkheads",
    "get_bulkhead",
]

P = ParamSpec("P")
R = TypeVar("R")

PRIORITIES: tuple[str, ...] = ("cancel", "order", "other", "read")
"""The priority classes, highest first; a proxy method's kind is its class."""
_LEVEL = {name: level for level, name in enumerate(PRIORITIES)}
_OPTIONS = ("max_concurrent", "max_queue", "queue_timeout", "priorities")


def _level_of(priority: str | int) -> int:
    if isinstance(priority, int) and not isinstance(priority, bool):
        if 0 <= priority < len(PRIORITIES):
            return priority
    elif isinstance(priority, str) and priority in _LEVEL:
        return _LEVEL[priority]
    raise ValueError(
        f"bulkhead priority must be one of {', '.join(PRIORITIES)} (or 0–{len(PRIORITIES) - 1},"
        f" 0 the highest), got {priority!r}"
    )


def _check(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Validate explicit options; bad input fails at decoration with a clear error."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in ("max_concurrent", "max_queue"):
            low = 1 if key == "max_concurrent" else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(
                    f"bulkhead {name!r}: {key} must be an integer ≥ {low}, got {value!r}"
                )
        elif key == "queue_timeout":
            value = seconds_of(value, "queue_timeout")
        elif key == "priorities" and not isinstance(value, bool):
            raise TypeError(f"bulkhead {name!r}: priorities must be true or false")
        out[key] = value
    return out


class _Waiter:
    """One queued call: a loop future (async) or an event (sync)."""

    __slots__ = ("event", "future", "granted", "level", "loop")

    def __init__(
        self,
        level: int,
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[bool] | None,
        event: threading.Event | None,
    ) -> None:
        self.level = level
        self.loop = loop
        self.future = future
        self.event = event
        self.granted = False  # decided under the bulkhead's lock: a slot was handed over

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
            return
        future, loop = self.future, self.loop
        assert future is not None and loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            _settle(future)
        else:
            loop.call_soon_threadsafe(_settle, future)


def _settle(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(True)


@dataclass(frozen=True, slots=True)
class BulkheadSnapshot:
    """A bulkhead's limits and counts."""

    name: str
    max_concurrent: int
    max_queue: int
    queue_timeout: float
    priorities: bool
    active: int
    queued: int
    admitted: int
    """Calls that got a slot (at once or after queueing)."""
    queued_total: int
    """Calls that had to wait in the queue."""
    rejected: int
    rejected_by_priority: dict[str, int]
    last_rejected_age: float | None
    """Seconds since the last refusal (``None``: never refused)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for health output)."""
        return asdict(self)


class Bulkhead:
    """The concurrency limit of one name, shared by every function decorated with it.

    Free slots are tokens in a list: a call takes one with ``list.pop`` and gives it back with
    ``list.append``, each a single atomic step under the GIL, so the uncontended path takes no
    lock. The queue, the hand-over of returned tokens to waiters and limit changes run under
    ``_lock``. A waiter first counts itself in ``queued`` and then looks for a token once more,
    while a returning call first appends its token and then looks at ``queued``: one of the two
    always sees the other, so no token is left idle while a call waits.
    """

    __slots__ = (
        "_debt",
        "_explicit",
        "_generation",
        "_last_rejected",
        "_lock",
        "_queues",
        "_rejected_by",
        "_tokens",
        "admitted",
        "limit",
        "max_queue",
        "name",
        "priorities",
        "queue_timeout",
        "queued",
        "queued_total",
        "rejected",
    )

    def __init__(self, name: str, explicit: dict[str, Any] | None = None) -> None:
        self.name = name
        self._explicit = _check(name, dict(explicit or {}))
        self._lock = threading.Lock()
        self._queues: tuple[deque[_Waiter], ...] = tuple(deque() for _ in PRIORITIES)
        self._tokens: list[None] = []
        self._debt = 0  # tokens to retire as they come back (after the limit was lowered)
        self._rejected_by: dict[str, int] = {}
        self._last_rejected: float | None = None
        self._generation = -1
        self.queued = 0
        self.admitted = 0
        self.queued_total = 0
        self.rejected = 0
        self.limit = 0
        self.max_queue = 0
        self.queue_timeout = 0.0
        self.priorities = True
        with self._lock:
            self._apply()

    @property
    def active(self) -> int:
        """Calls holding a slot now."""
        return max(0, self.limit + self._debt - len(self._tokens))

    def _apply(self) -> None:
        """Take unset limits from ``resilience.bulkhead_*`` (on creation and after reloads);
        under the lock."""
        res = current_config().resilience
        opts = self._explicit
        self._generation = switches.generation
        limit = opts.get("max_concurrent", res.bulkhead_max_concurrent)
        change = limit - self.limit
        self.limit = limit
        while change > 0 and self._debt:  # raised again before every token came back
            self._debt -= 1
            change -= 1
        if change > 0:
            self._tokens.extend([None] * change)
        elif change < 0:
            self._debt -= change
        self.max_queue = opts.get("max_queue", res.bulkhead_max_queue)
        self.queue_timeout = opts.get("queue_timeout", res.bulkhead_queue_timeout)
        self.priorities = opts.get("priorities", res.bulkhead_priorities)

    def _refresh(self) -> None:
        with self._lock:
            if self._generation != switches.generation:
                self._apply()
        self._dispatch()  # a raised limit frees slots for the queue

    def _merge(self, options: dict[str, Any]) -> None:
        """Adopt explicit options of another decoration of this name; a conflicting explicit
        value is an error (one name is one shared bulkhead)."""
        checked = _check(self.name, options)
        with self._lock:
            for key, value in checked.items():
                old = self._explicit.get(key, value)
                if old != value:
                    raise ValueError(
                        f"bulkhead {self.name!r} already has {key}={old!r}; another decoration "
                        f"asks for {value!r}. A name means one shared bulkhead: give the same "
                        "value, drop the argument or use another name"
                    )
                self._explicit[key] = value
            self._apply()
        self._dispatch()

    # --- the queue (under the lock) ---------------------------------------------------------

    def _pop_next(self) -> _Waiter | None:
        for queue in self._queues:
            if queue:
                self.queued -= 1
                return queue.popleft()
        return None

    def _dispatch(self) -> None:
        """Retire owed tokens, then hand free tokens to waiters, highest class first."""
        woken: list[_Waiter] = []
        tokens = self._tokens
        with self._lock:
            while self._debt and tokens:
                tokens.pop()
                self._debt -= 1
            while self.queued and tokens:
                tokens.pop()
                waiter = self._pop_next()
                assert waiter is not None
                waiter.granted = True
                self.admitted += 1
                woken.append(waiter)
        for waiter in woken:
            waiter.wake()

    def _enqueue(self, waiter: _Waiter) -> tuple[bool, _Waiter | None]:
        """Queue ``waiter``: ``(queued, displaced)``; a full queue gives the place of the
        newest waiter of the lowest class below the newcomer's (with priorities)."""
        if self.queue_timeout <= 0:
            return False, None
        displaced = None
        if self.queued >= self.max_queue:
            if not self.priorities:
                return False, None
            for level in range(len(PRIORITIES) - 1, waiter.level, -1):
                queue = self._queues[level]
                if queue:
                    displaced = queue.pop()
                    self.queued -= 1
                    break
            if displaced is None:
                return False, None
        self._queues[waiter.level if self.priorities else 0].append(waiter)
        self.queued += 1
        self.queued_total += 1
        return True, displaced

    def _remove(self, waiter: _Waiter) -> bool:
        """Take a waiter that gave up out of the queue; ``False`` when it was not there."""
        queue = self._queues[waiter.level if self.priorities else 0]
        try:
            queue.remove(waiter)
        except ValueError:
            return False
        self.queued -= 1
        return True

    def _refuse(self, level: int, reason: str) -> BulkheadFullError:
        priority = PRIORITIES[level]
        with self._lock:
            self.rejected += 1
            self._rejected_by[priority] = self._rejected_by.get(priority, 0) + 1
            self._last_rejected = time.monotonic()
        exc = BulkheadFullError(self.name, self.limit, self.max_queue, priority, reason)
        if _hooks.hooks:
            _hooks.event(_hooks.EventKind.BULKHEAD_REJECTED, self.name, exc)
        return exc

    # --- entering and leaving ---------------------------------------------------------------

    def try_enter(self) -> bool:
        """Take a slot if one is free and nobody waits (never blocks)."""
        if self._generation != switches.generation:
            self._refresh()
        if self.queued:
            return False
        try:
            self._tokens.pop()
        except IndexError:
            return False
        self.admitted += 1
        return True

    def release(self) -> None:
        """Free a slot: handed straight to the next waiter, highest class first."""
        self._tokens.append(None)
        if self.queued or self._debt:
            self._dispatch()

    def _queue_or_refuse(self, waiter: _Waiter) -> bool:
        """Enter at once (``True``), queue (``False``), or raise :class:`BulkheadFullError`."""
        with self._lock:
            if not self.queued and self._tokens:
                self._tokens.pop()
                self.admitted += 1
                return True
            queued, displaced = self._enqueue(waiter)
        if displaced is not None:
            displaced.wake()  # it wakes without a slot and refuses itself
        if not queued:
            raise self._refuse(waiter.level, "queue full")
        self._dispatch()  # a token returned while this call was queueing
        return False

    def _gave_up(self, waiter: _Waiter) -> None:
        """A waiter stops waiting (timeout, cancellation): leave the queue, or pass on a slot
        that was handed to it meanwhile."""
        with self._lock:
            granted = waiter.granted
            if not granted:
                self._remove(waiter)
        if granted:
            self.release()

    async def acquire(self, priority: str | int = "other") -> None:
        """Take a slot, waiting in the queue if need be (async); give it back with
        :meth:`release`.

        Raises:
            BulkheadFullError: no slot and no queue place, or none within ``queue_timeout``.
        """
        if not self.try_enter():
            await self._await_slot(_level_of(priority))

    async def _await_slot(self, level: int) -> None:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(level, loop, loop.create_future(), None)
        if self._queue_or_refuse(waiter):
            return
        assert waiter.future is not None
        try:
            async with asyncio.timeout(self.queue_timeout):
                await waiter.future
        except TimeoutError:
            woken = False
        except BaseException:
            self._gave_up(waiter)
            raise
        else:
            woken = True
        self._admit(waiter, woken)

    def acquire_sync(self, priority: str | int = "other") -> None:
        """Take a slot from a synchronous caller (blocking its thread while queued)."""
        if not self.try_enter():
            self._wait_slot(_level_of(priority))

    def _wait_slot(self, level: int) -> None:
        waiter = _Waiter(level, None, None, threading.Event())
        if not self._queue_or_refuse(waiter):
            assert waiter.event is not None
            self._admit(waiter, waiter.event.wait(self.queue_timeout))

    def _admit(self, waiter: _Waiter, woken: bool) -> None:
        """After a queued call's wait: it holds the slot handed to it, or it is refused (not
        woken in time, or woken without a slot: displaced by a call of a higher class)."""
        if not woken:
            self._gave_up(waiter)
            raise self._refuse(waiter.level, "queue timeout")
        if not waiter.granted:
            raise self._refuse(waiter.level, "displaced")

    # --- reading ----------------------------------------------------------------------------

    def snapshot(self) -> BulkheadSnapshot:
        """The current limits and counts."""
        with self._lock:
            last = self._last_rejected
            return BulkheadSnapshot(
                name=self.name,
                max_concurrent=self.limit,
                max_queue=self.max_queue,
                queue_timeout=self.queue_timeout,
                priorities=self.priorities,
                active=self.active,
                queued=self.queued,
                admitted=self.admitted,
                queued_total=self.queued_total,
                rejected=self.rejected,
                rejected_by_priority=dict(self._rejected_by),
                last_rejected_age=None if last is None else time.monotonic() - last,
            )

    def __repr__(self) -> str:
        return f"<Bulkhead {self.name!r} {self.active}/{self.limit} queued {self.queued}>"

    # --- decorating -------------------------------------------------------------------------

    def decorate(self, fn: Callable[P, R], priority: str | int = "other") -> Callable[P, R]:
        """Wrap ``fn`` (sync or async, decided now) in this bulkhead at ``priority``."""
        level = _level_of(priority)
        layer = Layer("bulkhead", self.name)
        enter, leave = self.try_enter, self.release
        # The shells below only call and wait: entering, queueing and leaving are shared.

        if is_async_callable(fn):
            afn = cast("Callable[..., Awaitable[Any]]", fn)
            queue = self._await_slot

            async def acall(*args: Any, **kwargs: Any) -> Any:
                if not enter():
                    await queue(level)
                try:
                    return await afn(*args, **kwargs)
                finally:
                    leave()

            return cast("Callable[P, R]", wrap(acall, fn, layer, bulkhead=self))

        wait = self._wait_slot

        def call(*args: Any, **kwargs: Any) -> Any:
            if not enter():
                wait(level)
            try:
                return fn(*args, **kwargs)
            finally:
                leave()

        return cast("Callable[P, R]", wrap(call, fn, layer, bulkhead=self))


class BulkheadRegistry:
    """Every bulkhead of the process, by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Bulkhead] = {}

    def get(self, name: str) -> Bulkhead:
        """The bulkhead ``name``.

        Raises:
            KeyError: no bulkhead has that name (the message lists the known ones).
        """
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none yet"
            raise KeyError(f"no bulkhead named {name!r} (known: {known})") from None

    def get_or_create(self, name: str, **options: Any) -> Bulkhead:
        """The bulkhead ``name``, created with ``options`` on first use."""
        explicit = {k: v for k, v in options.items() if v is not None}
        unknown = set(explicit) - set(_OPTIONS)
        if unknown:
            raise TypeError(f"unknown bulkhead option(s): {', '.join(sorted(unknown))}")
        if not name or not isinstance(name, str):
            raise ValueError("a bulkhead needs a non-empty name, e.g. 'alpaca'")
        with self._lock:
            existing = self._items.get(name)
            if existing is None:
                created = Bulkhead(name, explicit)
                self._items[name] = created
                return created
        if explicit:
            existing._merge(explicit)
        return existing

    def names(self) -> list[str]:
        """Every bulkhead's name, sorted."""
        return sorted(self._items)

    def snapshots(self) -> list[BulkheadSnapshot]:
        """A snapshot of every bulkhead, sorted by name."""
        return [self._items[n].snapshot() for n in self.names()]

    def remove(self, name: str) -> None:
        """Forget bulkhead ``name`` (decorated functions keep the object they hold)."""
        with self._lock:
            self._items.pop(name, None)

    def clear(self) -> None:
        """Forget every bulkhead (tests)."""
        with self._lock:
            self._items.clear()

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)


bulkheads = BulkheadRegistry()
"""The process's bulkhead registry."""


def get_bulkhead(name: str, **options: Any) -> Bulkhead:
    """The bulkhead ``name`` (created on first use with ``options``)."""
    return bulkheads.get_or_create(name, **options)


def bulkhead(
    name: str,
    *,
    max_concurrent: int | None = None,
    max_queue: int | None = None,
    queue_timeout: float | timedelta | None = None,
    priority: str | int = "other",
    priorities: bool | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Limit the concurrent calls of ``name``; queue the excess by priority.

    Args:
        name: the bulkhead's name; every function naming it shares one limit.
        max_concurrent: calls running at once (``resilience.bulkhead_max_concurrent``).
        max_queue: calls waiting for a slot (``resilience.bulkhead_max_queue``); 0: none.
        queue_timeout: longest wait in the queue, seconds (``bulkhead_queue_timeout``); 0: a
            call never waits.
        priority: this function's class: ``"cancel"``, ``"order"``, ``"other"`` (default) or
            ``"read"`` (highest first), or 0–3.
        priorities: serve the queue by class (``resilience.bulkhead_priorities``); ``False``:
            first come, first served.

    Raises:
        BulkheadFullError: (at call time) no slot and no queue place, or none in time.
        ValueError / TypeError: an invalid option (at decoration time).
    """
    bh = get_bulkhead(
        name,
        max_concurrent=max_concurrent,
        max_queue=max_queue,
        queue_timeout=queue_timeout,
        priorities=priorities,
    )
    _level_of(priority)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        return bh.decorate(fn, priority)

    return decorate
