"""A supervised quote stream: a local websockets server drops the connection, goes silent,
goes down and comes back; the supervisor reconnects with backoff, resubscribes, reports each
gap for a REST backfill, and the stale-data guard refuses an order priced on silent data.

Run: python examples/stream_quotes.py      (needs: pip install 'resilient[streams]')
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

from resilient import RiskLimitError
from resilient.config import ConfigManager
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory
from resilient.streams import Gap, StreamSupervisor, websocket
from resilient.trading import PaperBroker


class QuoteServer:
    """A vendor's quote stream: ``{"S": symbol, "p": price, "t": timestamp}`` every 20 ms for
    every subscribed symbol."""

    def __init__(self) -> None:
        self.silent = False
        self.connections: set[ServerConnection] = set()
        self.port = 0
        self._server: Server | None = None
        self._price = 190.0

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def drop(self) -> None:
        """Cut every connection without a closing handshake (a dropped link)."""
        for ws in list(self.connections):
            ws.transport.abort()

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections.add(ws)
        symbols: list[str] = []

        async def listen() -> None:
            async for raw in ws:
                symbols.extend(json.loads(raw)["subscribe"])

        listener = asyncio.ensure_future(listen())
        try:
            while not listener.done():
                await asyncio.sleep(0.02)
                if not self.silent:
                    for symbol in symbols:
                        self._price += 0.01
                        quote = {"S": symbol, "p": round(self._price, 2), "t": time.time()}
                        await ws.send(json.dumps(quote))
        except Exception:  # the client went away
            pass
        finally:
            listener.cancel()
            self.connections.discard(ws)


async def main() -> None:
    base = ConfigManager().load_config()
    config = dataclasses.replace(
        base,
        trading=dataclasses.replace(
            base.trading,
            max_price_age=dataclasses.replace(base.trading.max_price_age, default=1.0),
        ),
        resilience=dataclasses.replace(base.resilience, health_check_enabled=False),
        extra={**base.extra, "services": {"defaults": {"rate_limit": ""}}},
    )
    registry = HealthRegistry()
    factory = ResilienceFactory(config, registry=registry, database=False, logging=False)
    broker = factory.create_resilient_broker(PaperBroker(lambda s: 190.0), "paper", paper=True)
    server = QuoteServer()
    await server.start()
    quotes: list[dict[str, Any]] = []
    gaps: list[Gap] = []

    def on_message(raw: Any) -> None:  # every quote, in order; prices feed the risk check
        quote = json.loads(raw)
        quotes.append(quote)
        factory.record_price(quote["S"], quote["p"], timestamp=quote["t"], source="quotes")

    def on_gap(gap: Gap) -> None:  # backfill [gap.start, gap.end] over REST here
        gaps.append(gap)
        print(f"  gap of {gap.seconds:.2f}s after {gap.reason}: backfill {gap.subscriptions}")

    async def subscribe(conn: Any, symbols: tuple[str, ...]) -> None:
        await conn.send(json.dumps({"subscribe": list(symbols)}))

    async def wait_for(what: str, predicate: Any, within: float = 10.0) -> None:
        end = time.monotonic() + within
        while not predicate():
            if time.monotonic() > end:
                raise SystemExit(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def status(label: str) -> None:
        report = (await registry.check_all()).components["stream.quotes"]
        print(f"{label:<28} stream {report.status.value:<9} {report.detail}")

    supervisor = StreamSupervisor(
        "quotes",
        websocket(f"ws://127.0.0.1:{server.port}", proxy=None),
        subscribe=subscribe,
        on_message=on_message,
        on_gap=on_gap,
        subscriptions=["AAPL"],
        registry=registry,
        config=config,
        initial_delay=0.2,
        max_delay=1.0,
        idle_timeout=0.8,
        alert_after=0.5,
    )
    async with supervisor:
        await wait_for("quotes", lambda: len(quotes) >= 5)
        await supervisor.subscribe("MSFT")
        await status("streaming")
        order = await broker.place_order("AAPL", 1)
        print(f"  market order valued on a live quote: {order['status']}")

        print("the server drops the connection")
        server.drop()
        await wait_for("the first gap", lambda: len(gaps) == 1)
        await status("reconnected")

        print("the server goes silent")
        server.silent = True
        await wait_for("an idle reconnect", lambda: supervisor.reconnects["idle"] >= 1)
        await asyncio.sleep(0.4)
        await status("silent")
        try:
            await broker.place_order("AAPL", 1)
            raise SystemExit("an order was valued on a stale price")
        except RiskLimitError as exc:
            print(f"  order refused ({exc.rule}): {exc}")
        server.silent = False
        await wait_for("the second gap", lambda: len(gaps) == 2)
        await status("talking again")

        print("the server goes down for a second")
        await server.stop()
        server.drop()
        await asyncio.sleep(1.0)
        await server.start()
        await wait_for("the third gap", lambda: len(gaps) == 3)
        await status("back")
        order = await broker.place_order("AAPL", 1)
        print(f"  market order valued on a live quote again: {order['status']}")
        reconnects = dict(supervisor.reconnects)
        attempts = supervisor.attempts
    await server.stop()
    await factory.shutdown()
    print(f"quotes {len(quotes)}, reconnects {reconnects}, attempts {attempts}, gaps {len(gaps)}")
    assert reconnects.get("idle", 0) >= 1 and reconnects.get("connect_error", 0) >= 1
    assert {q["S"] for q in quotes[-6:]} == {"AAPL", "MSFT"}  # resubscribed to both


if __name__ == "__main__":
    asyncio.run(main())
