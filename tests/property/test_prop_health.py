"""Health aggregation properties: any mix of checks and circuits gives the documented statuses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from _budget import examples
from hypothesis import given
from hypothesis import strategies as st

from resilient import breaker, breakers, fallback
from resilient.health import AlertManager, AlertRule, CheckResult, HealthRegistry, HealthStatus
from resilient.health._registry import STOP_GRACE
from resilient.health._sources import policy_components
from resilient.testing import Fault, FlakyService, reset_state, use_fake_clock

H, D, U = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNHEALTHY


@dataclass(frozen=True)
class Answer:
    """What one check does in one run, and the status the documentation promises for it."""

    value: Any
    expected: HealthStatus
    raises: bool = False
    hangs: bool = False

    def status(self, asynchronous: bool) -> HealthStatus:
        if self.hangs:
            # an async check that hangs times out; a sync one here just answers None
            return U if asynchronous else H
        return self.expected

    def __repr__(self) -> str:
        if self.raises:
            return "raise ConnectionRefusedError"
        return "hang" if self.hangs else repr(self.value)


def _spelled(word: str, expected: HealthStatus) -> st.SearchStrategy[Answer]:
    return st.sampled_from([word, word.upper(), word.title(), f" {word} "]).map(
        lambda s: Answer(s, expected)
    )


answers = st.one_of(
    st.just(Answer(None, H)),
    st.sampled_from([Answer(True, H), Answer(False, U)]),
    st.sampled_from([Answer(s, s) for s in HealthStatus]),
    *(_spelled(w, H) for w in ("healthy", "ok", "up", "pass")),
    *(_spelled(w, D) for w in ("degraded", "warn")),
    *(_spelled(w, U) for w in ("unhealthy", "down", "fail")),
    st.sampled_from([Answer(CheckResult(s, "detail"), s) for s in HealthStatus]),
    st.sampled_from(
        [Answer({"status": s.value, "detail": "x", "pool": 3}, s) for s in HealthStatus]
    ),
    st.sampled_from(
        [
            Answer({"status": True}, H),
            Answer({"status": "sideways"}, U),
            Answer("sideways", U),
            Answer(42, U),
            Answer(["healthy"], U),
        ]
    ),
    st.just(Answer(None, U, raises=True)),
    st.just(Answer(None, U, hangs=True)),
)


@dataclass(frozen=True)
class Component:
    name: str
    critical: bool
    asynchronous: bool
    runs: tuple[Answer, ...]


components = st.lists(
    st.builds(
        Component,
        name=st.sampled_from(["database", "cache", "broker", "market_data", "news", "ledger"]),
        critical=st.booleans(),
        asynchronous=st.booleans(),
        runs=st.lists(answers, min_size=3, max_size=3).map(tuple),
    ),
    max_size=5,
    unique_by=lambda c: c.name,
)


def expected_overall(statuses: dict[str, tuple[HealthStatus, bool]]) -> HealthStatus:
    """Critical unhealthy → unhealthy; any degraded or non-critical unhealthy → degraded."""
    if any(s is U and critical for s, critical in statuses.values()):
        return U
    if any(s is not H for s, _ in statuses.values()):
        return D
    return H


def make_check(component: Component, run: list[int]) -> Any:
    def answer() -> Any:
        current = component.runs[run[0]]
        if current.raises:
            raise ConnectionRefusedError(111, "password=hunter2 refused")
        return current.value

    if not component.asynchronous:
        return answer

    async def check() -> Any:
        if component.runs[run[0]].hangs:
            await asyncio.sleep(3600)
        return answer()

    return check


@given(components=components)
@examples(ci=1600)
async def test_report_follows_the_aggregation_rules(components: list[Component]) -> None:
    """Every check's answer maps to its documented status; the overall status, readiness and
    consecutive failures follow; the report is JSON and carries no secret."""
    registry = HealthRegistry()
    run = [0]
    for c in components:
        hangs = any(a.hangs for a in c.runs)
        registry.register(
            c.name,
            make_check(c, run),
            critical=c.critical,
            # A hanging async check meets a tiny timeout; the others complete without ever
            # yielding (async) or get a bound no loaded machine reaches (sync, in a thread),
            # so the outcome never depends on timing.
            timeout=0.005 if hangs and c.asynchronous else 300.0,
        )
    failures = {c.name: 0 for c in components}
    for index in range(3):
        run[0] = index
        report = await registry.check_all()
        expected: dict[str, tuple[HealthStatus, bool]] = {}
        for c in components:
            answer = c.runs[index]
            status = answer.status(c.asynchronous)
            expected[c.name] = (status, c.critical)
            got = report.components[c.name]
            assert got.status is status, f"{c.name}: {answer!r} gave {got.status}"
            assert got.critical is c.critical
            failures[c.name] = failures[c.name] + 1 if status is U else 0
            assert got.consecutive_failures == failures[c.name]
        assert report.overall_status is expected_overall(expected)
        assert report.ready == all(s is H for s, crit in expected.values() if crit)
        text = json.dumps(report.to_dict())
        assert "hunter2" not in text
        assert json.loads(text)["overall_status"] == report.overall_status.value


circuit_states = st.sampled_from(["closed", "open", "half-open"])


@given(
    circuits=st.lists(
        st.tuples(circuit_states, st.booleans(), st.booleans()), min_size=0, max_size=5
    )
)
@examples(ci=1400)
async def test_breakers_and_fallbacks_become_components(
    circuits: list[tuple[str, bool, bool]],
) -> None:
    """closed → healthy, half-open → degraded, open → unhealthy, a served fallback degrades a
    healthy circuit; breaker components are non-critical unless marked critical."""
    reset_state(forget_breakers=True)
    with use_fake_clock() as clock:
        expected: dict[str, tuple[HealthStatus, bool]] = {}
        registry = HealthRegistry()
        registry.add_provider(policy_components)
        try:
            for i, (state, served_fallback, critical) in enumerate(circuits):
                name = f"svc{i}"
                guarded = breaker(
                    name, failure_threshold=1, reset_timeout=10.0, success_threshold=2
                )
                # trip it with one failure, then (for half-open) one good trial of the two needed
                service = FlakyService([Fault("connection_refused")])
                call = guarded(service.wrap(lambda: "ok"))
                if state != "closed":
                    with contextlib.suppress(ConnectionRefusedError):
                        call()
                if state == "half-open":
                    clock.advance(10.0)
                    call()
                assert breakers.get(name).state == state
                if served_fallback:
                    failing = fallback(value=0, name=name)(FlakyService([Fault("timeout")]).call)
                    assert failing() == 0
                if critical:
                    registry.set_critical(name, True)
                status = {"closed": H, "half-open": D, "open": U}[state]
                if served_fallback and status is H:
                    status = D
                expected[name] = (status, critical)
            report = await registry.check_all()
            assert {n: (c.status, c.critical) for n, c in report.components.items()} == expected
            assert report.overall_status is expected_overall(expected)
        finally:
            reset_state(forget_breakers=True)


@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=120).map(float), st.booleans()),
        min_size=1,
        max_size=20,
    ),
    delay=st.sampled_from([0, 30, 90, 300]),
)
@examples(ci=1000)
def test_alert_fires_once_after_its_delay_and_resolves_once(
    steps: list[tuple[float, bool]], delay: int
) -> None:
    """An alert fires once the condition has held for its notification delay (on the clock),
    stays firing without repeating, and resolves once when the condition stops."""
    rule = AlertRule.parse(
        "broker_open",
        {
            "condition": 'circuit_breaker_state == "open"',
            "severity": "critical",
            "notification": delay if delay else "immediate",
        },
    )
    with use_fake_clock() as clock:
        alerts = AlertManager([rule])
        pending: float | None = None
        firing = False
        for gap, holds in steps:
            clock.advance(gap)
            state = "open" if holds else "closed"
            events = alerts.evaluate({"circuit_breaker_state": {"broker": state}})
            now, expected = clock.monotonic(), []
            if holds:
                pending = now if pending is None else pending
                if not firing and now - pending >= delay:
                    firing = True
                    expected.append("firing")
            else:
                if firing:
                    expected.append("resolved")
                pending, firing = None, False
            assert [e.state for e in events] == expected
            assert len(alerts.active()) == int(firing)


# -- checks that misbehave at their timeout -------------------------------------------------

BEHAVIOURS = ["answers", "raises", "swallows", "slow clean-up", "ignores cancel", "blocks"]


class Misbehaving:
    """One check with one behaviour; counts its starts and knows whether it still runs."""

    def __init__(self, behaviour: str, release: threading.Event) -> None:
        self.behaviour = behaviour
        self.release = release
        self.starts = 0
        self.running = 0

    def make(self) -> Any:
        if self.behaviour == "blocks":

            def blocking() -> bool:
                self.starts += 1
                self.running += 1
                try:
                    return self.release.wait(30.0)
                finally:
                    self.running -= 1

            return blocking

        async def check() -> Any:
            self.starts += 1
            self.running += 1
            try:
                return await self._body()
            finally:
                self.running -= 1

        return check

    async def _body(self) -> Any:
        if self.behaviour == "answers":
            return "degraded"
        if self.behaviour == "raises":
            raise ConnectionRefusedError(111, "refused")
        if self.behaviour == "swallows":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                return "healthy"  # a late, false all-clear
        if self.behaviour == "slow clean-up":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                await asyncio.sleep(0.005)
                raise
        while not self.release.is_set():  # ignores cancellation until released
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.002)
        return "healthy"


@given(
    checks=st.lists(
        st.tuples(st.sampled_from(BEHAVIOURS), st.sampled_from([0.01, 0.02, 0.04])),
        min_size=1,
        max_size=5,
    )
)
@examples(ci=150, dev=15)
async def test_the_report_arrives_by_its_deadline_whatever_checks_do(
    checks: list[tuple[str, float]],
) -> None:
    """Any mix of checks that answer, raise, swallow their cancellation, clean up slowly,
    ignore cancellation or block their thread: each of two runs returns by the longest
    timeout plus the stop grace; only a check that answered in time has its own status; a
    check still running from an earlier run is not started again."""
    release = threading.Event()
    registry = HealthRegistry()
    made = []
    for n, (behaviour, timeout) in enumerate(checks):
        check = Misbehaving(behaviour, release)
        made.append(check)
        registry.register(f"c{n}-{behaviour}", check.make(), timeout=timeout)
    bound = max(t for _, t in checks) + STOP_GRACE + 1.0  # 1 s: scheduling on a loaded host
    try:
        for _ in range(2):
            began = time.perf_counter()
            report = await registry.check_all()
            assert time.perf_counter() - began < bound
            for n, (behaviour, _) in enumerate(checks):
                got = report.components[f"c{n}-{behaviour}"]
                if behaviour == "answers":
                    assert got.status is D
                else:
                    assert got.status is U, (behaviour, got.detail)
                if behaviour in ("swallows", "slow clean-up", "ignores cancel", "blocks"):
                    assert got.data.get("timed_out") is True, (behaviour, got.detail)
                if behaviour in ("ignores cancel", "blocks"):
                    assert "did not stop at its timeout" in got.detail
        for check in made:
            if check.behaviour in ("ignores cancel", "blocks"):
                assert check.starts == 1, check.behaviour
            else:
                assert check.starts == 2, check.behaviour
    finally:
        release.set()
        for _ in range(1000):  # stragglers end once released; none outlives the example
            if not any(check.running for check in made):
                break
            await asyncio.sleep(0.005)
    assert not any(check.running for check in made)
