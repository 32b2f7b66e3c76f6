"""Shared by the breaker, retry and fallback tests: scripted outcomes in sync and async form."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

MODES = ["sync", "async"]


class Script:
    """Raises or returns according to a list of outcomes; counts the calls that ran."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def make(mode: str, body: Callable[..., Any]) -> Callable[..., Any]:
    """A sync or async function running ``body``."""
    if mode == "sync":

        def fn(*args: Any, **kwargs: Any) -> Any:
            return body(*args, **kwargs)

        return fn

    async def afn(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)  # the outcome arrives after an await
        return body(*args, **kwargs)

    return afn


async def invoke(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` and await the result when it is awaitable."""
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result
