"""The real servers the suite depends on answer (these fail, not skip, when CI=true)."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis


async def test_postgresql_answers(pg_url: str) -> None:
    """PostgreSQL 127.0.0.1:5432 accepts a connection to `test` and runs a query."""
    dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        assert await conn.fetchval("SELECT 40 + 2") == 42
        assert (await conn.fetchval("SHOW server_version")).startswith(("15", "16", "17"))
    finally:
        await conn.close()


async def test_redis_answers(redis_url: str) -> None:
    """Redis 127.0.0.1:6379 answers PING and round-trips a value."""
    client = aioredis.from_url(redis_url, socket_timeout=2)
    try:
        assert await client.ping() is True
        await client.set("resilient:test:services", "ok", ex=5)
        assert await client.get("resilient:test:services") == b"ok"
        await client.delete("resilient:test:services")
    finally:
        await client.aclose()
