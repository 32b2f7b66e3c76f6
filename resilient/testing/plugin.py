"""The pytest plugin (entry point ``pytest11``): fixtures for tests of resilient code.

Fixtures: ``fake_clock``, ``isolated_registry``, ``zero_wait``, ``fault_proxy``,
``throwaway_postgres``, ``throwaway_redis``. Marker: ``@pytest.mark.needs_server("postgres")``
(also ``"redis"`` or ``"host:port"``) skips a test when the server is unreachable, and fails it
instead when ``CI=true``.

Importing the plugin is cheap: every heavier part (servers, proxy, hypothesis) is imported by the
fixture that uses it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import pytest

from resilient._core.clock import FakeClock
from resilient.config import current_config
from resilient.testing._isolation import isolated_state
from resilient.testing._policy import zero_wait_retries
from resilient.testing.faults import FaultProxy
from resilient.testing.flaky import use_fake_clock
from resilient.testing.servers import postgres_server, redis_server

if TYPE_CHECKING:
    from resilient.testing.servers import PostgresServer, RedisServer

try:  # async fixtures need pytest-asyncio (in the "testing" extra)
    import pytest_asyncio

    _async_fixture: Any = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - pytest-asyncio is installed with resilient[testing]
    _async_fixture = None

_MARKER = "needs_server"
_DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "redis": 6379}


def in_ci() -> bool:
    """Whether the tests run in CI (``CI`` set to 1/true/yes): unreachable servers fail tests."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(*servers): the test needs real servers ('postgres', 'redis' or 'host:port'); "
        "skipped when one is unreachable, failed instead when CI=true",
    )


def _endpoint(spec: str) -> tuple[str, str, int]:
    """(label, host, port) of a marker argument."""
    name = spec.strip().lower()
    if name in ("postgres", "postgresql"):
        db = current_config().database
        host = db.host or "127.0.0.1"
        return "PostgreSQL", host, int(db.port or _DEFAULT_PORTS[name])
    if name == "redis":
        url = current_config().redis.url or "redis://127.0.0.1:6379/0"
        parts = urlsplit(url)
        return "Redis", parts.hostname or "127.0.0.1", parts.port or 6379
    if "://" in spec:
        parts = urlsplit(spec)
        if parts.hostname and parts.port:
            return spec, parts.hostname, parts.port
    host, sep, port = spec.rpartition(":")
    if sep and port.isdigit():
        return spec, host.strip("[]") or "127.0.0.1", int(port)
    raise pytest.UsageError(
        f"@pytest.mark.{_MARKER}({spec!r}): use 'postgres', 'redis', 'host:port' or a URL with "
        "a host and a port"
    )


def _reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _unavailable(message: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{message} (CI=true: tests that need it must run, so this is a failure)")
    pytest.skip(f"{message}; start it to run this test (with CI=true this fails instead)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers(_MARKER):
        if not marker.args:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.{_MARKER}() needs at least one server, "
                "e.g. needs_server('postgres')"
            )
        for spec in marker.args:
            label, host, port = _endpoint(str(spec))
            if not _reachable(host, port):
                _unavailable(f"{label} is not reachable at {host}:{port}")


@pytest.fixture
def fake_clock() -> Iterator[FakeClock]:
    """A :class:`FakeClock` installed for the test: breakers, retries, timeouts, the health
    monitor and alerts read it, and every sleep on it advances it instantly."""
    with use_fake_clock() as clock:
        yield clock


@pytest.fixture
def isolated_registry() -> Iterator[None]:
    """Fresh breakers, health registry, error tracker, fallback state and metrics for the test.

    State is reset before the test and again after it, so nothing leaks in either direction.
    Breakers of functions decorated at import time are reset (closed, zero counts) and stay
    registered; breakers created during the test are forgotten afterwards. Hypothesis runs
    many examples in one test: call :func:`resilient.testing.reset_state` in the test body to
    reset between examples.
    """
    with isolated_state():
        yield


@pytest.fixture
def zero_wait() -> Iterator[None]:
    """Retries in the test never wait between attempts (the attempts themselves still happen)."""
    with zero_wait_retries():
        yield


def _servers_or_skip(what: str) -> None:
    if os.name != "posix":  # pragma: no cover - the servers are started as POSIX processes
        _unavailable(f"a throwaway {what} needs a POSIX system")


_Server = TypeVar("_Server")


def _throwaway_server(
    what: str, start: Callable[[], AbstractContextManager[_Server]]
) -> Iterator[_Server]:
    """Start a server with ``start()`` for one test and stop it afterwards; a server that
    cannot start skips the test (fails it when CI=true)."""
    _servers_or_skip(what)
    try:
        manager = start()
        server = manager.__enter__()
    except (RuntimeError, OSError) as exc:
        _unavailable(f"cannot start a throwaway {what}: {exc}")
    try:
        yield server
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture
def throwaway_postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster on a free port (``.url``, ``.stop()``, ``.restart()``).

    Needs the PostgreSQL server binaries; the test is skipped without them (failed when CI=true).
    """
    yield from _throwaway_server("PostgreSQL", postgres_server)


@pytest.fixture
def throwaway_redis() -> Iterator[RedisServer]:
    """A private redis-server on a free port (``.url``, ``.stop()``, ``.kill()``, ``.start()``).

    Needs ``redis-server``; the test is skipped without it (failed when CI=true).
    """
    yield from _throwaway_server("Redis", redis_server)


FaultProxyFactory = Callable[..., Awaitable["FaultProxy"]]


async def _fault_proxy() -> AsyncIterator[FaultProxyFactory]:
    proxies: list[FaultProxy] = []

    async def start(target_host: str = "127.0.0.1", target_port: int = 0) -> FaultProxy:
        proxy = FaultProxy(target_host, target_port)
        proxies.append(proxy)
        return await proxy.start()

    try:
        yield start
    finally:
        for proxy in reversed(proxies):
            await proxy.stop()


if _async_fixture is not None:
    fault_proxy = _async_fixture(_fault_proxy, name="fault_proxy")
    fault_proxy.__doc__ = (
        "An async factory: ``proxy = await fault_proxy(host, port)`` starts a FaultProxy in front "
        "of a server (``.port``, ``.latency``, ``.blackhole``, ``.refuse``, ``reset_all()``); "
        "every proxy is stopped after the test."
    )
