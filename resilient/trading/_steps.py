"""One algorithm for sync and async callers: a generator of steps, run by a thin shell.

An algorithm that must call something the caller may have to await (a broker method, a
lookup, a sleep) is written once as a generator that yields each such call as a function of no
arguments and receives its result (or has its exception thrown in at the ``yield``).
:func:`run` calls each step; :func:`arun` also awaits it when it returns an awaitable.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from typing import Any, TypeVar

__all__ = ["Steps", "arun", "run"]

T = TypeVar("T")
Steps = Generator[Callable[[], Any], Any, T]


def _resume(steps: Steps[Any], ok: bool, value: Any) -> tuple[bool, Any]:
    """Give ``steps`` the outcome of its last step: ``(True, its result)`` when it is done,
    else ``(False, the next step)``. What the algorithm raises propagates."""
    try:
        return False, (steps.send(value) if ok else steps.throw(value))
    except StopIteration as done:
        return True, done.value


def run(steps: Steps[T]) -> T:
    """Run ``steps`` synchronously."""
    done, item = _resume(steps, True, None)
    while not done:
        try:
            ok, value = True, item()
        except BaseException as exc:  # thrown into the algorithm, which decides
            ok, value = False, exc
        done, item = _resume(steps, ok, value)
    result: T = item
    return result


async def arun(steps: Steps[T]) -> T:
    """Run ``steps`` in a coroutine, awaiting the steps that return an awaitable."""
    done, item = _resume(steps, True, None)
    while not done:
        try:
            value = item()
            ok, value = True, (await value) if inspect.isawaitable(value) else value
        except BaseException as exc:  # a cancellation included: the algorithm's cleanup runs
            ok, value = False, exc
        done, item = _resume(steps, ok, value)
    result: T = item
    return result
