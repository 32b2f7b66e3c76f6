"""A TCP proxy on 127.0.0.1 that injects network faults at run time.

Put it between a client and a real server and switch faults while traffic flows::

    async with FaultProxy("127.0.0.1", 5432) as proxy:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/test"
        proxy.latency = 0.2       # every chunk, both directions, waits 200 ms
        proxy.blackhole = True    # bytes stop flowing (held back, as a dropped link would)
        proxy.refuse = True       # new connections are reset right after accept
        proxy.reset_all()         # every open connection gets a TCP RST

The kernel here has no ``netem`` and iptables may be absent, so a user-space proxy is the
portable way to reproduce latency, a black hole, refused connections and resets.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType

__all__ = ["FaultProxy"]

_CHUNK = 65536
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST instead of FIN


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


class _Link:
    """One proxied client connection and its upstream connection."""

    __slots__ = ("client", "tasks", "upstream")

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def reset(self) -> None:
        _abort_with_rst(self.client)
        if self.upstream is not None:
            _abort_with_rst(self.upstream)
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """An asyncio TCP proxy from ``127.0.0.1:port`` to ``target_host:target_port``.

    Attributes (switchable at any time, also for connections already open):
        latency: seconds added before each forwarded chunk, in both directions.
        blackhole: when true, bytes are held back (nothing is delivered either way) until it is
            switched off again; new connections are accepted but stay silent.
        refuse: when true, new connections are reset (RST) as soon as they are accepted.
    """

    def __init__(
        self, target_host: str = "127.0.0.1", target_port: int = 0, *, listen_port: int = 0
    ) -> None:
        if not target_port:
            raise ValueError("FaultProxy needs target_port (the real server's port)")
        self.target_host = target_host
        self.target_port = target_port
        self.latency = 0.0
        self.refuse = False
        self._listen_port = listen_port
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.accepted = 0

    @property
    def blackhole(self) -> bool:
        """Whether traffic is currently held back."""
        return not self._flowing.is_set()

    @blackhole.setter
    def blackhole(self, on: bool) -> None:
        if on:
            self._flowing.clear()
        else:
            self._flowing.set()

    @property
    def port(self) -> int:
        """The port the proxy listens on (127.0.0.1)."""
        if self._server is None:
            raise RuntimeError("FaultProxy is not started; call await proxy.start() first")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        """Client connections currently open."""
        return len(self._links)

    def heal(self) -> None:
        """Switch every fault off (latency 0, no black hole, accept connections)."""
        self.latency = 0.0
        self.refuse = False
        self.blackhole = False

    def reset_all(self) -> int:
        """Send a TCP RST on every open connection (both sides); returns how many."""
        links = list(self._links)
        for link in links:
            link.reset()
        self._links.clear()
        return len(links)

    async def start(self) -> FaultProxy:
        """Start listening on 127.0.0.1 (a free port unless ``listen_port`` was given)."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self._listen_port, reuse_address=True
            )
        return self

    async def stop(self) -> None:
        """Reset every connection and stop listening."""
        self.heal()
        self.reset_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.gather(*handlers, return_exceptions=True)

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted += 1
        link = _Link(writer)
        try:
            if self.refuse:
                _abort_with_rst(writer)
                return
            self._links.add(link)
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                _abort_with_rst(writer)  # upstream down: the client sees a reset, like a dead host
                return
            link.upstream = up_writer
            link.tasks = [
                asyncio.create_task(self._pump(reader, up_writer)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            _done, pending = await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            await asyncio.gather(*link.tasks, return_exceptions=True)
            for w in (writer, up_writer):
                w.close()
        except asyncio.CancelledError:
            link.reset()
        finally:
            self._links.discard(link)
            self._handlers.discard(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await src.read(_CHUNK)
                if not data:
                    break
                if self.latency > 0:
                    await asyncio.sleep(self.latency)
                if not self._flowing.is_set():
                    await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if dst.can_write_eof():
                    dst.write_eof()
