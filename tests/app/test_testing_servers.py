"""The throwaway servers of ``resilient.testing.servers``: lifecycle of a private Redis and
PostgreSQL (start, stop, kill, restart, async variants), and nothing left behind."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
import redis

from resilient.testing.servers import RedisServer, postgres_server, redis_server


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_redis_server_lifecycle() -> None:
    with redis_server() as server:
        assert server.running and server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        server.start()  # already running: nothing happens
        server.kill()
        assert not server.running and not _accepts(server.port)
        server.restart()
        assert server.running
        assert client.get("k") is None  # no persistence
        client.close()
        directory = server.dir
    assert not server.running
    assert not os.path.exists(directory)


def test_redis_server_on_a_chosen_port_with_extra_arguments() -> None:
    server = RedisServer(args=("--maxmemory", "10mb"))
    try:
        server.start()
        client = redis.Redis(port=server.port)
        assert client.config_get("maxmemory")["maxmemory"] == str(10 * 1024 * 1024)
        client.close()
        server.stop()
        assert not server.running
        server.stop()  # idempotent
    finally:
        server.destroy()
    assert not os.path.exists(server.dir)


@pytest.mark.slow
async def test_postgres_server_lifecycle() -> None:
    with postgres_server(options="-c max_connections=50") as pg:
        assert pg.running
        assert pg.psql("SHOW max_connections").strip() == "50"
        assert pg.url.endswith(f"@127.0.0.1:{pg.port}/postgres")
        await pg.astop("immediate")
        assert not pg.running and not _accepts(pg.port)
        pg.stop()  # already stopped: nothing happens
        await pg.astart()
        assert pg.psql("SELECT 1").strip() == "1"
        pg.restart()
        assert pg.running
        directory = pg.dir
    assert not await asyncio.to_thread(os.path.exists, directory)
