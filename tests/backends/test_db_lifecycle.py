"""Database against the real PostgreSQL: one shared pool per URL and name, components of two
databases side by side, health degraded when slow, and calls bounded by their time budget."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import pytest

from resilient import deadline
from resilient.config import Config, current_config
from resilient.db import Database, register_health_checks
from resilient.health import HealthRegistry


def _config(**overrides: Any) -> Config:
    base = current_config()
    db = {k: v for k, v in overrides.items() if hasattr(base.database, k)}
    res = {k: v for k, v in overrides.items() if hasattr(base.resilience, k)}
    return dataclasses.replace(
        base,
        database=dataclasses.replace(base.database, **db),
        resilience=dataclasses.replace(base.resilience, **res),
    )


def _app() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


async def test_from_config_shares_a_started_database_until_its_last_user_closes(
    pg_url: str,
) -> None:
    config, app = _config(), _app()
    registry = HealthRegistry()
    first = Database.from_config(config, url=pg_url, application_name=app)
    await first.start(registry=registry)
    second = Database.from_config(config, url=pg_url, application_name=app)
    assert second is first
    assert await second.scalar("SELECT 41 + 1") == 42
    await second.close()  # another user still holds it: stays open and in health
    assert registry.names() == ["database"]
    assert await first.scalar("SELECT 1") == 1
    await first.close()
    assert registry.names() == []
    third = Database.from_config(config, url=pg_url, application_name=app)
    assert third is not first  # closed: a new one


async def test_a_second_database_of_another_url_gets_its_own_component(
    pg_url: str, tmp_path: Any
) -> None:
    registry = HealthRegistry()
    pg = Database(_config(), url=pg_url, application_name=_app())
    lite = Database(_config(), url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    await pg.start(registry=registry)
    await lite.start(registry=registry)
    try:
        assert pg.component == "database"
        assert lite.component == "database-2"
        report = await registry.check_all()
        assert report.components["database"].data["backend"] == "postgresql"
        assert report.components["database-2"].data["backend"] == "sqlite"
    finally:
        await lite.close()
        await pg.close()
    assert registry.names() == []


async def test_async_with_starts_and_closes(pg_url: str) -> None:
    registry_before = HealthRegistry()
    db = Database(_config(), url=pg_url, application_name=_app())
    async with db as started:
        assert started is db
        assert await db.fetch_one("SELECT 'x' AS v") == {"v": "x"}
    assert db.pool_stats().size == 0  # disposed
    assert registry_before.names() == []


async def test_health_is_degraded_when_select_1_is_slow(pg_url: str) -> None:
    db = Database(_config(slow_query_threshold=0.0), url=pg_url, application_name=_app())
    await db.start(register_health=False)
    try:
        health = await db.health_check()
    finally:
        await db.close()
    assert health["status"] == "degraded"
    assert health["detail"].startswith("SELECT 1 took ")
    assert health["backend"] == "postgresql"


async def test_health_timeout_without_message_names_the_wait(pg_url: str) -> None:
    db = Database(_config(), url=pg_url, application_name=_app())
    await db.start(register_health=False)
    try:
        health = await db.health_check(within=1e-9)
    finally:
        await db.close()
    assert health["status"] == "unhealthy"
    assert health["detail"].startswith("TimeoutError after ")


async def test_register_health_checks_on_a_given_registry(pg_url: str) -> None:
    registry = HealthRegistry()
    db = Database(_config(), url=pg_url, application_name=_app())
    await db.start(register_health=False)
    try:
        register_health_checks(registry, db)
        report = await registry.check_all()
    finally:
        await db.close()
    component = report.components["database"]
    assert component.status.value == "healthy" and component.critical


async def test_a_query_longer_than_its_budget_times_out(pg_url: str) -> None:
    db = Database(
        _config(command_timeout=0.2, retry_initial_delay=0.0, retry_max_delay=0.0),
        url=pg_url,
        application_name=_app(),
    )
    await db.start(register_health=False)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await db.scalar("SELECT pg_sleep(5)")
        assert loop.time() - started < 4.0
        assert await db.scalar("SELECT 7") == 7  # the pool is still usable
    finally:
        await db.close()


async def test_a_spent_deadline_starts_nothing(pg_url: str) -> None:
    db = Database(_config(), url=pg_url, application_name=_app())
    await db.start(register_health=False)
    try:
        with deadline(0.05):
            await asyncio.sleep(0.1)
            with pytest.raises(TimeoutError):
                await db.execute("CREATE TABLE never_created_x (id int)")
        assert await db.scalar("SELECT to_regclass('never_created_x') IS NULL") is True
    finally:
        await db.close()


async def test_a_cancelled_query_returns_at_once_and_the_pool_stays_usable(pg_url: str) -> None:
    db = Database(_config(command_timeout=10.0), url=pg_url, application_name=_app())
    await db.start(register_health=False)
    try:
        task = asyncio.ensure_future(db.scalar("SELECT pg_sleep(5)"))
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.time() - started < 2.0
        assert await db.scalar("SELECT 3") == 3
    finally:
        await db.close()
