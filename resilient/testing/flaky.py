"""Outcomes, fault schedules and a deterministic flaky service that plays them.

A schedule is a sequence of outcomes, one per call: ``Success()``, ``Fault("connection_refused")``,
``Latency(0.5)``, ``Hang()``, ``RateLimited(2.0)``. :class:`FlakyService` plays it against any
sync or async function (or with no function at all) and records every call. Latency and hangs
sleep on the current clock (:func:`resilient.get_clock`), so under a :class:`~resilient.FakeClock`
minutes of simulated outage take microseconds.

Faults whose request may have reached the remote side (a read timeout, a reset mid-request, a
hang) first call the wrapped function, then raise: a fake broker wrapped this way records the
order although the caller sees an error, exactly the case that makes a naive retry duplicate it.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, ParamSpec, TypeAlias, TypeVar, cast

from resilient._core.classify import classify
from resilient._core.clock import FakeClock, get_clock, use_clock
from resilient._core.inline import run_inline
from resilient._core.wrapping import is_async_callable

__all__ = [
    "FAULT_KINDS",
    "Call",
    "Fault",
    "FaultSchedule",
    "FlakyService",
    "HTTPStatusError",
    "Hang",
    "Latency",
    "OrderRejectedError",
    "Outcome",
    "RateLimited",
    "Success",
    "use_fake_clock",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_REASONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class _Response:
    """The part of an HTTP response an error handler looks at (httpx/requests shape)."""

    __slots__ = ("headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str]) -> None:
        self.status_code = status_code
        self.headers: dict[str, str] = dict(headers)

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"


class HTTPStatusError(Exception):
    """An HTTP error response, shaped like httpx's and requests' errors.

    ``status_code`` (and aiohttp's ``status``), ``headers`` and ``response.status_code`` /
    ``response.headers`` are all set, so any classifier that reads one of them sees the status.
    """

    def __init__(
        self,
        status_code: int,
        message: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        self.status = status_code
        self.headers: dict[str, str] = dict(headers or {})
        self.response = _Response(status_code, self.headers)
        reason = _REASONS.get(status_code, "Error")
        super().__init__(message or f"{status_code} {reason}")


class OrderRejectedError(Exception):
    """The broker refused the order (insufficient buying power, market closed, ...).

    A rejection proves the order was not executed; retrying it is pointless.
    """

    rejected = True

    def __init__(self, reason: str = "insufficient buying power") -> None:
        self.reason = reason
        super().__init__(f"order rejected: {reason}")


@contextmanager
def use_fake_clock(start: float = 1_000.0, wall: float = 1_700_000_000.0) -> Iterator[FakeClock]:
    """Install a fresh :class:`~resilient.FakeClock` for the block, then restore the previous clock.

    Breakers, retries, timeouts, the health monitor and alerts read the clock in force, so
    ``clock.advance(60)`` inside the block moves a minute of simulated time instantly.
    """
    clock = FakeClock(start, wall)
    with use_clock(clock):
        yield clock


def _database_locked() -> BaseException:
    import sqlite3  # only when played: importing the testing package stays cheap

    return sqlite3.OperationalError("database is locked")


# kind -> (factory of a fresh exception, whether the request may have reached the service)
_FAULTS: Final[dict[str, tuple[Callable[[], BaseException], bool]]] = {
    "connection_refused": (
        lambda: ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 443)"),
        False,
    ),
    "connection_reset": (lambda: ConnectionResetError(104, "Connection reset by peer"), True),
    "timeout": (lambda: TimeoutError("timed out reading the response"), True),
    "http_503": (lambda: HTTPStatusError(503), False),
    "http_429": (lambda: HTTPStatusError(429), False),
    "http_401": (lambda: HTTPStatusError(401), False),
    "http_403": (lambda: HTTPStatusError(403), False),
    "http_400": (lambda: HTTPStatusError(400), False),
    "http_422": (lambda: HTTPStatusError(422), False),
    "http_500": (lambda: HTTPStatusError(500), True),
    "http_404": (lambda: HTTPStatusError(404, "404 Not Found: no quote for symbol"), False),
    "broker_rejection": (lambda: OrderRejectedError(), False),
    "value_error": (lambda: ValueError("invalid symbol ''"), False),
    "database": (lambda: _database_locked(), False),
    "internal": (lambda: KeyError("price"), True),  # a malformed answer: a field is missing
}

#: Every fault kind :class:`Fault` accepts.
FAULT_KINDS: Final[tuple[str, ...]] = tuple(_FAULTS)


def _category(exc: BaseException | None) -> str | None:
    if exc is None:
        return None

    return str(classify(exc).value)


@dataclass(frozen=True, slots=True)
class Success:
    """The call succeeds: the wrapped function runs (or the service's ``value`` is returned)."""

    reached: bool = field(default=True, init=False, repr=False)

    def __repr__(self) -> str:
        return "ok"

    def make_exception(self) -> BaseException | None:
        return None

    @property
    def category(self) -> str | None:
        return None


@dataclass(frozen=True, slots=True)
class Fault:
    """The call fails with a fresh exception of ``kind`` (one of :data:`FAULT_KINDS`)."""

    kind: str

    def __post_init__(self) -> None:
        if self.kind not in _FAULTS:
            raise ValueError(
                f"unknown fault kind {self.kind!r}; use one of: {', '.join(FAULT_KINDS)}"
            )

    def __repr__(self) -> str:
        return self.kind

    @property
    def reached(self) -> bool:
        """Whether the request may have reached the service (and taken effect there)."""
        return _FAULTS[self.kind][1]

    def make_exception(self) -> BaseException:
        return _FAULTS[self.kind][0]()

    @property
    def category(self) -> str | None:
        """The error category ``resilient``'s classifier gives this fault."""
        return _category(self.make_exception())


@dataclass(frozen=True, slots=True)
class RateLimited:
    """HTTP 429 with a Retry-After of ``retry_after`` seconds.

    With ``header=True`` the delay is only in the ``Retry-After`` header (as HTTP clients raise
    it); otherwise only in a ``retry_after`` attribute (as broker SDKs raise it).
    """

    retry_after: float
    header: bool = True

    def __repr__(self) -> str:
        where = "" if self.header else ", attribute"
        return f"rate_limited({self.retry_after:g}s{where})"

    @property
    def reached(self) -> bool:
        return False

    def make_exception(self) -> BaseException:
        if self.header:
            return HTTPStatusError(429, headers={"Retry-After": f"{self.retry_after:g}"})
        exc = HTTPStatusError(429)
        exc.retry_after = self.retry_after  # type: ignore[attr-defined]
        return exc

    @property
    def category(self) -> str | None:
        return _category(self.make_exception())


@dataclass(frozen=True, slots=True)
class Latency:
    """The call takes ``seconds`` on the current clock, then ends as ``then``."""

    seconds: float
    then: Success | Fault | RateLimited = Success()

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {self.seconds}")

    def __repr__(self) -> str:
        tail = "" if isinstance(self.then, Success) else f" then {self.then!r}"
        return f"latency({self.seconds:g}s{tail})"

    @property
    def reached(self) -> bool:
        return self.then.reached

    def make_exception(self) -> BaseException | None:
        return self.then.make_exception()

    @property
    def category(self) -> str | None:
        return self.then.category


@dataclass(frozen=True, slots=True)
class Hang:
    """No answer: the request is sent, nothing comes back for ``seconds``, then a read timeout.

    The wait is on the current clock; under a :class:`~resilient.FakeClock` it is instant, with the
    real clock an async hang is cancellable by a timeout around it.
    """

    seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError(f"a hang must last >= 0 seconds, got {self.seconds}")

    def __repr__(self) -> str:
        return f"hang({self.seconds:g}s)"

    @property
    def reached(self) -> bool:
        return True

    def make_exception(self) -> BaseException:
        return TimeoutError(f"no response within {self.seconds:g} s")

    @property
    def category(self) -> str | None:
        return _category(self.make_exception())


Outcome: TypeAlias = Success | Fault | RateLimited | Latency | Hang


class FaultSchedule(tuple[Outcome, ...]):
    """An immutable sequence of outcomes, printed compactly in failing examples."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"FaultSchedule([{', '.join(map(repr, self))}])"

    @property
    def faults(self) -> int:
        """How many outcomes end in an exception."""
        return sum(1 for o in self if not _ok(o))


def _ok(outcome: Outcome) -> bool:
    return isinstance(outcome, Success) or (
        isinstance(outcome, Latency) and isinstance(outcome.then, Success)
    )


@dataclass(slots=True, eq=False)
class Call:
    """One call the flaky service received, with what it did."""

    index: int
    started: float
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outcome: Outcome
    ended: float | None = None
    result: Any = None
    exception: BaseException | None = None
    reached: bool = False  # the wrapped function ran (the request may have taken effect)
    observed: Any = None

    @property
    def failed(self) -> bool:
        """Whether the caller got an exception from this call."""
        return self.exception is not None

    @property
    def duration(self) -> float:
        """Seconds the call took on the clock in force (0 while it is still running)."""
        return 0.0 if self.ended is None else self.ended - self.started

    def __repr__(self) -> str:
        end = "running" if self.ended is None else f"{self.duration:g}s"
        how = (
            f"raised {type(self.exception).__name__}" if self.exception is not None else "returned"
        )
        return f"<call #{self.index} at t={self.started:g} ({end}) {self.outcome!r}: {how}>"


class FlakyService:
    """Plays a fault schedule, one outcome per call, and records every call.

    Args:
        schedule: the outcomes of the first calls, in order.
        then: the outcome of every call after the schedule ran out (default: success).
        value: what a successful call returns when no function is wrapped.
        observe: called at the start of every call; its result is stored in ``Call.observed``
            (e.g. ``lambda: get_breaker("broker").state`` to check the circuit later). It is
            also an attribute, so it can be set once the breaker exists.
    """

    def __init__(
        self,
        schedule: Iterable[Outcome] = (),
        *,
        then: Outcome = Success(),
        value: Any = None,
        observe: Callable[[], Any] | None = None,
    ) -> None:
        self.schedule = FaultSchedule(schedule)
        self.then = then
        self.value = value
        self.calls: list[Call] = []
        self.observe = observe
        self._counter = itertools.count()

    def __repr__(self) -> str:
        return f"FlakyService({self.schedule!r}, calls={len(self.calls)})"

    @property
    def remaining(self) -> FaultSchedule:
        """The outcomes not played yet (``then`` follows them for ever)."""
        return FaultSchedule(self.schedule[len(self.calls) :])

    def _start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
        index = next(self._counter)
        outcome = self.schedule[index] if index < len(self.schedule) else self.then
        observed = self.observe() if self.observe is not None else None
        call = Call(index, get_clock().monotonic(), args, dict(kwargs), outcome, observed=observed)
        self.calls.append(call)
        return call

    @staticmethod
    def _split(outcome: Outcome) -> tuple[float, Outcome, float]:
        """(latency before the answer, the answer, silence after the request was sent)."""
        if isinstance(outcome, Latency):
            return outcome.seconds, outcome.then, 0.0
        if isinstance(outcome, Hang):
            return 0.0, outcome, outcome.seconds
        return 0.0, outcome, 0.0

    def _finish(self, call: Call, result: Any, exc: BaseException | None) -> None:
        call.ended = get_clock().monotonic()
        call.result = result
        call.exception = exc

    # --- playing ---------------------------------------------------------------------------

    async def _play(
        self,
        args: Any,
        kwargs: Any,
        invoke: Callable[[], Awaitable[Any]] | None,
        sleep: Callable[[float], Awaitable[None]],
    ) -> Any:
        """One call: the scripted latency, the function (or ``value``), then the outcome."""
        call = self._start(args, kwargs)
        before, answer, after = self._split(call.outcome)
        result: Any = None
        try:
            if before:
                await sleep(before)
            if answer.reached:
                call.reached = True
                result = await invoke() if invoke is not None else self.value
            if after:
                await sleep(after)
            exc = answer.make_exception()
        except BaseException as error:
            self._finish(call, None, error)
            raise
        if exc is not None:
            self._finish(call, None, exc)
            raise exc
        self._finish(call, result, None)
        return result

    def _play_sync(self, fn: Callable[..., Any] | None, args: Any, kwargs: Any) -> Any:
        clock = get_clock()

        async def sleep(seconds: float) -> None:
            clock.sleep(seconds)

        async def invoke() -> Any:
            return fn(*args, **kwargs) if fn is not None else None

        return run_inline(self._play(args, kwargs, invoke if fn is not None else None, sleep))

    async def _play_async(
        self, fn: Callable[..., Awaitable[Any]] | None, args: Any, kwargs: Any
    ) -> Any:
        invoke = None if fn is None else functools.partial(fn, *args, **kwargs)
        return await self._play(args, kwargs, invoke, get_clock().asleep)

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """Play the next outcome synchronously with no function behind it."""
        return self._play_sync(None, args, kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Play the next outcome in a coroutine with no function behind it."""
        return await self._play_async(None, args, kwargs)

    def wrap(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Wrap a sync or async function (decided here, once); its signature is kept."""
        if is_async_callable(fn):
            afn = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await self._play_async(afn, args, kwargs)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            return self._play_sync(fn, args, kwargs)

        return cast(Callable[P, R], sync_wrapper)

    __call__ = wrap

    def wrap_object(self, obj: T, *, methods: Iterable[str] | None = None) -> T:
        """A proxy of ``obj`` whose public methods (or only ``methods``) play this schedule.

        Every wrapped method shares the one schedule and the one ``calls`` record, the way one
        remote service fails for every endpoint at once. Other attributes pass through.
        """
        return cast(T, _FlakyProxy(obj, self, None if methods is None else frozenset(methods)))


class _FlakyProxy:
    """Stands in for the wrapped object: its selected public methods are wrapped once, at
    construction, and stored on the instance, so ``dir()`` and ``inspect.getattr_static`` see
    them as a real client's methods (resilience proxies introspect what they wrap); every other
    attribute is read live from the target."""

    def __init__(
        self, target: object, service: FlakyService, methods: frozenset[str] | None
    ) -> None:
        self.__dict__["_target"] = target
        if methods is not None:
            missing = sorted(m for m in methods if not callable(getattr(target, m, None)))
            if missing:
                raise AttributeError(
                    f"{type(target).__name__} has no method(s) {', '.join(missing)}"
                )
        for name in dir(target):
            selected = name in methods if methods is not None else not name.startswith("_")
            if not selected:
                continue
            attr = getattr(target, name, None)
            if callable(attr) and not inspect.isclass(attr):
                self.__dict__[name] = service.wrap(attr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_target"], name)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self.__dict__["_target"])) | set(self.__dict__) - {"_target"})

    def __repr__(self) -> str:
        return f"<flaky {self.__dict__['_target']!r}>"
