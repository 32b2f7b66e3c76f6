"""A local quote server on real sockets (websockets) for the stream tests."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from zoneinfo import ZoneInfo

from websockets.asyncio.server import ServerConnection, serve

from resilient.testing import FaultProxy

NEW_YORK = ZoneInfo("America/New_York")


def wall_at(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    """Seconds since the epoch of a New York local time."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=NEW_YORK).timestamp()


class QuoteServer:
    """Sends ``{"S": symbol, "p": price}`` for every subscribed symbol every ``interval``
    seconds; ``silent = True`` keeps connections open without sending anything."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.silent = False
        self.connections = 0
        self.subscribe_requests: list[list[str]] = []  # one entry per subscribe message
        self.sent = 0
        self._server: Any = None

    @property
    def port(self) -> int:
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        symbols: list[str] = []

        async def reader() -> None:
            async for raw in ws:
                request = json.loads(raw)
                self.subscribe_requests.append(list(request["subscribe"]))
                symbols.extend(s for s in request["subscribe"] if s not in symbols)

        task = asyncio.ensure_future(reader())
        price = 100.0
        try:
            while not task.done():
                await asyncio.sleep(self.interval)
                if self.silent:
                    continue
                for symbol in list(symbols):
                    price += 0.01
                    await ws.send(json.dumps({"S": symbol, "p": round(price, 2)}))
                    self.sent += 1
        except Exception:  # the client went away
            pass
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def start(self) -> QuoteServer:
        self._server = await serve(self._handler, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def quote_feed(interval: float = 0.01) -> AsyncIterator[tuple[QuoteServer, FaultProxy]]:
    """A quote server behind a :class:`FaultProxy`; both stopped afterwards."""
    server = await QuoteServer(interval).start()
    proxy = await FaultProxy("127.0.0.1", server.port).start()
    try:
        yield server, proxy
    finally:
        # Let connections accepted just before (the supervisor's last attempt) reach their
        # handler: FaultProxy.stop() only cancels handlers that have started.
        await asyncio.sleep(0.05)
        await proxy.stop()
        await server.stop()


async def send_subscribe(conn: Any, symbols: tuple[str, ...]) -> None:
    """The client side of the server's subscription protocol."""
    await conn.send(json.dumps({"subscribe": list(symbols)}))


async def eventually(
    predicate: Callable[[], bool], within: float = 10.0, what: str = "condition"
) -> None:
    """Wait (real time) until ``predicate()`` holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
