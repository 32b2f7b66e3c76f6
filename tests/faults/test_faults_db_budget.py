"""A black-holed PostgreSQL costs a bounded time per call: one budget of
``DB_BUDGET_FACTOR × database.command_timeout`` (or the ambient deadline when shorter) covers
pool wait, pre-ping, reconnects, every attempt and the waits between them, so a breaker in
front opens within ``failure_threshold`` × that bound.

Before: with ``command_timeout = 1`` sequential reads took 6, 14 and 30 s and the breaker
opened after 50 s (pre-ping + query + ``connect_timeout`` on every reconnect, per attempt)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import Any

import pytest

from resilient import breaker, breakers, deadline
from resilient.config import current_config
from resilient.db import DB_BUDGET_FACTOR, Database
from resilient.testing.faults import FaultProxy
from resilient.testing.servers import PostgresServer


def open_db(url: str, **overrides: Any) -> Database:
    """A database on ``url`` with the fault tests' pool and the given settings."""
    base = current_config()
    db = {k: v for k, v in overrides.items() if hasattr(base.database, k)}
    res = {k: v for k, v in overrides.items() if hasattr(base.resilience, k)}
    config = dataclasses.replace(
        base,
        database=dataclasses.replace(base.database, **{"min_pool_size": 5, **db}),
        resilience=dataclasses.replace(base.resilience, **res),
    )
    return Database.from_config(config, url=url, application_name=f"budget-{uuid.uuid4().hex[:8]}")


SLACK = 0.5  # scheduling noise and connection teardown on a loaded 2-core machine


@pytest.mark.parametrize("pre_ping", [True, False])
async def test_blackholed_database_opens_the_breaker_within_the_budget(
    pg_server: PostgresServer, pre_ping: bool
) -> None:
    if not pg_server.running:
        pg_server.start()
    command_timeout = 1.0
    bound = DB_BUDGET_FACTOR * command_timeout
    async with FaultProxy("127.0.0.1", pg_server.port) as proxy:
        url = pg_server.url.replace(f":{pg_server.port}/", f":{proxy.port}/")
        db = open_db(
            url,
            command_timeout=command_timeout,
            connect_timeout=10.0,  # the default: a reconnect alone would take 10 s
            pool_timeout=30.0,
            pool_pre_ping=pre_ping,
            retry_max_attempts=3,
            retry_initial_delay=0.1,
            retry_max_delay=1.0,
        )
        await db.start(register_health=False)
        name = f"dbb-{uuid.uuid4().hex[:6]}"
        threshold = 3

        @breaker(name, failure_threshold=threshold, reset_timeout=60.0)
        async def read() -> int:
            return int(await db.scalar("SELECT 1"))

        try:
            # a warm pool: several connections that will all be stuck behind the black hole
            await asyncio.gather(*(read() for _ in range(4)))
            proxy.blackhole = True
            started = time.perf_counter()
            durations = []
            while breakers.get(name).state != "open":
                assert len(durations) < threshold, "the breaker did not open"
                t = time.perf_counter()
                with pytest.raises((TimeoutError, OSError)):
                    await read()
                durations.append(time.perf_counter() - t)
            opened_after = time.perf_counter() - started
            assert max(durations) <= bound + SLACK, durations
            assert opened_after <= threshold * bound + SLACK, (opened_after, durations)
        finally:
            breakers.remove(name)
            proxy.heal()
            proxy.reset_all()
            await db.close()


async def test_the_ambient_deadline_bounds_a_call_when_shorter(
    pg_server: PostgresServer,
) -> None:
    if not pg_server.running:
        pg_server.start()
    async with FaultProxy("127.0.0.1", pg_server.port) as proxy:
        url = pg_server.url.replace(f":{pg_server.port}/", f":{proxy.port}/")
        db = open_db(url, command_timeout=5.0, connect_timeout=10.0, retry_max_attempts=3)
        await db.start(register_health=False)
        try:
            assert await db.scalar("SELECT 1") == 1
            proxy.blackhole = True
            started = time.perf_counter()
            with deadline(0.4), pytest.raises(TimeoutError):
                await db.scalar("SELECT 1")
            assert time.perf_counter() - started <= 0.4 + SLACK
        finally:
            proxy.heal()
            proxy.reset_all()
            await db.close()


async def test_a_spent_deadline_starts_nothing(pg_server: PostgresServer) -> None:
    """A call whose deadline has already passed raises at once and sends nothing."""
    if not pg_server.running:
        pg_server.start()
    db = open_db(pg_server.url, command_timeout=2.0)
    await db.start(register_health=False)
    table = f"spent_{uuid.uuid4().hex[:8]}"
    try:
        await db.execute(f"CREATE TABLE {table} (id int)")
        with deadline(0.001):
            await asyncio.sleep(0.01)
            with pytest.raises(TimeoutError):
                await db.execute(f"INSERT INTO {table} VALUES (1)", idempotent=False)
        assert await db.scalar(f"SELECT count(*) FROM {table}") == 0
    finally:
        await db.execute(f"DROP TABLE IF EXISTS {table}")
        await db.close()
