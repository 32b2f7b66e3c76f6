"""The health registry: check normalisation, aggregation, timeouts, the monitor."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from resilient import FakeClock, use_clock
from resilient.health import CheckResult, HealthRegistry, HealthStatus
from resilient.health._model import ComponentHealth, aggregate
from resilient.health._registry import STOP_GRACE

H, D, U = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNHEALTHY


class Boom(Exception):
    pass


def _raise() -> None:
    raise Boom("backend said no")


NORMALISATION: list[tuple[str, Callable[[], Any], HealthStatus, str]] = [
    ("None", lambda: None, H, ""),
    ("True", lambda: True, H, ""),
    ("False", lambda: False, U, "check returned False"),
    ("enum", lambda: HealthStatus.DEGRADED, D, ""),
    ("str healthy", lambda: "healthy", H, ""),
    ("str DEGRADED", lambda: "DEGRADED", D, ""),
    ("str ok", lambda: "ok", H, ""),
    ("str warn", lambda: "warn", D, ""),
    ("str down", lambda: "down", U, ""),
    ("str unknown", lambda: "purple", U, "unknown status"),
    ("CheckResult", lambda: CheckResult(D, "slow replica", {"lag_s": 3}), D, "slow replica"),
    ("mapping", lambda: {"status": "unhealthy", "detail": "no pool", "pool": 0}, U, "no pool"),
    ("mapping bool", lambda: {"status": True}, H, ""),
    ("mapping bad", lambda: {"status": 42}, U, "unknown status"),
    ("unsupported", lambda: 3.14, U, "unsupported float"),
    ("raises", _raise, U, "Boom: backend said no"),
]


@pytest.mark.parametrize(
    ("check", "status", "detail"),
    [pytest.param(c, s, d, id=i) for i, c, s, d in NORMALISATION],
)
async def test_sync_check_results_are_normalised(
    check: Callable[[], Any], status: HealthStatus, detail: str
) -> None:
    """Whatever a sync check returns (or raises) becomes a status with a detail."""
    reg = HealthRegistry()
    reg.register("c", check)
    report = await reg.check_all()
    comp = report.components["c"]
    assert comp.status is status
    assert detail in comp.detail


@pytest.mark.parametrize(
    ("check", "status", "detail"),
    [pytest.param(c, s, d, id=i) for i, c, s, d in NORMALISATION],
)
async def test_async_check_results_are_normalised(
    check: Callable[[], Any], status: HealthStatus, detail: str
) -> None:
    """The same normalisation holds for async checks."""

    async def acheck() -> Any:
        await asyncio.sleep(0)
        return check()

    reg = HealthRegistry()
    reg.register("c", acheck)
    report = await reg.check_all()
    assert report.components["c"].status is status
    assert detail in report.components["c"].detail


async def test_mapping_extra_keys_become_data_and_exceptions_are_categorised() -> None:
    """Extra keys of a mapping go to ``data``; a raising check records its error category."""
    reg = HealthRegistry()
    reg.register("db", lambda: {"status": "healthy", "pool": {"size": 5}})

    def refused() -> None:
        raise ConnectionRefusedError("refused")

    reg.register("api", refused)
    report = await reg.check_all()
    assert report.components["db"].data == {"pool": {"size": 5}}
    assert report.components["api"].data["category"] == "network"


AGGREGATION = [
    ([], H),
    ([(H, True), (H, False)], H),
    ([(H, True), (D, True)], D),
    ([(H, True), (D, False)], D),
    ([(H, True), (U, False)], D),
    ([(U, True), (H, False)], U),
    ([(U, True), (D, True), (U, False)], U),
    ([(D, False), (U, False)], D),
]


@pytest.mark.parametrize(("components", "expected"), AGGREGATION)
def test_aggregation_rules(
    components: list[tuple[HealthStatus, bool]], expected: HealthStatus
) -> None:
    """Critical unhealthy → unhealthy; degraded or non-critical unhealthy → degraded."""
    comps = {
        f"c{i}": ComponentHealth(f"c{i}", status, critical, 0.0, "", "", 0)
        for i, (status, critical) in enumerate(components)
    }
    assert aggregate(comps) is expected


async def test_aggregation_through_check_all() -> None:
    """A non-critical failure degrades; a critical one makes the system unhealthy."""
    reg = HealthRegistry()
    reg.register("db", lambda: True, critical=True)
    reg.register("cache", lambda: False, critical=False)
    report = await reg.check_all()
    assert report.overall_status is D
    assert report.ready
    reg.register("db", lambda: False, critical=True)
    report = await reg.check_all()
    assert report.overall_status is U
    assert not report.ready


async def test_hanging_async_check_times_out_without_stalling_the_report() -> None:
    """A check that never returns is unhealthy after its timeout; the others still report."""
    reg = HealthRegistry()

    async def hang() -> None:
        await asyncio.Event().wait()

    reg.register("hang", hang, timeout=0.05)
    reg.register("fast", lambda: True)
    started = time.perf_counter()
    report = await reg.check_all()
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0
    assert report.components["hang"].status is U
    assert "timed out after 0.05s" in report.components["hang"].detail
    assert report.components["fast"].status is H


async def test_hanging_sync_check_times_out_and_never_blocks_the_loop() -> None:
    """A blocking sync check runs in a daemon thread; the loop keeps running meanwhile."""
    release = threading.Event()
    reg = HealthRegistry()
    reg.register("blocking", lambda: release.wait(5.0), timeout=0.05)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    report = await reg.check_all()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    release.set()
    assert report.components["blocking"].status is U
    assert ticks >= 3  # the loop ran while the check blocked


async def test_check_raising_timeout_itself_is_not_reported_as_our_timeout() -> None:
    """A check that raises TimeoutError on its own is reported with its own message."""

    async def own_timeout() -> None:
        raise TimeoutError("upstream timed out")

    reg = HealthRegistry()
    reg.register("c", own_timeout, timeout=5.0)
    report = await reg.check_all()
    assert report.components["c"].detail == "TimeoutError: upstream timed out"


async def test_consecutive_failures_and_last_checked() -> None:
    """Failures in a row are counted and reset by a success; last_checked is ISO UTC."""
    state = {"ok": False}
    reg = HealthRegistry()
    reg.register("svc", lambda: state["ok"])
    with use_clock(FakeClock(wall=1_700_000_000.0, start=0.0)):
        for expected in (1, 2, 3):
            report = await reg.check_all()
            assert report.components["svc"].consecutive_failures == expected
        state["ok"] = True
        report = await reg.check_all()
    assert report.components["svc"].consecutive_failures == 0
    assert report.components["svc"].last_checked == "2023-11-14T22:13:20+00:00"
    assert report.timestamp.endswith("+00:00")


async def test_report_to_dict_is_json_serialisable() -> None:
    """The report's dict form has the contract's keys and serialises to JSON."""
    reg = HealthRegistry()
    reg.register("db", lambda: CheckResult(H, "", {"latency": 0.1}))
    report = await reg.check_all()
    data = report.to_dict()
    assert set(data) >= {"overall_status", "components", "timestamp"}
    assert data["components"]["db"]["status"] == "healthy"
    assert set(data["components"]["db"]) >= {
        "status",
        "latency_ms",
        "detail",
        "last_checked",
        "consecutive_failures",
        "critical",
    }
    json.dumps(data)


def test_registration_errors_are_clear() -> None:
    """Bad registrations fail with a message naming the problem."""
    reg = HealthRegistry()
    with pytest.raises(TypeError, match="must be callable"):
        reg.register("x", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        reg.register("", lambda: True)
    with pytest.raises(ValueError, match="must be > 0"):
        reg.register("x", lambda: True, timeout=0)


async def test_unregister_and_replace() -> None:
    """Re-registering replaces; unregistering removes the component."""
    reg = HealthRegistry()
    reg.register("x", lambda: False)
    reg.register("x", lambda: True)
    assert (await reg.check_all()).components["x"].status is H
    assert reg.unregister("x") is True
    assert reg.unregister("x") is False
    assert (await reg.check_all()).components == {}


async def test_providers_add_dynamic_components_and_criticality_override() -> None:
    """Provider components appear as non-critical unless overridden."""
    reg = HealthRegistry()
    remove = reg.add_provider(lambda: {"alpaca": CheckResult(U, "circuit open")})
    report = await reg.check_all()
    assert report.components["alpaca"].critical is False
    assert report.overall_status is D
    reg.set_critical("alpaca", True)
    assert (await reg.check_all()).overall_status is U
    remove()
    assert "alpaca" not in (await reg.check_all()).components


async def test_checks_run_concurrently() -> None:
    """Ten checks of 50 ms each take far less than 500 ms together."""
    reg = HealthRegistry()

    async def slow() -> bool:
        await asyncio.sleep(0.05)
        return True

    for i in range(10):
        reg.register(f"s{i}", slow)
    started = time.perf_counter()
    await reg.check_all()
    assert time.perf_counter() - started < 0.3


async def test_monitor_runs_cycles_and_stops_without_leaking_a_task() -> None:
    """The monitor runs the checks each interval, stops cleanly and leaves no task behind."""
    reg = HealthRegistry()
    runs = 0

    def check() -> bool:
        nonlocal runs
        runs += 1
        return True

    seen: list[str] = []
    reg.register("c", check)
    reg.on_report(lambda report: seen.append(report.overall_status.value))
    before = asyncio.all_tasks()
    with use_clock(FakeClock()):
        task = reg.start_monitor(interval=30.0)
        assert reg.start_monitor() is task  # idempotent
        assert reg.monitoring
        for _ in range(2000):
            if len(seen) >= 3:  # listeners run after the cycle's checks
                break
            await asyncio.sleep(0.001)
        await reg.stop_monitor()
        await reg.stop_monitor()  # idempotent
    assert runs >= 3
    assert seen[:3] == ["healthy"] * 3
    assert task.done()
    assert not reg.monitoring
    assert asyncio.all_tasks() == before


async def test_failing_listener_does_not_break_the_report() -> None:
    """A report listener that raises is logged and ignored."""
    reg = HealthRegistry()
    reg.register("c", lambda: True)

    def bad(report: object) -> None:
        raise RuntimeError("listener bug")

    reg.on_report(bad)
    report = await reg.check_all()
    assert report.overall_status is H
    assert reg.last_report is report


def test_check_all_sync_from_plain_code() -> None:
    """Synchronous callers can run the checks once."""
    reg = HealthRegistry()
    reg.register("c", lambda: "degraded")
    assert reg.check_all_sync().overall_status is D


async def test_a_hung_sync_check_is_not_started_again_while_it_hangs() -> None:
    """Each cycle reports the hung check unhealthy without piling up threads; once it
    returns, the next cycle runs it again."""
    release = threading.Event()
    calls = {"n": 0}

    def blocking() -> bool:
        calls["n"] += 1
        release.wait(5.0)
        return True

    reg = HealthRegistry()
    reg.register("blocking", blocking, timeout=0.05)
    first = await reg.check_all()
    assert "timed out after 0.05s" in first.components["blocking"].detail
    for _ in range(3):
        report = await reg.check_all()
        assert "still running from an earlier run" in report.components["blocking"].detail
    assert calls["n"] == 1
    assert report.components["blocking"].consecutive_failures == 4
    release.set()
    for _ in range(100):
        report = await reg.check_all()
        if report.components["blocking"].status is H:
            break
        await asyncio.sleep(0.01)
    assert report.components["blocking"].status is H
    assert calls["n"] == 2


def test_reset_keeps_providers_and_clear_forgets_them() -> None:
    """reset() forgets checks, listeners and results but keeps providers; clear() drops all."""
    reg = HealthRegistry()
    reg.add_provider(lambda: {"breaker": CheckResult(D, "half open")})
    reg.register("db", lambda: True)
    reg.on_report(lambda report: None)
    reg.check_all_sync()
    reg.reset()
    assert reg.names() == [] and reg.last_report is None and reg.component("db") is None
    assert list(reg.check_all_sync().components) == ["breaker"]
    reg.register("db", lambda: True)
    reg.clear()
    assert reg.names() == [] and reg.last_report is None
    assert reg.check_all_sync().components == {}


# -- checks that swallow cancellation or keep running ----------------------------------------

SLACK = 1.0  # scheduling slack on a loaded machine; the bound itself is timeout + stop grace


def _stubborn(started: list[float], release: threading.Event) -> Callable[[], Any]:
    """An async check that ignores every cancellation until ``release`` is set."""

    async def check() -> str:
        started.append(time.perf_counter())
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # swallowed, on purpose
                await asyncio.sleep(0.005)
        return "healthy"

    return check


async def test_a_check_that_swallows_cancellation_is_not_reported_healthy() -> None:
    """Cancelled at its timeout, the check catches CancelledError and answers "healthy": the
    answer came too late, the component is unhealthy (timed out)."""

    async def sly() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "healthy"
        return "healthy"

    reg = HealthRegistry()
    reg.register("sly", sly, timeout=0.05)
    report = await reg.check_all()
    assert report.components["sly"].status is U
    assert "timed out after 0.05s" in report.components["sly"].detail


async def test_a_check_that_keeps_running_never_holds_up_the_report() -> None:
    """check_all() returns by the check's timeout plus the stop grace, reports the check
    unhealthy ("did not stop at its timeout") and does not start it again while it runs;
    once it ends, the next run starts it afresh."""
    started: list[float] = []
    release = threading.Event()
    reg = HealthRegistry()
    reg.register("stubborn", _stubborn(started, release), timeout=0.05)
    reg.register("fine", lambda: True)
    try:
        for round_ in range(3):
            began = time.perf_counter()
            report = await reg.check_all()
            assert time.perf_counter() - began < 0.05 + STOP_GRACE + SLACK
            comp = report.components["stubborn"]
            assert comp.status is U
            assert "did not stop at its timeout" in comp.detail
            assert comp.data["still_running"] is True
            assert report.components["fine"].status is H
            assert len(started) == 1, f"started again in round {round_}"
    finally:
        release.set()
    for _ in range(200):
        await asyncio.sleep(0.01)
        report = await reg.check_all()
        if report.components["stubborn"].status is H:
            break
    assert report.components["stubborn"].status is H
    assert len(started) == 2


async def test_a_blocked_sync_check_did_not_stop_and_is_not_started_again() -> None:
    """A sync check blocking in its thread is reported as not stopped, by its deadline."""
    release = threading.Event()
    calls = []

    def blocking() -> bool:
        calls.append(1)
        return release.wait(10.0)

    reg = HealthRegistry()
    reg.register("blocking", blocking, timeout=0.05)
    try:
        for _ in range(2):
            began = time.perf_counter()
            report = await reg.check_all()
            assert time.perf_counter() - began < 0.05 + STOP_GRACE + SLACK
            assert report.components["blocking"].status is U
            assert "did not stop at its timeout" in report.components["blocking"].detail
        assert len(calls) == 1
    finally:
        release.set()


def test_check_all_sync_returns_by_the_deadline_with_a_stubborn_check() -> None:
    """From sync code too: the event loop is not held open by a check that ignores
    cancellation (asyncio.run would wait for it forever)."""
    started: list[float] = []
    release = threading.Event()
    reg = HealthRegistry()
    reg.register("stubborn", _stubborn(started, release), timeout=0.05)
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(reg.check_all_sync()), daemon=True)
    worker.start()
    worker.join(0.05 + STOP_GRACE + SLACK + 1.0)
    release.set()
    assert not worker.is_alive(), "check_all_sync() did not return"
    assert outcome[0].components["stubborn"].status is U


@pytest.mark.parametrize("kind", ["swallows", "keeps running", "blocks a thread"])
async def test_check_all_bound_holds_for_every_misbehaviour(kind: str) -> None:
    """Three misbehaving checks with different timeouts: the report arrives by the largest
    timeout plus the stop grace."""
    release = threading.Event()
    started: list[float] = []

    async def swallows() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.02)  # some clean-up first, within the grace
        return "healthy"

    def blocks() -> bool:
        return release.wait(10.0)

    check: Callable[[], Any] = {
        "swallows": swallows,
        "keeps running": _stubborn(started, release),
        "blocks a thread": blocks,
    }[kind]
    reg = HealthRegistry()
    for n, timeout in enumerate((0.02, 0.05, 0.1)):
        reg.register(f"c{n}", check, timeout=timeout)
    try:
        began = time.perf_counter()
        report = await reg.check_all()
        assert time.perf_counter() - began < 0.1 + STOP_GRACE + SLACK
        assert all(c.status is U for c in report.components.values())
        assert all(c.data.get("timed_out") for c in report.components.values())
    finally:
        release.set()


async def test_a_sync_callable_returning_a_coroutine_is_awaited() -> None:
    """``register(name, lambda: ping())`` with an async ``ping``: its coroutine is awaited."""

    async def ping() -> str:
        await asyncio.sleep(0)
        return "degraded"

    reg = HealthRegistry()
    reg.register("lambda", lambda: ping())
    report = await reg.check_all()
    assert report.components["lambda"].status is D


class _Unprintable:
    """A value whose every conversion raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    __str__ = __repr__

    def __bool__(self) -> bool:
        raise RuntimeError("bool")


class _BrokenMapping(dict[str, Any]):
    def __contains__(self, key: object) -> bool:
        raise RuntimeError("contains")


@pytest.mark.parametrize(
    ("label", "answer"),
    [
        ("detail", {"status": "degraded", "detail": _Unprintable()}),
        ("mapping", _BrokenMapping(status="ok")),
        ("data", {"status": "healthy", "when": _Unprintable()}),
        ("CheckResult data", CheckResult(D, "fine", {"x": [_Unprintable()]})),
    ],
)
async def test_a_check_returning_unreadable_values_never_breaks_the_report(
    label: str, answer: Any
) -> None:
    """Whatever a check returns, check_all() returns a report that serialises to JSON."""
    reg = HealthRegistry()
    reg.register("odd", lambda: answer)
    reg.register("fine", lambda: True)
    report = await reg.check_all()
    assert report.components["fine"].status is H
    odd = report.components["odd"]
    assert odd.status in (U, D, H)
    json.dumps(report.to_dict(), default=str)
    json.dumps(report.components["odd"].to_dict(), default=str)


async def test_check_source_checks_run_like_registered_ones_and_lose_to_them() -> None:
    """A check source's checks run at each report (with their criticality) and are listed by
    names(); a registered check of the same name wins; one withdrawn disappears."""
    registry = HealthRegistry()
    offered: dict[str, tuple[Callable[[], Any], bool, float | None]] = {
        "db": (lambda: "down", True, None),
        "cache": (lambda: "healthy", False, 1.0),
    }
    remove = registry.add_check_source(lambda: dict(offered))
    registry.register("cache", lambda: "degraded", critical=False)
    assert sorted(registry.names()) == ["cache", "db"]
    report = await registry.check_all()
    assert report.components["db"].status is U and report.components["db"].critical
    assert report.components["cache"].status is D  # the registered check
    assert report.overall_status is U
    del offered["db"]
    assert "db" not in (await registry.check_all()).components
    remove()
    assert registry.names() == ["cache"]


async def test_a_failing_check_source_leaves_the_other_checks_running() -> None:
    registry = HealthRegistry()

    def broken() -> dict[str, Any]:
        raise Boom("source down")

    registry.add_check_source(broken)
    registry.register("api", lambda: True)
    assert registry.names() == ["api"]
    assert set((await registry.check_all()).components) == {"api"}
