"""PostgreSQL faults against a real private server: restarts under load, killed backends, a
black-holed link (timeouts, breaker, fallback, health, alert), durability of committed writes.
Every test asserts that nothing was lost and that latency stayed bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from resilient import CircuitOpenError, ErrorCategory, breaker, breakers, classify, fallback
from resilient.config import Config, current_config
from resilient.db import Database, register_health_checks
from resilient.errors import is_transient
from resilient.health import AlertManager, HealthOrchestrator, HealthRegistry
from resilient.testing.faults import FaultProxy
from resilient.testing.servers import PostgresServer

CLASSIFIED = {ErrorCategory.DATABASE, ErrorCategory.NETWORK, ErrorCategory.TIMEOUT}


def config(**overrides: Any) -> Config:
    base = current_config()
    db = {k: v for k, v in overrides.items() if hasattr(base.database, k)}
    res = {k: v for k, v in overrides.items() if hasattr(base.resilience, k)}
    return dataclasses.replace(
        base,
        database=dataclasses.replace(base.database, **db),
        resilience=dataclasses.replace(base.resilience, **res),
    )


def open_db(url: str, **overrides: Any) -> Database:
    defaults: dict[str, Any] = {
        "min_pool_size": 5,
        "max_pool_size": 20,
        "pool_timeout": 5.0,
        "command_timeout": 2.0,
        "connect_timeout": 1.0,
        "retry_max_attempts": 3,
        "retry_initial_delay": 0.05,
        "retry_max_delay": 0.2,
    }
    defaults.update(overrides)
    return Database.from_config(
        config(**defaults), url=url, application_name=f"fault-{uuid.uuid4().hex[:8]}"
    )


@pytest.fixture
async def db(pg_server: PostgresServer) -> AsyncIterator[Database]:
    if not pg_server.running:
        pg_server.start()
    database = open_db(pg_server.url)
    await database.start(register_health=False)
    yield database
    await database.close()


async def test_restart_under_100_concurrent_queries(
    pg_server: PostgresServer, db: Database
) -> None:
    """Every read succeeds or fails classified; none hangs; reads work ≤ 1 s after restart."""
    await db.fetch_all("SELECT 1")

    async def read(i: int) -> int:
        row = await db.fetch_one("SELECT CAST(:i AS INT) AS i FROM pg_sleep(0.05)", {"i": i})
        assert row is not None
        return int(row["i"])

    tasks = [asyncio.create_task(read(i)) for i in range(100)]
    await asyncio.sleep(0.08)  # some queries ran, others are in flight or queued
    await pg_server.astop("fast")
    await pg_server.astart()
    back = time.perf_counter()
    _, pending = await asyncio.wait(tasks, timeout=15.0)
    assert not pending, f"{len(pending)} queries hung"
    ok = failed = 0
    for i, task in enumerate(tasks):
        exc = task.exception()
        if exc is None:
            assert task.result() == i  # the right answer, not someone else's
            ok += 1
        else:
            assert classify(exc) in CLASSIFIED, repr(exc)
            assert is_transient(exc), repr(exc)
            failed += 1
    assert ok + failed == 100
    assert ok > 0

    errors: list[BaseException] = []
    while time.perf_counter() - back < 1.0:  # reads work again within 1 s of the restart
        try:
            value = await db.scalar("SELECT 1")
        except Exception as exc:
            errors.append(exc)
            await asyncio.sleep(0.02)
            continue
        assert value == 1
        break
    else:
        raise AssertionError(f"no successful read within 1 s of the restart: {errors!r}")
    assert all(classify(e) in CLASSIFIED for e in errors)
    first_ok = time.perf_counter() - back
    categories = sorted({str(classify(t.exception())) for t in tasks if t.exception()})
    print(
        f"\nrestart under load: {ok} ok, {failed} failed {categories}; "
        f"a new read done {first_ok * 1000:.0f} ms after the server was back "
        "(after the 100 queued reads drained through 20 connections)"
    )


@pytest.mark.parametrize("pre_ping", [True, False])
async def test_terminated_backends_next_query_succeeds(
    pg_server: PostgresServer, pre_ping: bool
) -> None:
    """pg_terminate_backend on every pooled connection: the next query just works."""
    db = open_db(pg_server.url, pool_pre_ping=pre_ping)
    await db.start(register_health=False)
    killer = open_db(pg_server.url)
    try:
        await asyncio.gather(*(db.scalar("SELECT 1 FROM pg_sleep(0.02)") for _ in range(5)))
        assert db.pool_stats().checked_out == 0
        killed = await killer.scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = :app",
            {"app": db.application_name},
        )
        assert killed >= 3
        started = time.perf_counter()
        assert await db.scalar("SELECT 42") == 42
        assert time.perf_counter() - started < 1.0
        rows = await asyncio.gather(*(db.scalar("SELECT 1") for _ in range(10)))
        assert rows == [1] * 10
    finally:
        await db.close()
        await killer.close()


async def test_blackholed_database_times_out_opens_breaker_serves_fallback_alerts(
    pg_server: PostgresServer,
) -> None:
    """A silent link: command_timeout fires, the breaker opens, the fallback is served, the
    database component turns unhealthy and the database alert fires; then everything heals."""
    async with FaultProxy("127.0.0.1", pg_server.port) as proxy:
        url = pg_server.url.replace(f":{pg_server.port}/", f":{proxy.port}/")
        db = open_db(
            url,
            command_timeout=0.5,
            connect_timeout=0.5,
            pool_pre_ping=False,
            retry_max_attempts=1,
            health_check_timeout=1.0,
        )
        await db.start(register_health=False)
        registry = HealthRegistry()
        register_health_checks(registry, db)
        fired: list[Any] = []
        alerts = AlertManager.from_config()
        alerts.on_alert(fired.append)
        orchestrator = HealthOrchestrator(registry, alerts=alerts)
        name = f"db-{uuid.uuid4().hex[:6]}"

        @fallback(value=-1.0)
        @breaker(name, failure_threshold=2, reset_timeout=0.5)
        async def last_price() -> float:
            return float(await db.scalar("SELECT 101.5"))

        try:
            assert await last_price() == 101.5
            proxy.blackhole = True
            durations = []
            for _ in range(4):
                started = time.perf_counter()
                assert await last_price() == -1.0  # fallback served, never an exception
                durations.append(time.perf_counter() - started)
            assert breakers.get(name).state == "open"
            assert max(durations[:2]) < 0.5 + 0.4  # command_timeout, not a hang
            assert max(durations[2:]) < 0.05  # rejected by the open circuit at once
            with pytest.raises(CircuitOpenError):
                await breakers.get(name).call_async(db.scalar, "SELECT 1")

            health = await orchestrator.get_system_health()
            assert health["components"][db.name]["status"] == "unhealthy"
            assert health["overall_status"] == "unhealthy"
            assert any(
                e.rule == "database_connection_failure" and e.state == "firing" for e in fired
            )

            proxy.blackhole = False
            proxy.reset_all()  # the stuck connections die; the pool reconnects
            await asyncio.sleep(0.55)
            assert await last_price() == 101.5  # the trial call closes the circuit
            assert breakers.get(name).state == "closed"
            health = await orchestrator.get_system_health()
            assert health["components"][db.name]["status"] == "healthy"
        finally:
            breakers.remove(name)
            await orchestrator.stop()
            proxy.heal()
            await db.close()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_committed_writes_survive_a_restart(
    pg_server: PostgresServer, db: Database, mode: str
) -> None:
    """Write-then-read with a unique key across a clean and a crash restart."""
    await db.execute("CREATE TABLE IF NOT EXISTS fills (id TEXT PRIMARY KEY, qty INT)")
    keys = [uuid.uuid4().hex for _ in range(20)]
    for i, key in enumerate(keys):
        assert await db.execute("INSERT INTO fills VALUES (:id, :q)", {"id": key, "q": i}) == 1
    await pg_server.astop(mode)
    await pg_server.astart()
    rows = await db.fetch_all("SELECT id, qty FROM fills WHERE id = ANY(:ids)", {"ids": keys})
    assert {r["id"]: r["qty"] for r in rows} == {k: i for i, k in enumerate(keys)}
