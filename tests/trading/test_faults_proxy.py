"""FaultProxy against a local echo server: pass-through, latency, black hole, refuse, reset;
and the throwaway server helpers clean up after themselves."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest

from resilient.testing import FaultProxy, free_port, redis_server


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def roundtrip(port: int, payload: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await reader.readexactly(len(payload))
    finally:
        writer.close()


async def test_passes_bytes_through_and_listens_on_loopback(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        assert proxy._server is not None
        assert proxy._server.sockets[0].getsockname()[0] == "127.0.0.1"
        assert await roundtrip(proxy.port) == b"ping"
        assert proxy.accepted == 1


async def test_latency_is_added_per_direction(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        proxy.latency = 0.1
        started = time.perf_counter()
        assert await roundtrip(proxy.port) == b"ping"
        assert 0.2 <= time.perf_counter() - started < 0.6


async def test_blackhole_holds_bytes_until_healed(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        proxy.blackhole = True
        writer.write(b"held")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), 0.2)
        proxy.blackhole = False
        assert await asyncio.wait_for(reader.readexactly(4), 1.0) == b"held"
        writer.close()


async def test_refuse_resets_new_connections(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        proxy.refuse = True
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await roundtrip(proxy.port)
        proxy.heal()
        assert await roundtrip(proxy.port) == b"ping"


async def test_reset_all_sends_rst_to_open_connections(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"a")
        await writer.drain()
        assert await reader.readexactly(1) == b"a"
        assert proxy.reset_all() == 1
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 1.0)
        writer.close()
        assert proxy.connections == 0


async def test_dead_upstream_looks_like_a_reset() -> None:
    async with FaultProxy("127.0.0.1", free_port()) as proxy:
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await roundtrip(proxy.port)


def test_proxy_needs_a_target_port() -> None:
    with pytest.raises(ValueError, match="target_port"):
        FaultProxy("127.0.0.1")
    with pytest.raises(RuntimeError, match="start"):
        _ = FaultProxy("127.0.0.1", 1).port


def test_redis_server_helper_restarts_and_cleans_up() -> None:
    import redis

    with redis_server() as server:
        client = redis.Redis(port=server.port, socket_timeout=1)
        assert client.ping()
        server.kill()
        assert not server.running
        server.start()
        client.close()
        client = redis.Redis(port=server.port, socket_timeout=1)
        assert client.ping()
        client.close()
        workdir = server.dir
    assert not server.running
    assert not os.path.exists(workdir)
