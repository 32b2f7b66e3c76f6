"""The pytest plugin: cheap import, the needs_server marker, isolation and server fixtures."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from resilient import FakeClock, get_clock
from resilient.testing.plugin import in_ci

pytest_plugins = ["pytester"]


def test_plugin_imports_cheaply_without_hypothesis() -> None:
    """Importing the plugin pulls in neither hypothesis, the strategies nor a database driver.

    (``import resilient`` itself is unavoidable for a plugin inside the package; the servers and
    the fault proxy it offers are imported with it, and need only the standard library.)
    """
    code = (
        "import sys, time, json; t = time.perf_counter(); import resilient.testing.plugin; "
        "print(json.dumps({'seconds': time.perf_counter() - t, 'modules': sorted(sys.modules)}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(out.stdout)["modules"])
    heavy = {
        "hypothesis",
        "resilient.testing.strategies",
        "sqlalchemy",
        "asyncpg",
    }
    assert not heavy & loaded, sorted(heavy & loaded)


def test_strategies_load_lazily_from_the_package() -> None:
    """``resilient.testing.fault_schedules`` imports the strategies module on first access."""
    import resilient.testing as testing

    assert testing.fault_schedules is testing.strategies.fault_schedules
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = testing.nope  # type: ignore[attr-defined]


def test_fake_clock_fixture_installs_and_restores(fake_clock: FakeClock) -> None:
    """The fixture's clock is the clock in force during the test."""
    assert get_clock() is fake_clock
    fake_clock.advance(90)
    assert fake_clock.monotonic() == 1090.0


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def open_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """pytester with the inner runs configured like a user project (no deprecation warnings)."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return pytester


MARKED = """
import pytest

@pytest.mark.needs_server("{spec}")
def test_uses_server():
    assert True
"""


def test_needs_server_skips_locally(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    """An unreachable server skips the test with the address in the reason."""
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(MARKED.format(spec=f"127.0.0.1:{closed_port}"))
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*not reachable at 127.0.0.1:{closed_port}*"])


def test_needs_server_fails_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    """With CI=true the same test fails instead of being skipped."""
    monkeypatch.setenv("CI", "true")
    assert in_ci()
    pytester.makepyfile(MARKED.format(spec=f"redis://127.0.0.1:{closed_port}/0"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*CI=true*"])


def test_needs_server_runs_when_reachable(pytester: pytest.Pytester, open_port: int) -> None:
    """A reachable server lets the test run; the marker is registered (--strict-markers)."""
    pytester.makepyfile(MARKED.format(spec=f"127.0.0.1:{open_port}"))
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_needs_server_rejects_a_bad_argument(pytester: pytest.Pytester) -> None:
    """A marker argument that is not a server name, host:port or URL is a usage error."""
    pytester.makepyfile(MARKED.format(spec="somewhere"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*'postgres', 'redis', 'host:port'*"])
    assert result.ret != 0


def test_isolated_registry_forgets_errors(pytester: pytest.Pytester) -> None:
    """State recorded in one test is gone in the next one that uses the fixture."""
    pytester.makepyfile(
        """
        from resilient.errors import record_error, tracker

        def test_records(isolated_registry):
            record_error(ConnectionRefusedError(111, "refused"), component="broker")
            assert tracker.snapshot()["total_errors"] == 1

        def test_sees_nothing(isolated_registry):
            assert tracker.snapshot()["total_errors"] == 0
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_throwaway_redis(throwaway_redis: object) -> None:
    """The fixture yields a private Redis that answers PING and can be stopped."""
    url = throwaway_redis.url  # type: ignore[attr-defined]
    port = throwaway_redis.port  # type: ignore[attr-defined]
    assert url.startswith("redis://127.0.0.1:") and port != 6379
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(64) == b"+PONG\r\n"


async def test_fault_proxy_fixture(throwaway_redis: object, fault_proxy: object) -> None:
    """The factory starts a proxy in front of a server; faults switch at run time."""
    import asyncio

    proxy = await fault_proxy("127.0.0.1", throwaway_redis.port)  # type: ignore[operator,attr-defined]
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"PING\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.readline(), 5) == b"+PONG\r\n"
    proxy.reset_all()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5)
    writer.close()


def test_isolated_registry_forgets_breakers_health_and_fallbacks(
    pytester: pytest.Pytester,
) -> None:
    """Breakers, health checks, fallback episodes and errors do not leak into the next test."""
    pytester.makepyfile(
        """
        from resilient._policies.breaker import breaker, breakers
        from resilient._policies.fallback import fallback, fallback_status
        from resilient.errors import record_error, tracker
        from resilient.health import registry

        def test_dirty(isolated_registry):
            @fallback(value=0.0, name="quotes")
            @breaker("quotes", failure_threshold=1)
            def get_price():
                raise ConnectionRefusedError(111, "refused")

            assert get_price() == 0.0
            assert breakers.get("quotes").state == "open"
            assert fallback_status()["quotes"].degraded
            registry.register("database", lambda: True)
            record_error(ConnectionRefusedError(111, "refused"))

        def test_clean(isolated_registry):
            assert "quotes" not in breakers
            assert not any(s.degraded or s.served for s in fallback_status().values())
            assert registry.names() == []
            assert tracker.snapshot()["total_errors"] == 0
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_zero_wait_fixture(pytester: pytest.Pytester) -> None:
    """Retries in a test using ``zero_wait`` make every attempt without sleeping."""
    pytester.makepyfile(
        """
        from resilient._policies.retry import retry
        from resilient.testing import Fault, FlakyService

        def test_no_sleep(zero_wait, fake_clock):
            service = FlakyService([Fault("timeout")] * 3)
            get = retry(max_attempts=4, initial_delay=5.0, budget=False)(service.wrap(lambda: 1))
            assert get() == 1
            assert len(service.calls) == 4
            assert fake_clock.sleeps == []
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_isolated_registry_resets_functions_decorated_at_import(pytester: pytest.Pytester) -> None:
    """A breaker decorated at import time starts every test closed and stays registered;
    breakers created inside a test are forgotten after it."""
    pytester.makepyfile(
        """
        import pytest
        from resilient._policies.breaker import breaker, breakers

        @breaker("broker", failure_threshold=1)
        def place_order():
            raise ConnectionRefusedError(111, "refused")

        @pytest.mark.parametrize("run", [1, 2])
        def test_trips_once_per_test(isolated_registry, run):
            assert breakers.get("broker").state == "closed"
            with pytest.raises(ConnectionRefusedError):
                place_order()
            assert breakers.get("broker").state == "open"
            breaker("made-in-test", failure_threshold=3)

        def test_made_in_test_is_gone(isolated_registry):
            assert "broker" in breakers
            assert "made-in-test" not in breakers
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_throwaway_postgres(throwaway_postgres: object) -> None:
    """The fixture yields a private PostgreSQL that answers queries, on its own port."""
    server = throwaway_postgres
    assert server.port != 5432  # type: ignore[attr-defined]
    assert f":{server.port}/" in server.url  # type: ignore[attr-defined]
    assert "42" in server.psql("select 42")  # type: ignore[attr-defined]


@pytest.mark.needs_server("postgres", "redis")
def test_needs_server_resolves_names_from_settings(pytester: pytest.Pytester) -> None:
    """'postgres' and 'redis' resolve to the configured servers (here the shared ones)."""
    pytester.makepyfile(
        MARKED.format(spec="postgres")
        + MARKED.format(spec="redis").replace("test_uses_server", "test_uses_redis")
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
