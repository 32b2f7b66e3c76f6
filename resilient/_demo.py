"""``resilient demo``: a simulated trading session through a scripted outage.

A simulated market-data feed, quote stream and broker run behind the real resilience layer (the
factory, its proxies, breakers, retries, timeouts, cached fallbacks, stream supervisor, health
monitor and alerts) on the
embedded defaults: SQLite in a temporary directory and the in-process cache, no servers. The
fault script is seeded and timed in real seconds; thresholds are scaled down (breaker reset
after 2 s instead of 60 s, 0.3 s timeouts) so the whole story fits in about 15 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from resilient._core import events as _hooks
from resilient._core.exceptions import RiskLimitError
from resilient._core.sanitize import sanitize
from resilient._demo_services import SimulatedBroker, SimulatedFeed
from resilient._policies.breaker import breakers
from resilient.config import Config, current_config
from resilient.integration import ResilienceFactory
from resilient.streams import Gap, StreamSupervisor
from resilient.trading import PaperBroker, last_fallback

__all__ = ["DemoResult", "Phase", "demo_config", "run_demo"]

SYMBOLS = ("AAPL", "MSFT", "SPY")


@dataclass(frozen=True, slots=True)
class Phase:
    """One step of the fault script."""

    at: float  # seconds after the start
    name: str
    feed: str  # the feed's mode from here on
    broker: str  # the broker's mode from here on
    note: str


SCRIPT: tuple[Phase, ...] = (
    Phase(0.0, "warm-up", "ok", "ok", "prices flow, a paper order fills"),
    Phase(
        2.0,
        "rate-limit",
        "rate_limited",
        "ok",
        "the feed answers 429 with Retry-After: retries wait it out",
    ),
    Phase(
        2.6,
        "slow",
        "slow",
        "ok",
        "every other answer takes 0.5 s: the 0.3 s timeout cancels it, the retry succeeds",
    ),
    Phase(
        3.6,
        "outage",
        "outage",
        "ok",
        "the feed answers 503: retries, the breaker opens, cached prices are served",
    ),
    Phase(
        4.6,
        "lost-response",
        "outage",
        "lost_response",
        "the broker records an order but the answer is lost: it is retried with the same "
        "client order id",
    ),
    Phase(
        5.4,
        "risk-check",
        "outage",
        "ok",
        "an order above trading.max_order_size is refused before the broker is called",
    ),
    Phase(6.8, "recovery", "ok", "ok", "the feed is back: half-open trial, breaker closes"),
)
END = 9.5  # seconds: the script is over; then wait for recovery to show (at most END + 20)


@dataclass(slots=True)
class DemoResult:
    """What the demo saw (``to_dict()`` is the ``--json`` output)."""

    seed: int
    duration: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    orders: list[dict[str, Any]] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every behaviour the demo shows was seen."""
        return all(self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return {
            "ok": self.ok,
            "seed": self.seed,
            "duration_seconds": round(self.duration, 2),
            "checks": self.checks,
            "counts": self.counts,
            "orders": self.orders,
            "events": self.events,
            "health": self.health,
        }


def _demo_stream(record: Callable[..., None], factory: Any, counts: dict[str, int]) -> Any:
    """The stream phase: a simulated crypto quote stream (no server, no websockets) that
    drops its connection after 1 s and goes silent from 2 s to 2.8 s; the supervisor
    reconnects, resubscribes and reports each gap."""
    started = time.monotonic()
    state = {"dropped": False}

    async def quotes() -> Any:  # one "connection": an async iterator of quotes
        price = 97_000.0
        while True:
            await asyncio.sleep(0.05)
            elapsed = time.monotonic() - started
            if elapsed > 1.0 and not state["dropped"]:
                state["dropped"] = True
                raise ConnectionResetError(104, "Connection reset by peer")
            if 2.0 < elapsed < 2.8:
                continue  # silent
            price += 1.0
            yield {"S": "BTC/USD", "p": price}

    def on_message(quote: dict[str, Any]) -> None:
        counts["stream_messages"] += 1
        factory.record_price(quote["S"], quote["p"], source="quotes")

    def on_gap(gap: Gap) -> None:
        counts["stream_gaps"] += 1
        record(
            "stream",
            f"quotes: data again after {gap.reason}; backfill {gap.seconds:.2f}s of "
            f"{', '.join(gap.subscriptions)} over REST",
            reason=gap.reason,
        )

    return StreamSupervisor(
        "quotes",
        quotes,
        on_message=on_message,
        on_gap=on_gap,
        subscriptions=["BTC/USD"],
        registry=factory.registry,
        config=factory.config,
        initial_delay=0.1,
        max_delay=0.5,
        idle_timeout=0.4,
        alert_after=5.0,
    )


def demo_config(base: Config | None = None, *, sqlite_path: str = ":memory:") -> Config:
    """The demo's configuration: the embedded defaults with thresholds scaled to seconds."""
    base = base if base is not None else current_config()
    resilience = replace(
        base.resilience,
        circuit_breaker_enabled=True,
        retry_enabled=True,
        circuit_breaker_failure_threshold=3,
        circuit_breaker_timeout=2.0,
        circuit_breaker_half_open_max_calls=1,
        circuit_breaker_success_threshold=1,
        circuit_breaker_shared=False,
        retry_max_attempts=3,
        retry_initial_delay=0.05,
        retry_max_delay=0.5,
        retry_budget_ratio=1.0,
        health_check_enabled=True,
        health_check_interval=0.5,
        health_check_timeout=1.0,
        fallback_cache_ttl=300.0,
    )
    database = replace(base.database, host="", sqlite_path=sqlite_path)
    redis = replace(base.redis, url=None)
    trading = replace(
        base.trading,
        max_order_size=10_000.0,
        max_position_size=100_000.0,
        risk_check_enabled=True,
        default_order_timeout=1.0,
    )
    features = replace(base.features, risk_limits_enforced=True)
    extra = dict(base.extra)
    extra["services"] = {
        "defaults": {
            "timeout": 0.3,
            "rate_limit": "20/second",
            "rate_limit_max_wait": 1.0,
            "resilience_enabled": True,
        },
        "main_broker": {"order_timeout": 1.0},
    }
    extra["alerts"] = {
        "error_rate_window": 5.0,
        "circuit_breaker_open": {
            "condition": 'circuit_breaker_state == "open"',
            "severity": "critical",
            "notification": "immediate",
        },
        "service_degraded": {
            "condition": 'health_status == "degraded"',
            "severity": "warning",
            "notification": "1 seconds",
        },
    }
    return replace(
        base,
        resilience=resilience,
        database=database,
        redis=redis,
        trading=trading,
        features=features,
        extra=extra,
        log_level="WARNING",
    )


class _Display:
    """The narrative (stdout) and the progress line (stderr, only on a terminal)."""

    def __init__(self, out: TextIO, err: TextIO, *, narrate: bool, progress: bool) -> None:
        self.out, self.err = out, err
        self.narrate, self.progress = narrate, progress
        self.started = time.monotonic()
        self._status = ""

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self, kind: str, text: str) -> None:
        if not self.narrate:
            return
        self._clear()
        self.out.write(sanitize(f"  {self.elapsed():5.2f}s  {kind:<9} {text}") + "\n")
        self.out.flush()
        self._draw()

    def status(self, fraction: float, text: str) -> None:
        if not self.progress:
            return
        width = 24
        filled = int(max(0.0, min(1.0, fraction)) * width)
        self._status = f"[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%} {text}"[:100]
        self._draw()

    def _draw(self) -> None:
        if self.progress and self._status:
            self.err.write("\r\033[K" + sanitize(self._status))
            self.err.flush()

    def _clear(self) -> None:
        if self.progress and self._status:
            self.err.write("\r\033[K")
            self.err.flush()

    def done(self) -> None:
        self._clear()
        self._status = ""


async def run_demo(
    *,
    seed: int = 7,
    out: TextIO,
    err: TextIO,
    narrate: bool = True,
    progress: bool = False,
) -> DemoResult:
    """Run the scripted session and return what happened."""
    result = DemoResult(seed=seed)
    display = _Display(out, err, narrate=narrate, progress=progress)
    counts: dict[str, int] = dict.fromkeys(
        (
            "retries",
            "retries_shown",
            "breaker_transitions",
            "fallbacks_served",
            "alerts_fired",
            "alerts_resolved",
            "price_reads",
            "orders_placed",
            "orders_refused",
            "lost_responses_recovered",
            "timeouts",
            "rate_limited_429",
            "stream_messages",
            "stream_gaps",
        ),
        0,
    )
    result.counts = counts
    phase_state: dict[str, Any] = {"name": "warm-up", "retries_in_phase": 0}

    def record(kind: str, text: str, **data: Any) -> None:
        result.events.append(
            {"t": round(display.elapsed(), 3), "kind": kind, "text": sanitize(text), **data}
        )
        display.line(kind, text)

    def on_event(event: _hooks.PolicyEvent) -> None:
        if not event.name.startswith(("main_data", "main_broker")):
            return
        exc = event.exception
        what = f"{type(exc).__name__}: {exc}" if exc is not None else ""
        if event.kind is _hooks.EventKind.RETRY:
            counts["retries"] += 1
            if "429" in what:
                counts["rate_limited_429"] += 1
            if "TimeoutError" in what or "timed out" in what:
                counts["timeouts"] += 1
            phase_state["retries_in_phase"] += 1
            if phase_state["retries_in_phase"] <= 2:
                counts["retries_shown"] += 1
                record(
                    "retry",
                    f"{event.name} attempt {event.attempt} failed ({what}); "
                    f"next attempt in {event.wait:.2f}s",
                )
        elif event.kind is _hooks.EventKind.BREAKER_STATE:
            counts["breaker_transitions"] += 1
            record(
                "breaker",
                f"{event.name}: {event.old_state} -> {event.new_state}",
                old=event.old_state,
                new=event.new_state,
            )
        elif event.kind is _hooks.EventKind.FALLBACK_SERVED:
            counts["fallbacks_served"] += 1
            if event.first_in_episode:
                record(
                    "fallback",
                    f"{event.name}: serving last good prices "
                    f"({event.cache_age or 0:.2f}s old) instead of {what}",
                )
        elif event.kind is _hooks.EventKind.FALLBACK_RECOVERED:
            record("recovered", f"{event.name}: live answers again, no more cached prices")

    remove_hook = _hooks.add_hook(on_event)
    tmp = tempfile.TemporaryDirectory(prefix="resilient-demo-")
    config = demo_config(sqlite_path=str(Path(tmp.name) / "demo.db"))
    for name in ("main_data", "main_broker"):
        with contextlib.suppress(Exception):
            breakers.remove(name)
    factory = ResilienceFactory(config, logging=False)
    feed, broker, stream = SimulatedFeed(seed), None, None
    try:
        await factory.initialize_resilience()
        orchestrator = factory.get_orchestrator()

        def on_alert(event: Any) -> None:
            key = "alerts_fired" if event.state == "firing" else "alerts_resolved"
            counts[key] += 1
            record(
                "ALERT",
                f"{event.rule} {event.state} for {event.subject} ({event.severity})",
                rule=event.rule,
                state=event.state,
                subject=event.subject,
            )

        remove_alert = orchestrator.alerts.on_alert(on_alert)
        sim_broker = SimulatedBroker(feed)
        data = factory.create_resilient_market_data(feed, "main_data")
        broker = factory.create_resilient_broker(sim_broker, "main_broker")
        factory.register_paper_broker(PaperBroker(feed.get_current_price))
        stream = _demo_stream(record, factory, counts)
        stream.start()
        database = factory._database
        if database is not None:
            await database.execute(
                "CREATE TABLE IF NOT EXISTS demo_orders (id TEXT PRIMARY KEY, client_order_id "
                "TEXT, symbol TEXT, qty REAL, side TEXT, price REAL)"
            )

        async def place(qty: float, symbol: str, side: str = "buy") -> None:
            try:
                order = await broker.place_order(symbol, qty, side)
            except RiskLimitError as exc:
                counts["orders_refused"] += 1
                record("refused", f"{side} {qty:g} {symbol}: {exc}")
                return
            except Exception as exc:
                record("order", f"{side} {qty:g} {symbol} failed: {type(exc).__name__}: {exc}")
                return
            counts["orders_placed"] += 1
            result.orders.append(order)
            lost = sim_broker.lost_responses
            note = ""
            if lost and lost > counts["lost_responses_recovered"]:
                counts["lost_responses_recovered"] = lost
                note = " — answer was lost, retry reused the client order id: still one order"
            record(
                "order",
                f"{side} {qty:g} {symbol} -> {order['id']} at "
                f"{order['filled_price']:.2f} (client order id "
                f"{str(order['client_order_id'])[:8]}…){note}",
            )
            if database is not None:
                await database.execute(
                    "INSERT INTO demo_orders VALUES (:id, :cid, :symbol, :qty, :side, :price)",
                    {
                        "id": order["id"],
                        "cid": order["client_order_id"],
                        "symbol": symbol,
                        "qty": qty,
                        "side": side,
                        "price": order["filled_price"],
                    },
                    idempotent=True,
                )

        where = database.url_masked if database is not None else "off"
        record(
            "start",
            f"seed {seed}; embedded defaults (SQLite {where}, in-process cache); "
            "breaker opens after 3 failures, resets after 2s",
        )
        account = await broker.get_account_info()
        record("account", f"cash {account['cash']:,.2f}")
        script = list(SCRIPT)
        actions = {"warm-up": False, "lost-response": False, "risk-check": False}
        tick = 0
        deadline = END + 20.0  # a loaded machine may need longer to show the recovery
        while True:
            now = display.elapsed()
            while script and now >= script[0].at:
                phase = script.pop(0)
                feed.mode, sim_broker.mode = phase.feed, phase.broker
                phase_state.update(name=phase.name, retries_in_phase=0)
                record("phase", f"{phase.name}: {phase.note}")
            name = str(phase_state["name"])
            if name == "warm-up" and now > 1.0 and not actions["warm-up"]:
                actions["warm-up"] = True
                await place(5, "AAPL")
            if name == "lost-response" and not actions["lost-response"]:
                actions["lost-response"] = True
                await place(3, "MSFT")
            if name == "risk-check" and not actions["risk-check"]:
                actions["risk-check"] = True
                await place(100, "SPY")
            symbol = SYMBOLS[tick % len(SYMBOLS)]
            tick += 1
            try:
                price = await data.get_current_price(symbol)
                counts["price_reads"] += 1
                info = last_fallback()
                shown = f"{symbol} {price:.2f}"
                if getattr(price, "stale", False) and info is not None:
                    shown += f" (cached, {info.age:.1f}s old)"
            except Exception as exc:
                shown = f"{symbol} unavailable ({type(exc).__name__})"
            state = str(breakers.get("main_data").snapshot().state)
            display.status(min(1.0, now / END), f"{name:<13} {shown} | main_data {state}")
            if now >= END:
                recovered = state == "closed" and not orchestrator.alerts.active()
                if recovered or now >= deadline:
                    break
            await asyncio.sleep(0.15)
        await stream.stop()  # the stream phase is over (its component leaves the report)
        await orchestrator.run_cycle()  # a last cycle so alerts resolve on the final state
        result.health = await orchestrator.get_system_health()
        remove_alert()
        result.duration = display.elapsed()
        display.done()
        if database is not None:
            stored = await database.scalar("SELECT count(*) FROM demo_orders")
            counts["orders_in_database"] = int(stored or 0)
    finally:
        remove_hook()
        if stream is not None:
            await stream.stop()
        await factory.shutdown()
        for name in ("main_data", "main_broker"):
            with contextlib.suppress(Exception):
                breakers.remove(name)
        tmp.cleanup()
    per_intent: dict[str, int] = {}
    for order in sim_broker.orders:
        per_intent[order["client_order_id"]] = per_intent.get(order["client_order_id"], 0) + 1
    result.checks = {
        "retries": counts["retries"] > 0,
        "retry_after_honoured": counts["rate_limited_429"] > 0,
        "timeouts_retried": counts["timeouts"] > 0,
        "breaker_opened": any(e.get("new") == "open" for e in result.events),
        "breaker_recovered": any(e.get("new") == "closed" for e in result.events),
        "fallbacks_served": counts["fallbacks_served"] > 0,
        "alert_fired": counts["alerts_fired"] > 0,
        "alert_resolved": counts["alerts_resolved"] > 0,
        "lost_response_not_duplicated": counts["lost_responses_recovered"] == 1
        and all(n == 1 for n in per_intent.values()),
        "risk_limit_enforced": counts["orders_refused"] == 1,
        "stream_reconnected": counts["stream_gaps"] >= 1 and counts["stream_messages"] > 0,
        "final_health_healthy": result.health.get("overall_status") == "healthy",
    }
    return result


def render_health(health: dict[str, Any], write: Callable[[str], None]) -> None:
    """The final health report as a short table."""
    write(f"final system health: {health.get('overall_status', '?')}")
    for name, comp in sorted(health.get("components", {}).items()):
        detail = comp.get("detail") or ""
        write(f"  {name:<14} {comp.get('status', '?'):<10} {detail}")
    breakers = health.get("circuit_breakers", {})
    for name, cb in sorted(breakers.items()):
        write(
            f"  circuit {name:<14} {cb['state']:<9} success rate {cb['success_rate']:.1%} "
            f"({cb['failure_count']} failures / {cb['total_calls']} calls)"
        )
    errors = health.get("error_handling", {})
    write(f"  errors: {errors.get('total_errors', 0)} {errors.get('by_category', {})}")
