"""aiohttp's real client errors, raised against local sockets, are classified like httpx's."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from resilient.errors import ErrorCategory, classify, is_transient, proves_not_sent, retry_after

C = ErrorCategory

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> AsyncIterator[str]:
    """Serve ``handler`` on a free local port for one ``async for`` body; on exit every
    connection is closed and every handler finished, so nothing outlives the test."""
    tasks: set[asyncio.Task[object]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        writers.append(writer)
        await handler(reader, writer)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        await server.wait_closed()


def _answer(status: str, headers: str = "") -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n{headers}\r\n".encode()
        )
        await writer.drain()
        writer.close()

    return handle


async def _error(url: str, limit: float = 5.0) -> BaseException:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit)) as session:
        try:
            async with session.get(url) as response:
                response.raise_for_status()
        except Exception as exc:
            return exc
    raise AssertionError("the request did not fail")


async def test_refused_connection_is_network_and_not_sent() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    exc = await _error(f"http://127.0.0.1:{port}/")
    assert isinstance(exc, aiohttp.ClientConnectorError)
    assert classify(exc) is C.NETWORK
    assert is_transient(exc)
    assert proves_not_sent(exc)


@pytest.mark.parametrize(
    ("status", "headers", "category", "transient", "wait"),
    [
        ("503 Service Unavailable", "", C.NETWORK, True, None),
        ("429 Too Many Requests", "Retry-After: 4\r\n", C.RATE_LIMIT, True, 4.0),
        ("401 Unauthorized", "", C.AUTHENTICATION, False, None),
        ("422 Unprocessable Entity", "", C.VALIDATION, False, None),
        ("504 Gateway Timeout", "", C.TIMEOUT, True, None),
    ],
)
async def test_response_errors_by_status(
    status: str, headers: str, category: ErrorCategory, transient: bool, wait: float | None
) -> None:
    async for url in _serve(_answer(status, headers)):
        exc = await _error(url)
    assert isinstance(exc, aiohttp.ClientResponseError)
    assert classify(exc) is category
    assert is_transient(exc) is transient
    assert retry_after(exc) == wait
    assert proves_not_sent(exc) is (category is C.RATE_LIMIT)


async def test_server_disconnect_is_transient_but_may_have_been_sent() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()  # the request arrived: the server may have acted on it

    async for url in _serve(hang_up):
        exc = await _error(url)
    assert isinstance(exc, aiohttp.ServerDisconnectedError)
    assert classify(exc) is C.NETWORK
    assert is_transient(exc)
    assert not proves_not_sent(exc)


async def test_read_timeout_is_timeout_and_may_have_been_sent() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(2)
        writer.close()

    async for url in _serve(silent):
        exc = await _error(url, limit=0.2)
    assert isinstance(exc, TimeoutError)
    assert classify(exc) is C.TIMEOUT
    assert is_transient(exc)
    assert not proves_not_sent(exc)
