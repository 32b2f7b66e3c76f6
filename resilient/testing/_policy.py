"""Policy helpers for tests: zero-wait retries and a capture of policy events."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from resilient._core.events import PolicyEvent, add_hook, remove_hook
from resilient._policies.retry import zero_wait

__all__ = ["capture_events", "zero_wait_retries"]


@contextmanager
def zero_wait_retries(max_attempts: int | None = None) -> Iterator[None]:
    """Retries inside the block never wait (no sleep is called, Retry-After included).

    Args:
        max_attempts: also cap every retry to this many attempts.
    """
    with zero_wait(max_attempts):
        yield


_capture: ContextVar[list[PolicyEvent] | None] = ContextVar("resilient_capture", default=None)


def _capture_hook(event: PolicyEvent) -> None:
    events = _capture.get()
    if events is not None:
        events.append(event)


_users = 0
_users_lock = threading.Lock()


@contextmanager
def capture_events() -> Iterator[list[PolicyEvent]]:
    """Collect the policy events emitted in the current context (tasks started inside
    inherit it) into the yielded list.

    The capturing hook is installed only while some capture is open, so outside one the
    policies keep their no-event fast paths."""
    global _users
    with _users_lock:
        if _users == 0:
            add_hook(_capture_hook)
        _users += 1
    events: list[PolicyEvent] = []
    token = _capture.set(events)
    try:
        yield events
    finally:
        _capture.reset(token)
        with _users_lock:
            _users -= 1
            if _users == 0:
                remove_hook(_capture_hook)
