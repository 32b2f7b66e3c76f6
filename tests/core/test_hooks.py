"""Policy hooks: one event shape, failing hooks swallowed and logged once, silent success."""

from __future__ import annotations

import io
import uuid

import pytest

from resilient import (
    CircuitOpenError,
    EventKind,
    FakeClock,
    PolicyEvent,
    add_hook,
    breaker,
    breakers,
    classify,
    disable_logging,
    enable_logging,
    fallback,
    remove_hook,
    retry,
)
from resilient._core import events as _hooks
from resilient._core.events import log_hook
from resilient._core.log import logging_enabled
from resilient.testing import capture_events, zero_wait_retries


@pytest.fixture(autouse=True)
def clock(fake_clock: FakeClock) -> FakeClock:
    return fake_clock


@pytest.fixture
def name() -> str:
    return f"hk-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def log() -> io.StringIO:
    sink = io.StringIO()
    enable_logging("DEBUG", json_lines=False, sink=sink)
    yield sink
    disable_logging()


def test_events_are_frozen_and_slotted() -> None:
    """PolicyEvent is immutable and has no __dict__."""
    event = PolicyEvent(EventKind.RETRY, "svc", attempt=1)
    with pytest.raises(AttributeError):
        event.attempt = 2  # type: ignore[misc]
    assert not hasattr(event, "__dict__")
    assert event._replace(attempt=2).attempt == 2


def test_hooks_get_breaker_transitions(name: str, clock: FakeClock) -> None:
    """Breaker transitions reach hooks with old and new state."""
    seen: list[PolicyEvent] = []
    remove = add_hook(seen.append)
    try:
        fn = breaker(name, failure_threshold=1, reset_timeout=1)(lambda ok: ok or 1 / 0)
        with pytest.raises(ZeroDivisionError):
            fn(False)
        clock.advance(1)
        fn(True)
    finally:
        remove()
    states = [(e.old_state, e.new_state) for e in seen if e.kind is EventKind.BREAKER_STATE]
    assert states == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    assert all(e.name == name and e.at == pytest.approx(clock.time()) for e in seen)


def test_no_event_on_success(name: str) -> None:
    """A successful call through every layer emits nothing."""
    fn = fallback(value=0)(retry(max_attempts=3)(breaker(name)(lambda: 1)))
    with capture_events() as events:
        for _ in range(10):
            assert fn() == 1
    assert events == []


def test_failing_hook_is_swallowed_and_logged_once(name: str, log: io.StringIO) -> None:
    """A hook that raises never breaks the call and is logged a single time."""

    def broken(event: PolicyEvent) -> None:
        raise RuntimeError("hook bug password=hunter22")

    add_hook(broken)
    try:
        fn = retry(max_attempts=3, name=name)(_always_down)
        for _ in range(3):
            with zero_wait_retries(), pytest.raises(ConnectionError):
                fn()
    finally:
        remove_hook(broken)
    text = log.getvalue()
    assert text.count("failed on a") == 1
    assert "hunter22" not in text


def _always_down() -> None:
    raise ConnectionError("down")


def test_log_hook_writes_sanitized_lines_without_arguments(name: str, log: io.StringIO) -> None:
    """The default hook logs name, attempt, wait and a sanitized error; never arguments."""
    fn = retry(max_attempts=2, initial_delay=0.5, max_delay=0.5, jitter=False, name=name)(
        lambda order: (_ for _ in ()).throw(ConnectionError("refused token=abc123secret"))
    )
    with pytest.raises(ConnectionError):
        fn({"api_key": "ORDER-PAYLOAD-KEY"})
    text = log.getvalue()
    assert f"retrying {name} (attempt 1 failed, next in 0.500s)" in text
    assert "ConnectionError" in text
    assert "abc123secret" not in text
    assert "ORDER-PAYLOAD-KEY" not in text


def test_fallback_episode_logged_once(name: str, log: io.StringIO) -> None:
    """A degraded episode writes one line, however many fallbacks it serves."""
    fn = fallback(value=0, name=name)(_always_down)
    for _ in range(5):
        fn()
    assert log.getvalue().count(f"{name} degraded") == 1


def test_remove_hook_and_default_hook_present() -> None:
    """The log hook is installed by default; remove_hook is silent for unknown hooks."""
    from resilient._core import events as _hooks

    assert log_hook in _hooks.hooks
    remove_hook(lambda e: None)
    assert log_hook in _hooks.hooks


def test_breaker_registry_cleared_between_names() -> None:
    """breakers.clear() forgets every breaker (test isolation helper)."""
    breaker(f"tmp-{uuid.uuid4().hex[:6]}")
    saved = dict(breakers._breakers)
    try:
        breakers.clear()
        assert len(breakers) == 0
    finally:
        breakers._breakers.update(saved)


def test_event_builds_every_field(name: str, clock: FakeClock) -> None:
    """event() stamps category, correlation id and time into a full PolicyEvent."""
    exc = ConnectionError("down")
    with capture_events() as events:
        _hooks.event(EventKind.RETRY, name, exc, attempt=2, wait=0.5, elapsed=1.5)
    (ev,) = [e for e in events if e.name == name]
    assert type(ev) is PolicyEvent
    assert len(ev) == len(PolicyEvent._fields)
    assert ev == PolicyEvent(
        EventKind.RETRY,
        name,
        exc,
        "network",
        2,
        0.5,
        1.5,
        correlation_id=ev.correlation_id,
        at=clock.time(),
    )


def test_log_hook_builds_no_record_below_the_handler_level(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without enable_logging(), or when its level drops the line, no record is built."""
    calls: list[str] = []

    class Recorder:
        def warning(self, *args: object) -> None:
            calls.append("warning")

        def info(self, *args: object) -> None:
            calls.append("info")

    monkeypatch.setattr(_hooks, "logger", Recorder())
    retrying = PolicyEvent(EventKind.RETRY, name, ConnectionError("down"), attempt=1)
    recovered = PolicyEvent(EventKind.FALLBACK_RECOVERED, name)
    disable_logging()
    assert not logging_enabled(50)
    log_hook(retrying)
    log_hook(recovered)
    assert calls == []
    try:
        enable_logging("ERROR", json_lines=False, sink=io.StringIO())
        assert logging_enabled(40) and not logging_enabled(30)
        log_hook(retrying)
        log_hook(recovered)
        assert calls == []
        enable_logging("WARNING", json_lines=False, sink=io.StringIO())
        log_hook(retrying)
        log_hook(recovered)
        assert calls == ["warning"]
        enable_logging("INFO", json_lines=False, sink=io.StringIO())
        log_hook(recovered)
        assert calls == ["warning", "info"]
    finally:
        disable_logging()
    assert not logging_enabled(50)


def test_every_retry_is_counted_in_metrics(name: str) -> None:
    """Retry counters batch their updates; a read sees every retry (past a batch, too)."""
    from resilient import metrics

    fn = retry(max_attempts=3, budget=False, name=name)(_always_down)
    with zero_wait_retries():
        for _ in range(600):
            with pytest.raises(ConnectionError):
                fn()
    counts = metrics.snapshot()["retries"]
    assert counts[f"{name}|1|ConnectionError"] == 600
    assert counts[f"{name}|2|ConnectionError"] == 600


@pytest.mark.parametrize(
    "cls",
    [
        ConnectionError,
        ConnectionRefusedError,
        ConnectionResetError,
        ConnectionAbortedError,
        BrokenPipeError,
        TimeoutError,
        ValueError,
        TypeError,
        PermissionError,
    ],
)
def test_plain_builtin_category_matches_the_full_classification(
    cls: type[BaseException],
) -> None:
    """The events' by-type shortcut for plain built-ins gives the full path's answer."""
    plain = cls("x")
    marked = cls("x")
    marked.note = "forces the full path"  # type: ignore[attr-defined]
    assert _hooks.category_of(plain) == classify(marked)


def test_retry_builds_no_event_with_only_default_hooks(name: str) -> None:
    """With logging off and only the default hooks, no hook takes retries; metrics still
    count them."""
    from resilient import metrics

    assert not logging_enabled()
    assert _hooks.retry_hooks == ()
    built: list[object] = []
    real_event = _hooks.event
    _hooks.event = lambda *a, **k: built.append(a)  # type: ignore[assignment]
    try:
        fn = retry(max_attempts=3, name=name)(_always_down)
        with zero_wait_retries(), pytest.raises(ConnectionError):
            fn()
    finally:
        _hooks.event = real_event  # type: ignore[assignment]
    assert [a[0] for a in built] == [EventKind.CALL_FAILED]
    retries = metrics.snapshot()["retries"]
    assert retries == {f"{name}|1|ConnectionError": 1, f"{name}|2|ConnectionError": 1}


def test_enabling_logging_routes_retries_to_the_log_hook(name: str) -> None:
    """enable_logging() adds the log hook to the retry table; disable_logging() removes it."""
    sink = io.StringIO()
    enable_logging("INFO", json_lines=False, sink=sink)
    try:
        assert log_hook in _hooks.retry_hooks
        fn = retry(max_attempts=2, name=name)(_always_down)
        with zero_wait_retries(), pytest.raises(ConnectionError):
            fn()
    finally:
        disable_logging()
    assert f"retrying {name} (attempt 1 failed" in sink.getvalue()
    assert log_hook not in _hooks.retry_hooks
    enable_logging("ERROR", json_lines=False, sink=sink)  # retries log at WARNING: not wanted
    try:
        assert log_hook not in _hooks.retry_hooks
        assert log_hook in _hooks.hooks
    finally:
        disable_logging()


def test_hook_with_kinds_gets_only_those(name: str, clock: FakeClock) -> None:
    """add_hook(kinds=...) delivers only the named kinds; unknown kinds are refused."""
    seen: list[PolicyEvent] = []
    remove = add_hook(seen.append, kinds=["breaker_state"])
    try:
        fn = retry(max_attempts=2, name=name)(breaker(name, failure_threshold=1)(_always_down))
        with zero_wait_retries(), pytest.raises(CircuitOpenError):  # attempt 2 is refused
            fn()
    finally:
        remove()
    assert [e.kind for e in seen] == [EventKind.BREAKER_STATE]
    assert seen[0].new_state == "open"
    with pytest.raises(ValueError, match="retried"):
        add_hook(seen.append, kinds=["retried"])
    assert seen.append not in _hooks.hooks


def test_suspended_delivers_nothing_and_restores(name: str) -> None:
    """Inside suspended() no hook runs; the hooks are back afterwards."""
    before = _hooks.hooks
    with capture_events() as events:
        with _hooks.suspended():
            assert _hooks.hooks == ()
            fn = retry(max_attempts=2, name=name)(_always_down)
            with zero_wait_retries(), pytest.raises(ConnectionError):
                fn()
        assert events == []
    assert _hooks.hooks == before


def test_metrics_record_retry_counts_other_loops(name: str) -> None:
    """metrics.record_retry adds to the same counts as @retry."""
    from resilient import metrics

    metrics.record_retry(name, 1, TimeoutError("t"))
    metrics.record_retry(name, 1, None)
    for _ in range(_hooks.FOLD_AT + 5):  # crosses the fold threshold
        metrics.record_retry(name, 2, TimeoutError("t"))
    retries = metrics.snapshot()["retries"]
    assert retries[f"{name}|1|TimeoutError"] == 1
    assert retries[f"{name}|1|"] == 1
    assert retries[f"{name}|2|TimeoutError"] == _hooks.FOLD_AT + 5
