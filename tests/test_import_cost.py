"""``import resilient`` is cheap: no optional dependency is imported until a feature needs it.

pybreaker imports redis at its top; ``resilient._core.pybreaker_import`` imports it with redis
hidden and binds pybreaker's redis names when redis is imported later, so a host using
pybreaker's own ``CircuitRedisStorage`` is not affected.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from resilient._core import pybreaker_import as _pybreaker

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "sqlalchemy",
    "asyncpg",
    "redis",
    "starlette",
    "prometheus_client",
    "hypothesis",
    "opentelemetry",
    "websockets",
)


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter importing this checkout; its stdout."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize(
    "module",
    ["resilient", "resilient.config", "resilient.errors", "resilient.health", "resilient.trading"],
)
def test_importing_the_package_imports_no_optional_dependency(module: str) -> None:
    out = run_python(f"import sys, {module}; print([m for m in {HEAVY!r} if m in sys.modules])")
    assert out == "[]"


def test_pybreaker_gets_its_redis_names_when_redis_is_imported_later() -> None:
    out = run_python(
        "import sys, resilient, pybreaker\n"
        "print('redis' in sys.modules, pybreaker.HAS_REDIS_SUPPORT,\n"
        "      hasattr(pybreaker, 'RedisError'))\n"
        "import redis, redis.exceptions\n"
        "print(pybreaker.HAS_REDIS_SUPPORT, pybreaker.RedisError is redis.exceptions.RedisError,\n"
        "      pybreaker.Redis is redis.Redis, type(redis.__spec__.loader).__name__,\n"
        "      redis.__loader__ is redis.__spec__.loader)"
    )
    # redis keeps its own loader: nothing of the watch is left on the module
    assert out.splitlines() == ["False False False", "True True True SourceFileLoader True"]


def test_redis_imported_first_leaves_pybreaker_alone() -> None:
    out = run_python(
        "import sys, redis, resilient, pybreaker\n"
        "print(pybreaker.HAS_REDIS_SUPPORT, any(type(f).__module__ =="
        " 'resilient._core.pybreaker_import' for f in sys.meta_path))"
    )
    assert out == "True False"


def test_redis_imported_by_another_thread_binds_pybreaker() -> None:
    out = run_python(
        "import threading, resilient, pybreaker\n"
        "t = threading.Thread(target=__import__, args=('redis',)); t.start(); t.join()\n"
        "print(pybreaker.HAS_REDIS_SUPPORT)"
    )
    assert out == "True"


def test_circuit_redis_storage_works_after_importing_resilient(redis_url: str) -> None:
    """pybreaker's own Redis storage, on the real server, in a process that imported resilient
    before redis: the breaker opens in Redis, and a RedisError is handled as pybreaker does."""
    namespace = f"import-cost-{uuid.uuid4().hex}"
    out = run_python(
        f"""
import resilient, pybreaker, redis
client = redis.Redis.from_url({redis_url!r})
storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace={namespace!r})
cb = pybreaker.CircuitBreaker(fail_max=2, state_storage=storage, throw_new_error_on_trip=False)
def boom():
    raise ValueError("down")
for _ in range(2):
    try:
        cb.call(boom)
    except ValueError:
        pass
print(cb.current_state, client.get({namespace + ":pybreaker:state"!r}).decode())
client.set({namespace + ":pybreaker:fail_counter"!r}, "not a number")
storage.increment_counter()  # INCR fails with a RedisError, which pybreaker logs
print("handled")
client.delete(*client.keys({namespace + ":*"!r}))
"""
    )
    assert out.splitlines() == ["open open", "handled"]


def test_redis_is_hidden_only_from_the_thread_importing_pybreaker() -> None:
    watch = _pybreaker._RedisWatch()
    seen: list[ModuleSpec | None] = []
    watch._hiding.on = True
    try:
        with pytest.raises(ModuleNotFoundError):
            watch.find_spec("redis", None)
        other = threading.Thread(target=lambda: seen.append(watch.find_spec("redis", None)))
        other.start()
        other.join()
    finally:
        watch._hiding.on = False
    spec = seen[0]
    assert spec is not None
    assert type(spec.loader) is _pybreaker._BindAfter
    assert watch.find_spec("json", None) is None
