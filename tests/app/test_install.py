"""The install story: a bare ``pip install resilient`` runs the demo and is healthy on the
embedded defaults; a feature that needs an extra says which one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTRA_MODULES = (
    "redis",
    "asyncpg",
    "prometheus_client",
    "starlette",
    "uvicorn",
    "hypothesis",
    "pytest_asyncio",
)

# Runs in a fresh interpreter where the extras' packages cannot be imported (as after a bare
# install), then hands over to the code given in argv[1].
WITHOUT_EXTRAS = f"""
import sys
for name in {EXTRA_MODULES!r}:
    sys.modules[name] = None  # "import redis" now raises ModuleNotFoundError
sys.argv = sys.argv[1:]
exec(sys.argv[0])
"""


def run_without_extras(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AI_TRADER_")}
    environ.update(AI_TRADER_ENV="development", PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, code],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


CLI = "from resilient._cli import main; raise SystemExit(main({args!r}))"


def test_import_and_health_without_extras(tmp_path: Path) -> None:
    """Without any extra, importing every always-available module imports no optional
    package, and `resilient health` is healthy: embedded SQLite, in-process cache."""
    probe = run_without_extras(
        "import sys, resilient, resilient.integration, resilient.health, resilient.db, "
        "resilient.trading, resilient.testing\n"
        f"print(sorted(m for m in {EXTRA_MODULES!r} if sys.modules.get(m) is not None))",
        tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"
    done = run_without_extras(CLI.format(args=["health", "--json"]), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    health = json.loads(done.stdout)
    assert health["overall_status"] == "healthy"
    assert health["components"]["cache"]["status"] == "healthy"
    assert health["components"]["database"]["status"] == "healthy"


@pytest.mark.parametrize(
    ("code", "extra"),
    [
        ("import resilient.http", "http"),
        ("import resilient.testing.strategies", "testing"),
        ("import resilient.metrics as m; m.generate_latest()", "prometheus"),
        (
            "import asyncio; from resilient.db import Database; "
            "asyncio.run(Database.from_config().start())",
            "db",
        ),
        (
            "from resilient._backends.redis import enable_redis_cache; "
            "enable_redis_cache('redis://127.0.0.1:6379/15')",
            "redis",
        ),
    ],
)
def test_feature_without_its_extra_names_the_extra(code: str, extra: str, tmp_path: Path) -> None:
    """Using a feature whose extra is missing raises ModuleNotFoundError with the pip line."""
    done = run_without_extras(code, tmp_path, AI_TRADER_DATABASE__HOST="127.0.0.1")
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr
    assert f'pip install "resilient[{extra}]"' in done.stderr


def test_cli_health_without_the_db_extra_names_it(tmp_path: Path) -> None:
    """With a PostgreSQL host configured and no driver, `resilient health` reports the
    database unhealthy with the extra to install (exit 2), never "(no components)"."""
    done = run_without_extras(
        CLI.format(args=["health"]),
        tmp_path,
        AI_TRADER_DATABASE__HOST="127.0.0.1",
        AI_TRADER_REDIS__URL="redis://127.0.0.1:6379/15",
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no components registered" not in done.stdout
    assert 'pip install "resilient[db]"' in done.stdout
    assert 'pip install "resilient[redis]"' in done.stdout  # the cache, degraded


@pytest.mark.slow
def test_bare_pip_install_runs_demo_and_is_healthy(tmp_path: Path) -> None:
    """A fresh virtual environment with `pip install <project>` (no extras): `resilient
    demo` and `resilient health` exit 0 and healthy; the HTTP endpoint names its extra."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AI_TRADER_", "PYTHON"))}
    environ.update(PIP_DISABLE_PIP_VERSION_CHECK="1", AI_TRADER_ENV="development")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(ROOT)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    work = tmp_path / "app"
    work.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), cwd=work, env=environ, capture_output=True, text=True, timeout=300
        )

    listed = run(str(python), "-m", "pip", "list", "--format=json")
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert not {"redis", "asyncpg", "starlette", "prometheus-client", "hypothesis"} & installed
    demo = run(str(bindir / "resilient"), "demo", "--json", "--no-progress")
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert json.loads(demo.stdout)["health"]["overall_status"] == "healthy"
    health = run(str(bindir / "resilient"), "health", "--json")
    assert health.returncode == 0, health.stdout + health.stderr
    assert json.loads(health.stdout)["overall_status"] == "healthy"
    http = run(str(python), "-c", "import resilient.http")
    assert http.returncode != 0 and 'pip install "resilient[http]"' in http.stderr


def test_cli_command_needing_an_extra_prints_the_pip_line(tmp_path: Path) -> None:
    """`resilient breakers` with redis.url set and no redis-py: the pip line, exit 2, no
    traceback."""
    done = run_without_extras(
        CLI.format(args=["breakers"]), tmp_path, AI_TRADER_REDIS__URL="redis://127.0.0.1:6379/15"
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert 'pip install "resilient[redis]"' in done.stderr
    assert "Traceback" not in done.stderr
