"""Timeouts that really bound the caller's wait, for async and sync functions.

Async functions get a loop timer (``asyncio.timeout``'s cancel-and-convert protocol): at the
limit the call is cancelled and :class:`resilient.TimeoutError` is raised. Sync functions run
in a worker thread (a daemon thread from a small pool, with the caller's context variables)
and the caller stops waiting at the limit: it gets :class:`resilient.TimeoutError` on time,
while the abandoned call runs on in its thread until it returns (Python cannot stop a thread),
so give sync I/O its own socket timeouts too. The limit is shortened to an ambient
``resilient.deadline``.

Under a non-system clock (``resilient.testing.FakeClock``) the limit is measured on that
clock: the call is cancelled as soon as the clock passes it, so tests need no real waiting.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import timedelta
from queue import Empty, SimpleQueue
from typing import Any, ParamSpec, TypeVar, cast

from resilient._core import clock as _clock
from resilient._core import deadline as _deadline
from resilient._core.blocking import warn_if_on_loop
from resilient._core.deadline import seconds_of
from resilient._core.exceptions import TimeoutError as ResilientTimeout
from resilient._core.wrapping import Layer, check_target, is_async_callable, policy_name, wrap
from resilient.config._bounds import check_arguments

__all__ = ["timeout"]

P = ParamSpec("P")
R = TypeVar("R")

_IDLE_SECONDS = 30.0  # an idle worker thread exits after this long


class _Pool:
    """Daemon worker threads (never joined at exit, unlike ThreadPoolExecutor's, so a call
    that never returns cannot hang the interpreter's shutdown)."""

    def __init__(self) -> None:
        self._jobs: SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0

    def submit(self, job: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            spawn = self._idle == 0
            if spawn:
                self._threads += 1
            else:
                self._idle -= 1
        self._jobs.put((future, job))
        if spawn:
            threading.Thread(target=self._work, name="resilient-timeout", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            try:
                future, job = self._jobs.get(timeout=_IDLE_SECONDS)
            except Empty:
                with self._lock:
                    if self._idle > 0:
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as exc:
                    future.set_exception(exc)
            del future, job
            with self._lock:
                self._idle += 1


_pool = _Pool()


def _limit(seconds: float, name: str) -> float:
    """The call's limit: ``seconds``, shortened to the ambient deadline; raises at once when
    that is spent."""
    remaining = _deadline.remaining()
    if remaining is not None and remaining < seconds:
        if remaining <= 0:
            raise ResilientTimeout(0.0, name)
        return remaining
    return seconds


def _run_within(job: Callable[[], Any], limit: float, name: str) -> Any:
    """Run ``job`` in a worker thread; its result, waited for at most ``limit`` seconds on the
    current clock."""
    clock = _clock._current
    if type(clock) is _clock.SystemClock:
        future = _pool.submit(job)
        try:
            return future.result(timeout=limit)
        except FutureTimeout:
            if not future.done():
                future.cancel()
                raise ResilientTimeout(limit, name) from None
        return future.result()
    end = clock.monotonic() + limit  # before the job starts: it may move the clock at once
    future = _pool.submit(job)
    while True:
        try:
            return future.result(timeout=0.001)
        except FutureTimeout:
            if future.done():  # the function itself raised TimeoutError
                return future.result()
            if clock.monotonic() >= end:
                future.cancel()
                raise ResilientTimeout(limit, name) from None


class _Expiry:
    """The timer callback of one call: cancels its task and remembers having done so."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()


async def _await_on_clock(
    clock: _clock.Clock, limit: float, awaitable: Awaitable[Any]
) -> tuple[bool, Any]:
    """Await under a limit measured on ``clock`` (a fake one); ``(expired, result)``."""
    task = asyncio.current_task()
    assert task is not None
    end = clock.monotonic() + limit
    expired = False

    async def watch() -> None:
        nonlocal expired
        # A fake clock moves only when something sleeps on it: poll it once per loop turn.
        while clock.monotonic() < end:  # noqa: ASYNC110
            await asyncio.sleep(0)
        expired = True
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return False, await awaitable
    except asyncio.CancelledError:
        if expired and task.uncancel() == 0:
            return True, None
        raise
    finally:
        watcher.cancel()


def timeout(
    seconds: float | timedelta, *, name: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Bound a call to ``seconds`` (and to the ambient deadline, when shorter).

    Raises:
        resilient.TimeoutError: the call took too long (a subclass of the built-in
            ``TimeoutError``); async calls are cancelled, sync calls are abandoned in their
            worker thread.
        ValueError: ``seconds`` is not > 0 (at decoration time).
    """
    limit_s = seconds_of(seconds, "timeout")
    if limit_s <= 0:
        raise ValueError("timeout must be > 0 seconds (a zero timeout would fail every call)")
    check_arguments("timeout", {"seconds": limit_s}, "timeout")  # inf, 1e308: refused

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        check_target(fn, f"@timeout({seconds!r})")
        pname = name or policy_name(fn)
        layer = Layer("timeout", pname)

        if is_async_callable(fn):
            afn = cast("Callable[..., Awaitable[Any]]", fn)

            async def acall(*args: Any, **kwargs: Any) -> Any:
                limit = _limit(limit_s, pname)
                clock = _clock._current
                if type(clock) is _clock.SystemClock:
                    # asyncio.timeout's protocol (cancel at the limit, uncancel, convert) on
                    # one timer handle: about half the cost of the context manager.
                    loop = asyncio.get_running_loop()
                    task = asyncio.current_task(loop)
                    if task is None:  # pragma: no cover - awaited outside a task
                        raise RuntimeError("resilient.timeout needs to run inside a task")
                    expiry = _Expiry(task)
                    base = task.cancelling()
                    handle = loop.call_at(loop.time() + limit, expiry)
                    try:
                        return await afn(*args, **kwargs)
                    except asyncio.CancelledError:
                        if expiry.fired:
                            expiry.fired = False
                            if task.uncancel() <= base:
                                raise ResilientTimeout(limit, pname) from None
                        raise
                    finally:
                        handle.cancel()
                        if expiry.fired:  # the function swallowed the cancellation
                            task.uncancel()
                expired, result = await _await_on_clock(clock, limit, afn(*args, **kwargs))
                if expired:
                    raise ResilientTimeout(limit, pname)
                return result

            return cast("Callable[P, R]", wrap(acall, fn, layer))

        def call(*args: Any, **kwargs: Any) -> Any:
            limit = _limit(limit_s, pname)
            warn_if_on_loop("timeout", pname)
            ctx = contextvars.copy_context()
            return _run_within(lambda: ctx.run(fn, *args, **kwargs), limit, pname)

        return cast("Callable[P, R]", wrap(call, fn, layer))

    return decorate
