"""The database layer: configuration mapping, SQLite default, PostgreSQL helpers, safe retries,
query logging without parameter values, health and pool metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from resilient import ErrorCategory, PolicyEvent, add_hook, classify
from resilient._core import log as _logging
from resilient.config import Config, current_config
from resilient.db import Database, get_database
from resilient.errors import tracker
from resilient.testing.faults import FaultProxy
from resilient.testing.servers import free_port

SECRET = "pw-Zq9-very-secret"


def make_config(**overrides: Any) -> Config:
    """The test configuration with ``database.*`` / ``resilience.*`` fields replaced."""
    base = current_config()
    db = {k: v for k, v in overrides.items() if hasattr(base.database, k)}
    res = {k: v for k, v in overrides.items() if hasattr(base.resilience, k)}
    return dataclasses.replace(
        base,
        database=dataclasses.replace(base.database, **db),
        resilience=dataclasses.replace(base.resilience, **res),
    )


@pytest.fixture
def logs() -> Iterator[list[str]]:
    lines: list[str] = []
    _logging.enable_logging(level="DEBUG", json_lines=False, sink=lines.append)
    yield lines
    _logging.disable_logging()


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[Database]:
    db = Database.from_config(
        make_config(retry_initial_delay=0.0, retry_max_delay=0.0),
        url=pg_url,
        application_name=f"t-{uuid.uuid4().hex[:8]}",
    )
    await db.start(register_health=False)
    yield db
    await db.close()


def test_pool_and_connection_settings_come_from_config() -> None:
    """pool_size=min, overflow=max-min, recycle=max_idle_time, pre-ping, waits and timeouts."""
    cfg = make_config(
        host="db.example",
        password=SECRET,
        min_pool_size=3,
        max_pool_size=9,
        max_idle_time=120.0,
        command_timeout=7.0,
        connect_timeout=2.5,
        pool_timeout=4.0,
        ssl_mode="require",
    )
    db = Database.from_config(cfg)
    opts = db.engine_options()
    assert opts["pool_size"] == 3
    assert opts["max_overflow"] == 6
    assert opts["pool_recycle"] == 120.0
    assert opts["pool_pre_ping"] is True
    assert opts["pool_timeout"] == 4.0
    assert opts["connect_args"]["command_timeout"] == 7.0
    assert opts["connect_args"]["timeout"] == 2.5
    assert opts["connect_args"]["ssl"] == "require"
    assert opts["connect_args"]["server_settings"] == {"application_name": "resilient"}
    pool: Any = db.engine.pool
    assert pool.size() == 3
    assert pool._max_overflow == 6
    assert pool._recycle == 120.0
    assert db.pool_stats().max_size == 9


def test_ssl_disable_turns_tls_off() -> None:
    db = Database.from_config(make_config(host="h", ssl_mode="disable"))
    assert db.engine_options()["connect_args"]["ssl"] is False


def test_password_never_shown() -> None:
    """The URL carries the password to the driver but masked everywhere it is shown."""
    db = Database.from_config(make_config(host="db.example", user="trader", password=SECRET))
    assert SECRET not in db.url_masked
    assert db.url_masked == "postgresql+asyncpg://trader:***@db.example:5432/ai_trader"
    assert SECRET not in repr(db.engine.url)
    assert SECRET not in str(db.engine_options())


async def test_health_of_unreachable_server_hides_password(logs: list[str]) -> None:
    """A refused connection is unhealthy, classified, and no text contains the password."""
    cfg = make_config(host="127.0.0.1", port=1, password=SECRET, connect_timeout=1.0)
    db = Database.from_config(cfg)
    report = await db.health_check(within=2.0)
    await db.close()
    assert report["status"] == "unhealthy"
    assert report["backend"] == "postgresql"
    assert report["category"] in ("network", "database")
    assert SECRET not in str(report)
    assert all(SECRET not in line for line in logs)


async def test_sqlite_is_the_embedded_default(tmp_path: Path) -> None:
    """No host configured → SQLite via aiosqlite; helpers and health work."""
    db = Database.from_config(make_config(host="", sqlite_path=str(tmp_path / "x.db")))
    assert db.is_sqlite
    assert db.url_masked.startswith("sqlite+aiosqlite:///")
    await db.start(register_health=False)
    try:
        await db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
        assert await db.execute("INSERT INTO t VALUES (:k, :v)", {"k": "a", "v": 1}) == 1
        assert await db.scalar("SELECT v FROM t WHERE k = :k", {"k": "a"}) == 1
        rows = await db.fetch_all("SELECT k, v FROM t")
        assert [dict(r) for r in rows] == [{"k": "a", "v": 1}]
        health = await db.health_check()
        assert health["status"] == "healthy"
        assert health["backend"] == "sqlite"
    finally:
        await db.close()


def test_get_database_is_a_process_singleton() -> None:
    assert get_database() is get_database()


async def test_start_registers_and_close_unregisters_the_component(tmp_path: Path) -> None:
    from resilient.health import registry

    db = Database.from_config(
        make_config(host="", sqlite_path=str(tmp_path / "h.db")), name="database-test-reg"
    )
    await db.start()
    try:
        report = await registry.check_all()
        assert report.components["database-test-reg"].status == "healthy"
        assert report.components["database-test-reg"].critical is True
    finally:
        await db.close()
    assert "database-test-reg" not in (await registry.check_all()).components


async def test_postgres_reads_writes_sessions_and_units_of_work(pg: Database) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    await pg.execute(f"CREATE TABLE {table} (k TEXT PRIMARY KEY, v INT)")
    try:
        await pg.execute(
            f"INSERT INTO {table} VALUES (:k, :v)", [{"k": "a", "v": 1}, {"k": "b", "v": 2}]
        )
        assert await pg.scalar(f"SELECT sum(v) FROM {table}") == 3
        one = await pg.fetch_one(f"SELECT v FROM {table} WHERE k = :k", {"k": "b"})
        assert one is not None and one["v"] == 2
        assert await pg.fetch_one(f"SELECT v FROM {table} WHERE k = 'zz'") is None
        assert len(await pg.rows(f"SELECT * FROM {table}")) == 2

        async def move(session: Any) -> int:
            await session.execute(text(f"UPDATE {table} SET v = v - 1 WHERE k = 'a'"))
            await session.execute(text(f"UPDATE {table} SET v = v + 1 WHERE k = 'b'"))
            return 1

        assert await pg.run(move, idempotent=False) == 1
        assert await pg.scalar(f"SELECT v FROM {table} WHERE k = 'b'") == 3

        async def duplicate() -> None:
            async with pg.transaction() as conn:
                await conn.execute(text(f"INSERT INTO {table} VALUES ('c', 9)"))
                await conn.execute(text(f"INSERT INTO {table} VALUES ('a', 9)"))

        with pytest.raises(IntegrityError):  # the whole transaction rolls back
            await duplicate()
        assert await pg.scalar(f"SELECT count(*) FROM {table} WHERE k = 'c'") == 0

        async def aborted() -> None:
            async with pg.session() as session:
                await session.execute(text(f"DELETE FROM {table}"))
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError):
            await aborted()
        assert await pg.scalar(f"SELECT count(*) FROM {table}") == 2
    finally:
        await pg.execute(f"DROP TABLE {table}")


async def test_slow_query_logged_without_parameter_values(pg_url: str, logs: list[str]) -> None:
    """A statement over slow_query_threshold is logged with its text, never its values."""
    db = Database.from_config(make_config(slow_query_threshold=0.05), url=pg_url)
    try:
        await db.scalar("SELECT pg_sleep(0.08)::text || :tok", {"tok": SECRET})
        await db.scalar("SELECT :tok", {"tok": SECRET})  # fast: not logged
    finally:
        await db.close()
    slow = [line for line in logs if "slow query" in line]
    assert len(slow) == 1
    assert "pg_sleep" in slow[0]
    assert all(SECRET not in line for line in logs)


async def test_failed_query_error_text_has_no_parameter_values(pg: Database) -> None:
    """SQLAlchemy's parameter listing is hidden from exception text (which gets logged)."""
    with pytest.raises(Exception) as info:
        await pg.scalar("SELECT CAST(:tok AS TEXT) || (1 / 0)::text", {"tok": SECRET})
    assert "division by zero" in str(info.value)
    assert SECRET not in str(info.value)


async def test_query_logging_switch_logs_every_statement(pg_url: str, logs: list[str]) -> None:
    db = Database.from_config(make_config(enable_query_logging=True), url=pg_url)
    try:
        await db.scalar("SELECT 41 + :n", {"n": 1})
    finally:
        await db.close()
    assert any("SELECT 41 +" in line and "query on database" in line for line in logs)


async def test_health_and_pool_metrics(pg: Database) -> None:
    report = await pg.health_check()
    assert report["status"] == "healthy"
    assert report["backend"] == "postgresql"
    async with pg.engine.connect() as c1, pg.engine.connect() as c2:
        await c1.execute(text("SELECT 1"))
        await c2.execute(text("SELECT 1"))
        stats = pg.pool_stats()
        assert stats.checked_out == 2
        assert stats.max_size == current_config().database.max_pool_size
        assert stats.utilization == pytest.approx(2 / stats.max_size, abs=1e-3)
    assert pg.pool_stats().checked_out == 0


def _count_statements(db: Database, marker: str) -> list[int]:
    seen = [0]

    @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
    def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if marker in statement:
            seen[0] += 1

    return seen


async def _through_proxy(pg_url: str, proxy: FaultProxy, **cfg: Any) -> Database:
    url = pg_url.replace(":5432/", f":{proxy.port}/")
    db = Database.from_config(
        make_config(retry_initial_delay=0.0, retry_max_delay=0.0, pool_pre_ping=False, **cfg),
        url=url,
    )
    await db.start(register_health=False)
    return db


async def test_write_is_not_retried_after_a_reset_but_idempotent_one_is(pg_url: str) -> None:
    """A connection reset mid-write may have committed: retried only when marked idempotent."""
    async with FaultProxy("127.0.0.1", 5432) as proxy:
        db = await _through_proxy(pg_url, proxy)
        table = f"w_{uuid.uuid4().hex[:8]}"
        try:
            await db.execute(f"CREATE TABLE {table} (k TEXT PRIMARY KEY)")
            seen = _count_statements(db, "pg_sleep(0.3)")

            async def write(idempotent: bool) -> int:
                return await db.execute(
                    f"INSERT INTO {table} SELECT :k FROM pg_sleep(0.3) ON CONFLICT DO NOTHING",
                    {"k": str(idempotent)},
                    idempotent=idempotent,
                )

            task = asyncio.create_task(write(False))
            await asyncio.sleep(0.1)
            proxy.reset_all()
            with pytest.raises(Exception) as info:
                await task
            assert classify(info.value) in (ErrorCategory.DATABASE, ErrorCategory.NETWORK)
            assert seen[0] == 1  # not re-sent

            task = asyncio.create_task(write(True))
            await asyncio.sleep(0.1)
            proxy.reset_all()
            assert await task == 1  # retried on a fresh connection
            assert seen[0] == 3
        finally:
            await db.execute(f"DROP TABLE IF EXISTS {table}")
            await db.close()


async def test_read_is_retried_after_a_reset(pg_url: str) -> None:
    async with FaultProxy("127.0.0.1", 5432) as proxy:
        db = await _through_proxy(pg_url, proxy)
        try:
            assert await db.scalar("SELECT 1") == 1
            task = asyncio.create_task(db.scalar("SELECT 7 FROM pg_sleep(0.2)"))
            await asyncio.sleep(0.08)
            proxy.reset_all()
            assert await task == 7
        finally:
            await db.close()


async def test_refused_connection_lets_even_a_write_retry(pg_url: str) -> None:
    """A refused connection proves nothing was sent, so a non-idempotent write is retried."""
    port = free_port()
    url = pg_url.replace(":5432/", f":{port}/")
    db = Database.from_config(
        make_config(retry_initial_delay=0.05, retry_max_delay=0.1, retry_max_attempts=6), url=url
    )
    proxy = FaultProxy("127.0.0.1", 5432, listen_port=port)
    try:
        task = asyncio.create_task(db.execute("SELECT 1"))
        await asyncio.sleep(0.08)  # the first attempt was refused: nothing listens yet
        await proxy.start()
        assert await task in (1, -1)
        assert proxy.accepted >= 1
    finally:
        await db.close()
        await proxy.stop()


async def test_retries_go_through_the_retry_policy_and_the_failure_is_tracked_once(
    pg_url: str,
) -> None:
    """Nothing listens: every attempt is refused, retried as the retry policy's events under
    the database's name, and the final error is counted once for that name."""
    name = f"db-{uuid.uuid4().hex[:8]}"
    url = pg_url.replace(":5432/", f":{free_port()}/")
    db = Database.from_config(
        make_config(retry_initial_delay=0.0, retry_max_delay=0.0, retry_max_attempts=3),
        url=url,
        name=name,
    )
    seen: list[PolicyEvent] = []
    remove = add_hook(lambda e: seen.append(e) if e.name == name else None, kinds=["retry"])
    try:
        with pytest.raises(OSError) as info:
            await db.execute("SELECT 1")  # a write: retried because nothing was sent
    finally:
        remove()
        await db.close()
    assert [e.attempt for e in seen] == [1, 2]
    assert all(e.exception is not info.value for e in seen)  # the last error is raised
    assert tracker.by_component[name] == 1


async def test_non_idempotent_write_is_not_retried_on_timeout(pg_url: str) -> None:
    """A command timeout may hide a committed write: it surfaces at once, classified."""
    async with FaultProxy("127.0.0.1", 5432) as proxy:
        db = await _through_proxy(pg_url, proxy, command_timeout=0.3)
        try:
            assert await db.scalar("SELECT 1") == 1
            proxy.blackhole = True
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError) as info:
                await db.execute("SELECT 1", idempotent=False)
            assert loop.time() - started < 1.0
            assert classify(info.value) is ErrorCategory.TIMEOUT
        finally:
            proxy.blackhole = False
            await db.close()


async def test_start_on_a_given_registry_and_pool_metrics(tmp_path: Path) -> None:
    from resilient import metrics
    from resilient.health import HealthRegistry

    registry = HealthRegistry()
    db = Database.from_config(
        make_config(host="", sqlite_path=str(tmp_path / "m.db")), name="db-metrics-test"
    )
    await db.start(registry=registry)
    try:
        assert await db.scalar("SELECT 1") == 1
        report = await registry.check_all()
        assert report.components["db-metrics-test"].status == "healthy"
        text_out = metrics.generate_latest().decode()
        assert 'pool="db-metrics-test"' in text_out
    finally:
        await db.close()
    assert "db-metrics-test" not in (await registry.check_all()).components
