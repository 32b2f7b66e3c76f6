"""Policy hooks that fail: logged once per hook (also for hooks that cannot be weakly
referenced), never breaking the call; other hooks still receive the event."""

from __future__ import annotations

import json

import pytest

from resilient import (
    EventKind,
    PolicyEvent,
    add_hook,
    disable_logging,
    enable_logging,
    fallback,
    retry,
)


class _SlottedHook:
    """A callable object without ``__weakref__``."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, event: PolicyEvent) -> None:
        self.calls += 1
        raise RuntimeError("hook bug")


@pytest.mark.parametrize("weakly_referenceable", [True, False])
def test_a_failing_hook_is_logged_once_and_ignored(weakly_referenceable: bool) -> None:
    slotted = _SlottedHook()
    if weakly_referenceable:

        def failing(event: PolicyEvent) -> None:
            slotted(event)

        hook = failing
    else:
        hook = slotted  # type: ignore[assignment]
    seen: list[EventKind] = []
    remove_failing = add_hook(hook, kinds=[EventKind.FALLBACK_SERVED])
    remove_seen = add_hook(lambda e: seen.append(e.kind), kinds=["fallback_served"])
    lines: list[str] = []
    enable_logging("ERROR", json_lines=True, sink=lines.append)
    try:

        @fallback(value=0, name="hook-fail")
        def down() -> int:
            raise ConnectionError("down")

        assert down() == 0 and down() == 0
    finally:
        disable_logging()
        remove_failing()
        remove_seen()
    assert seen == [EventKind.FALLBACK_SERVED, EventKind.FALLBACK_SERVED]
    assert slotted.calls == 2  # called every time, logged once
    failures = [json.loads(line)["message"] for line in lines if "policy hook" in line]
    assert len(failures) == 1
    assert (
        "failed on a fallback_served event and is ignored: RuntimeError: hook bug" in (failures[0])
    )


def test_retry_events_describe_the_error_in_the_log() -> None:
    lines: list[str] = []
    enable_logging("INFO", json_lines=True, sink=lines.append)
    failures = 1
    try:

        @retry(max_attempts=2, initial_delay=0, max_delay=0, budget=False, name="hook-retry")
        def flaky() -> str:
            nonlocal failures
            if failures:
                failures -= 1
                raise ConnectionError("reset by peer")
            return "ok"

        assert flaky() == "ok"
    finally:
        disable_logging()
    messages = [json.loads(line)["message"] for line in lines]
    assert any("hook-retry" in m and "ConnectionError: reset by peer" in m for m in messages)
