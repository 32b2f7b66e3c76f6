"""``resilient health``: table or JSON, exit 0/1/2, no servers needed, secrets never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient._cli import main
from resilient._core.sanitize import register_secret
from resilient.health import CheckResult, HealthStatus, registry

pytestmark = pytest.mark.usefixtures("isolated_registry")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the embedded SQLite file lands here


def test_healthy_table_with_embedded_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """With no servers configured the embedded database and cache are healthy: exit 0."""
    assert main(["health"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["COMPONENT", "STATUS", "CRITICAL", "LATENCY", "DETAIL"]
    assert "database" in out and "cache" in out
    assert "overall: healthy" in out
    assert "database" not in registry.names()  # the data layer closed and unregistered


def test_health_leaves_no_sqlite_file_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A probe on the embedded default does not create the database file; an existing file
    is opened and checked."""
    assert main(["health", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "not created yet" in data["components"]["database"]["detail"]
    assert not (tmp_path / "resilient.db").exists()
    assert "database" not in registry.names()

    import sqlite3

    sqlite3.connect(tmp_path / "resilient.db").close()  # as the application leaves it
    assert main(["health", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["components"]["database"]["status"] == "healthy"
    assert "not created yet" not in json.dumps(data["components"]["database"])


def test_health_reports_an_sqlite_path_that_cannot_be_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file in a directory that does not exist is unhealthy, with the fix."""
    from resilient.config import reload_config

    monkeypatch.setenv("AI_TRADER_DATABASE__SQLITE_PATH", str(tmp_path / "no" / "such.db"))
    reload_config()
    try:
        assert main(["health", "--json"]) == 2
    finally:
        monkeypatch.delenv("AI_TRADER_DATABASE__SQLITE_PATH")
        reload_config()
    data = json.loads(capsys.readouterr().out)
    detail = data["components"]["database"]["detail"]
    assert "not a writable directory" in detail and "database.sqlite_path" in detail
    assert not (tmp_path / "no").exists()


def test_failed_database_start_is_unhealthy_and_unregistered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database that fails to start is reported unhealthy, and its stand-in component is
    unregistered afterwards like a started one."""
    import sqlite3

    import resilient.db

    sqlite3.connect(tmp_path / "resilient.db").close()  # probe the database, not the file

    class _Broken:
        async def start(self, *, register_health: bool = False) -> None:
            raise ConnectionRefusedError("database is down")

    monkeypatch.setattr(resilient.db, "get_database", _Broken)
    assert main(["health", "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    database = data["components"]["database"]
    assert database["status"] == "unhealthy" and database["critical"]
    assert "ConnectionRefusedError: database is down" in database["detail"]
    assert "database" not in registry.names()


def test_failed_cache_registration_is_degraded_and_unregistered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cache whose checks cannot be registered is degraded (not critical), and its stand-in
    component is unregistered afterwards."""
    import resilient._backends.redis

    def broken(registry: object) -> None:
        raise RuntimeError("no cache")

    monkeypatch.setattr(resilient._backends.redis, "register_health_checks", broken)
    assert main(["health", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    cache = data["components"]["cache"]
    assert cache["status"] == "degraded" and not cache["critical"]
    assert "RuntimeError: no cache" in cache["detail"]
    assert "cache" not in registry.names()


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the system health dict."""
    assert main(["health", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["overall_status"] == "healthy"
    assert set(data) >= {"components", "circuit_breakers", "error_handling", "timestamp"}
    assert data["components"]["database"]["critical"] is True


@pytest.mark.parametrize(
    ("status", "critical", "code"),
    [("degraded", True, 1), ("unhealthy", False, 1), ("unhealthy", True, 2)],
)
def test_exit_codes(
    status: str, critical: bool, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 when degraded, 2 when unhealthy."""
    registry.register("broker", lambda: status, critical=critical)
    assert main(["health"]) == code
    assert f"overall: {'unhealthy' if code == 2 else 'degraded'}" in capsys.readouterr().out


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    secret=st.text(
        alphabet=st.characters(codec="ascii", categories=("L", "N")), min_size=12, max_size=30
    ).filter(lambda s: any(c.isdigit() for c in s) and any(c.isupper() for c in s))
)
def test_generated_secrets_never_printed(secret: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Secrets inside check details or errors are masked in the table and in JSON."""
    register_secret(secret)
    registry.register(
        "broker", lambda: CheckResult(HealthStatus.DEGRADED, f"api key {secret} rejected")
    )

    def failing() -> None:
        raise PermissionError(f"password={secret}")

    registry.register("vendor", failing, critical=False)
    main(["health"])
    main(["health", "--json"])
    out = capsys.readouterr()
    assert secret not in out.out + out.err


def test_subprocess_unreachable_servers_exit_2_without_leaking_passwords(tmp_path: Path) -> None:
    """The real console entry: unreachable PostgreSQL is unhealthy (exit 2), unreachable Redis
    degrades the cache, and neither password is printed."""
    pg_password = "Pg-Passw0rd-7781"
    redis_password = "Rd-Passw0rd-5512"
    env = dict(os.environ)
    env.update(
        AI_TRADER_ENV="testing",
        AI_TRADER_DATABASE_HOST="127.0.0.1",
        AI_TRADER_DATABASE_PORT="1",
        AI_TRADER_DATABASE_PASSWORD=pg_password,
        AI_TRADER_REDIS__URL=f"redis://:{redis_password}@127.0.0.1:1/0",
        AI_TRADER_RESILIENCE__HEALTH_CHECK_TIMEOUT="1.0",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "resilient", "health", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert pg_password not in output
    assert redis_password not in output
    data = json.loads(proc.stdout)
    assert data["components"]["database"]["status"] == "unhealthy"
    assert data["components"]["cache"]["status"] == "degraded"


def test_subprocess_with_the_real_servers_is_healthy(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """Against the running PostgreSQL and Redis, both components are healthy: exit 0."""
    env = dict(os.environ)
    env.update(
        AI_TRADER_ENV="testing",
        AI_TRADER_DATABASE_HOST="127.0.0.1",
        AI_TRADER_DATABASE_PORT="5432",
        AI_TRADER_DATABASE_USER="postgres",
        AI_TRADER_DATABASE_NAME="test",
        AI_TRADER_REDIS__URL=redis_url,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "resilient", "health"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()[1:3]}
    assert rows == {"cache": "healthy", "database": "healthy"}
