"""Stream supervisor on real sockets: a local websockets server behind a FaultProxy."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from typing import Any

import pytest
from _stream_support import eventually, quote_feed, send_subscribe, wall_at

from resilient import metrics
from resilient.health import AlertManager, AlertRule, HealthOrchestrator, HealthRegistry
from resilient.streams import Gap, MarketCalendar, StreamSupervisor, websocket
from resilient.testing import FakeClock, use_fake_clock

WEEKDAYS = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "09:30-16:00")
US = MarketCalendar.build(timezone="America/New_York", sessions=WEEKDAYS, name="us")


class Recorder:
    """Messages received and gaps reported."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.gaps: list[Gap] = []

    def on_message(self, raw: Any) -> None:
        self.messages.append(json.loads(raw))

    def on_gap(self, gap: Gap) -> None:
        self.gaps.append(gap)


def counting(connect: Any, clock: Any, times: list[float]) -> Any:
    """``connect`` that records the clock time of every attempt."""

    def attempt() -> Any:
        times.append(clock.monotonic())
        return connect()

    return attempt


def supervisor(
    port: int, rec: Recorder, registry: HealthRegistry | None = None, **options: Any
) -> StreamSupervisor:
    options.setdefault("subscriptions", ["AAPL", "MSFT"])
    connect = options.pop("connect", websocket(f"ws://127.0.0.1:{port}", proxy=None))
    return StreamSupervisor(
        "quotes",
        connect,
        subscribe=send_subscribe,
        on_message=rec.on_message,
        on_gap=rec.on_gap,
        registry=registry if registry is not None else HealthRegistry(),
        rng=random.Random(7),
        **options,
    )


async def test_reset_reconnects_resubscribes_and_reports_the_gap() -> None:
    """A reset connection is reconnected, every subscription is sent again, and the gap
    callback gets the interval from the last message before the reset to the reconnection."""
    rec = Recorder()
    async with quote_feed() as (server, proxy):
        sup = supervisor(proxy.port, rec, initial_delay=0.05, idle_timeout=5)
        async with sup:
            await eventually(lambda: len(rec.messages) >= 4, what="first messages")
            await sup.subscribe("SPY")
            await eventually(lambda: any(m["S"] == "SPY" for m in rec.messages), what="SPY")
            before = time.time()
            assert proxy.reset_all() == 1
            await eventually(lambda: server.connections == 2, what="the reconnection")
            await eventually(lambda: len(rec.gaps) == 1, what="the gap")
            count = len(rec.messages)
            await eventually(lambda: len(rec.messages) > count + 3, what="data after the gap")
            health = sup.health()
    assert server.subscribe_requests[0] == ["AAPL", "MSFT"]
    assert server.subscribe_requests[1] == ["SPY"]
    assert server.subscribe_requests[2] == ["AAPL", "MSFT", "SPY"]  # all of them, once
    gap = rec.gaps[0]
    assert gap.stream == "quotes" and gap.subscriptions == ("AAPL", "MSFT", "SPY")
    assert gap.start <= before <= gap.end and 0 < gap.seconds < 5
    assert gap.reason in ("error", "closed")
    assert sup.reconnects[gap.reason] == 1
    assert health["status"] == "healthy" and health["connected"] is True
    assert health["subscriptions"] == 3 and health["reconnects"] == 1


async def test_backoff_spacing_on_the_fake_clock_while_refused() -> None:
    """While the feed refuses connections, attempts are spaced by exponential backoff with
    jitter (measured on the fake clock): never two attempts without a wait between them."""
    rec = Recorder()
    times: list[float] = []
    async with quote_feed() as (_server, proxy):
        proxy.refuse = True
        with use_fake_clock() as clock:
            connect = counting(websocket(f"ws://127.0.0.1:{proxy.port}", proxy=None), clock, times)
            sup = supervisor(
                proxy.port,
                rec,
                connect=connect,
                initial_delay=1.0,
                max_delay=16.0,
                multiplier=2.0,
                jitter=0.2,
                failure_threshold=100,
            )
            async with sup:
                await eventually(lambda: len(times) >= 9, what="nine attempts")
    spacing = [b - a for a, b in itertools.pairwise(times)][:8]
    for n, wait in enumerate(spacing, start=1):
        base = min(16.0, 2.0 ** (n - 1))
        assert base * 0.8 - 1e-9 <= wait <= base + 1e-9, (n, wait, spacing)
    assert sup.reconnects["connect_error"] >= 8
    assert rec.messages == []


async def test_breaker_opens_and_no_attempt_is_made_while_it_is_open() -> None:
    """After ``failure_threshold`` failed connections the stream's breaker opens: the next
    attempt waits out ``reset_timeout`` and the component is unhealthy meanwhile."""
    rec = Recorder()
    times: list[float] = []
    registry = HealthRegistry()
    async with quote_feed() as (server, proxy):
        proxy.refuse = True
        with use_fake_clock() as clock:
            connect = counting(websocket(f"ws://127.0.0.1:{proxy.port}", proxy=None), clock, times)
            sup = supervisor(
                proxy.port,
                rec,
                registry,
                connect=connect,
                initial_delay=1.0,
                max_delay=2.0,
                jitter=0.0,
                failure_threshold=3,
                reset_timeout=30.0,
            )
            async with sup:
                await eventually(lambda: sup.breaker.state == "open", what="the breaker opening")
                await eventually(lambda: len(times) >= 5, what="trial attempts")
                proxy.refuse = False
                await eventually(lambda: len(rec.messages) >= 2, what="recovery")
                await eventually(lambda: sup.breaker.state == "closed", what="closing")
    assert times[1] - times[0] == pytest.approx(1.0)
    assert times[2] - times[1] == pytest.approx(2.0)
    assert times[3] - times[2] >= 30.0  # held off by the open breaker
    assert server.connections >= 1


async def test_health_states() -> None:
    """Connecting is degraded, an open circuit is unhealthy, a closed market is healthy."""
    never: asyncio.Event = asyncio.Event()

    async def hang() -> Any:
        await never.wait()

    registry = HealthRegistry()
    sup = StreamSupervisor(
        "quiet", hang, on_message=print, registry=registry, alert_after=1e6, connect_timeout=1e6
    )
    async with sup:
        await asyncio.sleep(0.01)
        starting = (await registry.check_all()).components["stream.quiet"]
        sup.breaker.force_open()
        tripped = (await registry.check_all()).components["stream.quiet"]
    assert (starting.status.value, starting.detail) == ("degraded", "connecting")
    assert tripped.status.value == "unhealthy" and "circuit open" in tripped.detail
    assert tripped.data["connected"] is False and tripped.data["market_open"] is True
    with use_fake_clock(wall=wall_at(2026, 12, 25, 11, 0) - 1_000.0):  # Christmas
        closed = StreamSupervisor(
            "xmas",
            hang,
            on_message=print,
            calendar=US.__class__.build(
                timezone="America/New_York", sessions=WEEKDAYS, holidays=["2026-12-25"]
            ),
        )
        report = closed.health()
    assert report["status"] == "healthy" and report["next_open"] == "2026-12-28T14:30:00Z"


async def test_blackhole_is_detected_by_idle_timeout_and_reconnected() -> None:
    """A silent (black-holed) connection is reconnected after ``idle_timeout`` without a
    message; when the link heals the data flows again and the gap is reported."""
    rec = Recorder()
    async with quote_feed() as (server, proxy):
        sup = supervisor(proxy.port, rec, initial_delay=0.05, idle_timeout=0.3, connect_timeout=0.3)
        async with sup:
            await eventually(lambda: len(rec.messages) >= 2, what="first messages")
            proxy.blackhole = True
            await eventually(lambda: sup.reconnects["idle"] >= 1, what="idle reconnect")
            await asyncio.sleep(0.2)
            proxy.blackhole = False
            await eventually(lambda: len(rec.gaps) >= 1, what="the gap after the black hole")
            count = len(rec.messages)
            await eventually(lambda: len(rec.messages) > count, what="data again")
    assert rec.gaps[0].reason == "idle"
    assert rec.gaps[0].seconds >= 0.3
    assert server.connections >= 2


async def test_heartbeat_detects_a_dead_link_before_the_idle_timeout() -> None:
    """With a heartbeat, a black hole is found when the pong does not come back."""
    rec = Recorder()
    async with quote_feed() as (server, proxy):
        server.silent = True  # no data at all: only the heartbeat can tell
        sup = supervisor(
            proxy.port,
            rec,
            initial_delay=0.05,
            idle_timeout=60,
            heartbeat_interval=0.1,
            heartbeat_timeout=0.5,
        )
        async with sup:
            await eventually(lambda: server.connections == 1, what="a connection")
            await asyncio.sleep(0.5)  # pongs answer: nothing happens
            assert sup.reconnects == {}
            proxy.blackhole = True
            await eventually(lambda: sup.reconnects["heartbeat"] >= 1, what="heartbeat failure")
    assert sup.reconnects["idle"] == 0


async def test_latency_is_not_an_outage() -> None:
    """Added latency delays messages but causes no reconnect."""
    rec = Recorder()
    async with quote_feed(interval=0.02) as (_server, proxy):
        proxy.latency = 0.05
        sup = supervisor(proxy.port, rec, idle_timeout=1.0)
        async with sup:
            await eventually(lambda: len(rec.messages) >= 10, what="messages through latency")
    assert sup.reconnects == {}
    assert sup.attempts == 1


async def test_no_spinning_while_the_server_is_down() -> None:
    """While every connection is refused the supervisor sleeps between attempts: CPU time
    stays a small share of the wall time and attempts follow the backoff."""
    rec = Recorder()
    async with quote_feed() as (_server, proxy):
        proxy.refuse = True
        sup = supervisor(proxy.port, rec, initial_delay=0.05, max_delay=0.2, failure_threshold=1000)
        wall0, cpu0 = time.monotonic(), time.process_time()
        async with sup:
            await asyncio.sleep(3.0)
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    share = cpu / wall
    print(
        f"\nCPU while down: {cpu * 1000:.0f} ms in {wall:.2f} s ({share:.1%}), "
        f"{sup.attempts} attempts"
    )
    assert share < 0.15, f"{share:.1%} CPU while down"
    assert 5 <= sup.attempts <= 3.0 / (0.2 * 0.8) + 5


async def test_market_closed_no_reconnect_storm_and_no_alert() -> None:
    """Over a weekend a silent feed is not reconnected and raises no alert; a refused feed is
    retried at the capped backoff without tripping its breaker. Once the market opens, the
    same silence is an idle reconnect and, after ``alert_after``, an alert."""
    rec = Recorder()
    registry = HealthRegistry()
    rule = AlertRule.parse(
        "stream_silent",
        {
            "condition": 'stream.quotes_health == "unhealthy"',
            "severity": "critical",
            "notification": "immediate",
        },
    )
    saturday = wall_at(2026, 12, 5, 12, 0)
    clock = FakeClock(start=1_000.0, wall=saturday - 1_000.0)
    orchestrator = HealthOrchestrator(
        registry, alerts=AlertManager([rule], clock=clock), clock=clock
    )
    async with quote_feed() as (server, proxy):
        server.silent = True
        with use_fake_clock(1_000.0, saturday - 1_000.0) as clock:
            sup = supervisor(
                proxy.port,
                rec,
                registry,
                calendar=US,
                idle_timeout=30,
                alert_after=60,
                initial_delay=1.0,
                max_delay=60.0,
                failure_threshold=3,
            )
            orchestrator.alerts._clock = clock
            async with sup:
                await eventually(lambda: sup.connected, what="a connection")
                for _ in range(20):  # 20 hours of Saturday/Sunday silence
                    clock.advance(3600)
                    await asyncio.sleep(0.005)
                    await orchestrator.run_cycle()
                assert sup.reconnects == {} and sup.attempts == 1
                assert registry.component("stream.quotes").status.value == "healthy"
                assert "market closed" in registry.component("stream.quotes").detail
                assert orchestrator.alerts.active() == []

                # the feed now refuses connections: an hour of closed-market retries
                proxy.refuse = True
                proxy.reset_all()
                await eventually(lambda: sup.attempts >= 3, what="retries")
                start, attempts = clock.monotonic(), sup.attempts
                await eventually(lambda: clock.monotonic() - start > 3600, what="an hour")
                made, hours = sup.attempts - attempts, (clock.monotonic() - start) / 3600
                assert made <= hours * 3600 / (60 * 0.8) + 2, made  # capped backoff, no storm
                assert sup.breaker.state == "closed"  # closed-market failures trip nothing
                await orchestrator.run_cycle()
                assert orchestrator.alerts.active() == []
                proxy.refuse = False
                await eventually(lambda: sup.connected, what="reconnected")
                reconnects = dict(sup.reconnects)

                # Monday 09:30 New York: the market opens and the feed stays silent
                monday_open = wall_at(2026, 12, 7, 9, 30)
                clock.advance(monday_open - clock.time() + 20)
                await asyncio.sleep(0.02)
                await orchestrator.run_cycle()
                assert orchestrator.alerts.active() == []  # 20 s: not yet alert_after
                assert sup.reconnects["idle"] == 0
                clock.advance(11)
                await eventually(lambda: sup.reconnects["idle"] == 1, what="idle reconnect")
                clock.advance(30)
                await asyncio.sleep(0.01)
                await orchestrator.run_cycle()
                firing = orchestrator.alerts.active()
    assert reconnects.get("idle", 0) == 0
    assert [(a.rule, a.subject) for a in firing] == [("stream_silent", "stream.quotes")]
    assert registry.component("stream.quotes") is None  # unregistered on stop


async def test_metrics_name_the_stream_and_the_reason() -> None:
    """The last-message age gauge and the reconnect counter (by reason) are exported."""
    pytest.importorskip("prometheus_client")
    rec = Recorder()
    async with quote_feed() as (_server, proxy):
        sup = supervisor(proxy.port, rec, initial_delay=0.05)
        async with sup:
            await eventually(lambda: len(rec.messages) >= 2, what="messages")
            proxy.reset_all()
            await eventually(lambda: sum(sup.reconnects.values()) == 1, what="a reconnect")
            text = metrics.generate_latest().decode()
    assert 'resilient_stream_last_message_age_seconds{stream="quotes"}' in text
    reason = next(iter(sup.reconnects))
    assert f'resilient_stream_reconnects_total{{reason="{reason}",stream="quotes"}} 1.0' in text
    assert "resilient_stream_last_message_age_seconds{" not in metrics.generate_latest().decode()


async def test_any_async_iterator_factory_works() -> None:
    """Without websockets: an async generator function is a source; a source that ends is
    reconnected and resubscribed."""
    rec: list[int] = []
    sent: list[tuple[str, ...]] = []
    generations = 0

    async def source() -> Any:
        nonlocal generations
        generations += 1
        for i in range(3):
            yield i

    def subscribe(conn: Any, items: tuple[str, ...]) -> None:
        sent.append(items)

    sup = StreamSupervisor(
        "gen",
        source,
        on_message=rec.append,
        subscribe=subscribe,
        subscriptions=["X"],
        registry=HealthRegistry(),
        initial_delay=0.01,
        max_delay=0.02,
    )
    async with sup:
        await eventually(lambda: generations >= 3, what="three connections")
    assert rec[:6] == [0, 1, 2, 0, 1, 2]
    assert sent[:3] == [("X",), ("X",), ("X",)]
    assert sup.reconnects["closed"] >= 2
