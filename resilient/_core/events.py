"""One hook shape for every policy event: a frozen details object and a callable Protocol.

Hooks run inline, only on failure paths (a retry, a breaker transition, a served fallback, a
call that finally failed); a call that succeeds never builds an event. A hook that raises is
logged once and swallowed, so observability can never break the call it observes.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from itertools import repeat, starmap
from typing import NamedTuple, Protocol

from resilient._core import clock as _clock
from resilient._core.classify import classify, plain_category
from resilient._core.context import current_correlation_id
from resilient._core.log import logger, logging_enabled, on_level_change
from resilient._core.sanitize import sanitize

__all__ = [
    "FOLD_AT",
    "EventKind",
    "PolicyEvent",
    "PolicyHook",
    "add_hook",
    "category_of",
    "count_retry",
    "emit",
    "event",
    "fold_retries",
    "guard_spec",
    "guarded",
    "hooks",
    "log_hook",
    "remove_hook",
    "report_callback_failure",
    "retry_counts",
    "retry_tally",
    "suspended",
]


class EventKind(StrEnum):
    """What happened."""

    RETRY = "retry"
    """An attempt failed and another one is scheduled after ``wait`` seconds."""
    RETRY_BUDGET_EXHAUSTED = "retry_budget_exhausted"
    """A retry was refused because the name's retry budget is spent; the error is raised."""
    BREAKER_STATE = "breaker_state"
    """A breaker moved from ``old_state`` to ``new_state``."""
    CALL_FAILED = "call_failed"
    """The error escaping the outermost policy layer of a call (once per call)."""
    FALLBACK_SERVED = "fallback_served"
    """A fallback was returned instead of raising ``exception``."""
    FALLBACK_RECOVERED = "fallback_recovered"
    """The first successful call after fallbacks were served."""
    # load control
    BULKHEAD_REJECTED = "bulkhead_rejected"
    """A bulkhead refused a call (``exception`` is the :class:`BulkheadFullError`)."""
    RATE_LIMITED = "rate_limited"
    """A client-side rate limit made a call wait ``wait`` seconds (or refused it: ``exception``)."""
    HEDGE = "hedge"
    """A hedged read sent request number ``attempt`` (2 = the first hedge) after ``elapsed``."""


class PolicyEvent(NamedTuple):
    """The details of one event (immutable, no ``__dict__``). Never carries the call's
    arguments. A named tuple rather than a frozen dataclass: building one costs a fifth."""

    kind: EventKind
    name: str
    exception: BaseException | None = None
    category: str | None = None
    attempt: int = 0
    """The attempt that failed (1-based)."""
    wait: float = 0.0
    """Seconds before the next attempt (retry)."""
    elapsed: float = 0.0
    """Seconds since the call started (or since its first failure)."""
    old_state: str | None = None
    new_state: str | None = None
    source: str | None = None
    """``"value"``, ``"func"`` or ``"cache"`` (fallback)."""
    cache_age: float | None = None
    first_in_episode: bool = False
    """The first fallback served since the last success."""
    correlation_id: str | None = None
    at: float = 0.0
    """Wall-clock time of the event (epoch seconds, on the current clock)."""


class PolicyHook(Protocol):
    """Anything called with a :class:`PolicyEvent`."""

    def __call__(self, event: PolicyEvent) -> None: ...


_lock = threading.Lock()


class _Once:
    """Callbacks already reported: held weakly, so a new callback that happens to reuse a
    freed one's ``id`` is still reported; objects that refuse weak references are kept."""

    def __init__(self) -> None:
        self._weak: weakref.WeakSet[object] = weakref.WeakSet()
        self._strong: deque[object] = deque(maxlen=256)

    def first(self, callback: object) -> bool:
        """Whether ``callback`` is reported for the first time (and remember it)."""
        try:
            if callback in self._weak:
                return False
            self._weak.add(callback)
            return True
        except TypeError:  # not weakly referenceable (or unhashable)
            if any(held is callback for held in self._strong):
                return False
            self._strong.append(callback)
            return True


_failed_once = _Once()


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "-"
    return f"{type(exc).__name__}: {sanitize(exc)}"


class _Described:
    """Formats as ``"Class: sanitized message"`` only if a log sink actually writes it."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException | None) -> None:
        self.exc = exc

    def __format__(self, spec: str) -> str:
        return _describe(self.exc)

    def __str__(self) -> str:
        return _describe(self.exc)


_INFO = 20
_WARNING = 30


def log_hook(event: PolicyEvent) -> None:
    """The default hook: one log line per event with the name, attempt, wait and the
    exception's class and sanitized message. ``call_failed`` is left to the errors module.

    Until :func:`resilient.enable_logging` is in force (or when its level drops the line) it
    returns at once: no record is built only to be discarded."""
    if not logging_enabled(_WARNING):  # WARNING is the highest level this hook writes at
        return
    kind = event.kind
    if kind is EventKind.RETRY:
        logger.warning(
            "retrying {} (attempt {} failed, next in {:.3f}s): {}",
            event.name,
            event.attempt,
            event.wait,
            _Described(event.exception),
        )
    elif kind is EventKind.RETRY_BUDGET_EXHAUSTED:
        logger.warning(
            "retry budget of {} spent; failing fast after attempt {}: {}",
            event.name,
            event.attempt,
            _Described(event.exception),
        )
    elif kind is EventKind.BREAKER_STATE:
        level = "WARNING" if event.new_state != "closed" else "INFO"
        logger.log(level, "circuit {} {} -> {}", event.name, event.old_state, event.new_state)
    elif kind is EventKind.FALLBACK_SERVED:
        if event.first_in_episode:
            logger.warning(
                "{} degraded: serving {} fallback instead of {}",
                event.name,
                event.source,
                _Described(event.exception),
            )
    elif kind is EventKind.FALLBACK_RECOVERED and logging_enabled(_INFO):
        logger.info("{} recovered: no longer serving fallbacks", event.name)


_Entry = tuple[PolicyHook, frozenset[EventKind] | None]
_entries: tuple[_Entry, ...] = ((log_hook, None),)
"""Every hook with the event kinds it asked for (``None``: all)."""

hooks: tuple[PolicyHook, ...] = (log_hook,)
"""The hooks in force (a tuple, replaced on change, so emitting never takes a lock)."""

_for_kind: dict[EventKind, tuple[PolicyHook, ...]] = {}
"""The hooks each kind of event is delivered to, rebuilt on every change. The log hook is
left out while logging is off, so with only the default hooks installed a retry builds no
event at all."""

retry_hooks: tuple[PolicyHook, ...] = ()
"""``_for_kind[EventKind.RETRY]``, read on every retry."""


def _rebuild() -> None:
    global hooks, retry_hooks, _for_kind
    logging_on = logging_enabled(_WARNING)
    hooks = tuple(hook for hook, _ in _entries)
    table: dict[EventKind, tuple[PolicyHook, ...]] = {}
    for kind in EventKind:
        table[kind] = tuple(
            hook
            for hook, kinds in _entries
            if (kinds is None or kind in kinds) and (logging_on or hook is not log_hook)
        )
    _for_kind = table
    retry_hooks = table[EventKind.RETRY]


def _on_logging_change() -> None:
    with _lock:
        _rebuild()


def add_hook(
    hook: PolicyHook, *, kinds: Iterable[EventKind | str] | None = None
) -> Callable[[], None]:
    """Call ``hook(event)`` for every policy event, or only for the event ``kinds`` given;
    returns a function that removes it.

    Naming the kinds a hook needs keeps the other events cheap: a retry builds no event
    object when no hook asked for retries."""
    global _entries
    wanted = None if kinds is None else frozenset(EventKind(k) for k in kinds)
    with _lock:
        _entries = (*_entries, (hook, wanted))
        _rebuild()

    def remove() -> None:
        remove_hook(hook)

    return remove


def remove_hook(hook: PolicyHook) -> None:
    """Stop calling ``hook`` (no error when it is not registered)."""
    global _entries
    with _lock:
        _entries = tuple(entry for entry in _entries if entry[0] is not hook)
        _rebuild()


@contextmanager
def suspended() -> Iterator[None]:
    """Deliver no events inside the block (benchmarks and tests of the bare policies)."""
    global _entries
    with _lock:
        saved = _entries
        _entries = ()
        _rebuild()
    try:
        yield
    finally:
        with _lock:
            _entries = saved
            _rebuild()


def emit(event: PolicyEvent) -> None:
    """Run every hook that wants ``event``; a failing hook is logged once and swallowed."""
    _run(_for_kind.get(event.kind, hooks), event)


def _run(table: tuple[PolicyHook, ...], event: PolicyEvent) -> None:
    for hook in table:
        try:
            hook(event)
        except Exception as exc:
            if _failed_once.first(hook):
                logger.error(
                    "policy hook {!r} failed on a {} event and is ignored: {}",
                    getattr(hook, "__qualname__", type(hook).__name__),
                    event.kind.value,
                    _describe(exc),
                )


# --- user callbacks ----------------------------------------------------------------------------


def _callback_name(callback: object) -> str:
    return str(getattr(callback, "__qualname__", None) or type(callback).__qualname__)


def report_callback_failure(what: str, callback: object, exc: BaseException) -> None:
    """Log, once per callback, that a user callback (a predicate, a listener, a strategy)
    raised and was ignored; the message is the exception's class and sanitized text."""
    if not _failed_once.first(callback):
        return
    logger.error(
        "{} {} raised and is treated as no match: {}",
        what,
        _callback_name(callback),
        _describe(exc),
    )


def guarded(
    predicate: Callable[[BaseException], object], what: str
) -> Callable[[BaseException], bool]:
    """``predicate`` made safe for failure paths: an exception it raises is logged once
    (:func:`report_callback_failure`) and answers ``False`` ("no match"), so the caller's own
    error propagates and no permit or counter is left behind."""

    def safe(exc: BaseException) -> bool:
        try:
            return bool(predicate(exc))
        except Exception as err:
            report_callback_failure(what, predicate, err)
            return False

    return safe


def guard_spec(spec: object, what: str) -> object:
    """An ``exclude=``/``retry_on=``/``on=`` spec with each predicate in it :func:`guarded`
    (exception types and anything invalid are left for the matcher to check)."""

    def one(item: object) -> object:
        if callable(item) and not isinstance(item, type):
            return guarded(item, what)
        return item

    if isinstance(spec, tuple | list | set | frozenset):
        return [one(item) for item in spec]
    return one(spec)


# --- retry counts ------------------------------------------------------------------------------
# Retries are the most frequent event, and metrics need only their number: each retry appends
# one tuple to a deque (lock-free), folded into the counter whenever counts are read or once
# FOLD_AT are pending. This runs whatever hooks are installed.

_tally: deque[tuple[str, int, type[BaseException] | None]] = deque()
retry_tally = _tally
"""Pending retries as ``(name, failed attempt, exception class)``: a retry policy appends
here directly (what :func:`count_retry` does) and calls :func:`fold_retries` at ``FOLD_AT``."""
_retry_counts: Counter[tuple[str, int, type[BaseException] | None]] = Counter()
_tally_lock = threading.Lock()
FOLD_AT = 1024


def _fold_retries() -> None:
    """Move pending retries into the counts."""
    with _tally_lock:
        # all in C: popleft n times (starmap) straight into Counter.update's counting loop
        _retry_counts.update(starmap(_tally.popleft, repeat((), len(_tally))))


fold_retries = _fold_retries


def count_retry(name: str, attempt: int, exc_type: type[BaseException] | None) -> None:
    """Count one retry of ``name`` after failed attempt ``attempt``."""
    _tally.append((name, attempt, exc_type))
    if len(_tally) >= FOLD_AT:
        _fold_retries()


def retry_counts() -> dict[tuple[str, int, type[BaseException] | None], int]:
    """Retries so far by name, failed attempt and exception class."""
    _fold_retries()
    with _tally_lock:
        return dict(_retry_counts)


def reset_retry_counts() -> None:
    """Forget every counted retry (tests)."""
    with _tally_lock:
        _tally.clear()
        _retry_counts.clear()


_memo: tuple[BaseException | None, str] = (None, "")
_new_tuple = tuple.__new__


def category_of(exc: BaseException) -> str:
    """``classify(exc)`` as its string value; the last answer is remembered, because the
    breaker, the event and the fallback of one failure all ask about the same exception.
    (Exceptions take no weak references, so the memo holds the last one until the next.)"""
    global _memo
    memo = _memo
    if memo[0] is exc:
        return memo[1]
    plain = plain_category(exc)
    if plain is not None:  # decided by type: nothing worth remembering
        return plain
    try:
        category: str = classify(exc)  # an ErrorCategory is a str
    except Exception:  # a hostile exception (a property that raises): still classified
        category = "internal"
    _memo = (exc, category)
    return category


def event(
    kind: EventKind,
    name: str,
    exception: BaseException | None = None,
    *,
    attempt: int = 0,
    wait: float = 0.0,
    elapsed: float = 0.0,
    old_state: str | None = None,
    new_state: str | None = None,
    source: str | None = None,
    cache_age: float | None = None,
    first_in_episode: bool = False,
) -> None:
    """Build and emit an event (classifying ``exception`` and stamping the correlation id)."""
    table = _for_kind[kind]
    if not table:
        return
    category = None
    if exception is not None:
        category = category_of(exception)
    # tuple.__new__ directly: the named tuple's generated __new__ costs ~150 ns more per event
    _run(
        table,
        _new_tuple(
            PolicyEvent,
            (
                kind,
                name,
                exception,
                category,
                attempt,
                wait,
                elapsed,
                old_state,
                new_state,
                source,
                cache_age,
                first_in_episode,
                current_correlation_id(),
                _clock._current.time(),
            ),
        ),
    )


_rebuild()
on_level_change(_on_logging_change)
