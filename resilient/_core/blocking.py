"""Say so, once per function, when a sync policy is about to block a running event loop.

A plain function decorated with ``retry`` sleeps between attempts, and one decorated with
``timeout`` waits for its worker thread: called from a coroutine (on the thread that runs the
event loop), either freezes every other task of the application for that long. The call still
proceeds — it is the application's choice — but the first time it happens for a function a
WARNING names the function and the async alternative (see :func:`resilient._core.log.warn_once`:
it is written even while the package's logging is off).
"""

from __future__ import annotations

from asyncio import _get_running_loop

from resilient._core.log import warn_once

__all__ = ["warn_if_on_loop"]

_ADVICE = {
    "retry": "its retry waits block every other task",
    "timeout": "the call and its timeout wait block every other task",
}


def warn_if_on_loop(policy: str, name: str) -> None:
    """Warn once per (``policy``, ``name``) when the calling thread runs an event loop."""
    if _get_running_loop() is None:
        return
    warn_once(
        f"blocking:{policy}:{name}",
        "{} is a plain function decorated with {}, called on the thread running an asyncio "
        "event loop: {}. Decorate an `async def` function instead (the policy then awaits), "
        "or call it with `await asyncio.to_thread({}, ...)`.",
        name,
        policy,
        _ADVICE[policy],
        name.rsplit(".", 1)[-1],
    )
