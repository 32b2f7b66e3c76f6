"""resilient inside a host application: it keeps the host's logs, does not flood them, says
when the application blocks its own event loop or forgot to initialise the factory, and
shares one database with it."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from loguru import logger as host_logger

import resilient
from resilient import breaker, disable_logging, fallback, retry
from resilient._core import log as _logging
from resilient.config import Config, current_config
from resilient.integration import ResilienceFactory


@pytest.fixture(autouse=True)
def _logging_off() -> Iterator[None]:
    disable_logging()
    _logging.reset_warnings()
    yield
    disable_logging()
    _logging.reset_warnings()


def quiet_config(**resilience: Any) -> Config:
    base = current_config()
    return replace(
        base,
        log_level="INFO",
        resilience=replace(base.resilience, health_check_enabled=False, **resilience),
        extra={**base.extra, "services": {"defaults": {"rate_limit": "", "timeout": 1.0}}},
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class HostSink:
    """A host application's loguru handler, recording what reaches it."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.records: list[dict[str, Any]] = []
        self.id = host_logger.add(self, level="DEBUG", format="{message}")

    def __call__(self, message: Any) -> None:
        self.lines.append(str(message).rstrip("\n"))
        self.records.append(message.record)

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def resilient_lines(self) -> list[str]:
        return [str(r["message"]) for r in self.records if r["extra"].get("resilient") is True]

    def close(self) -> None:
        host_logger.remove(self.id)


# -- 14.1: the host's loguru handlers ---------------------------------------------------------


@pytest.mark.parametrize("policy", [True, "stderr", "loguru"])
async def test_host_handlers_keep_their_lines_exactly_once(
    policy: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """Handlers added before and after the factory see each host line once; resilient's
    lines reach them once with logging="loguru" and never with its own sink."""
    handlers_before = set(host_logger._core.handlers)  # type: ignore[attr-defined]
    before = HostSink()
    factory = ResilienceFactory(quiet_config(), database=False, logging=policy)
    await factory.initialize_resilience()
    after = HostSink()
    try:
        assert handlers_before <= set(host_logger._core.handlers)  # type: ignore[attr-defined]
        host_logger.warning("bot line one")
        name = unique("host-flaky")

        @breaker(name, failure_threshold=1, reset_timeout=60)
        async def flaky() -> None:
            raise ConnectionResetError("peer reset")

        with pytest.raises(ConnectionResetError):
            await flaky()  # opens the circuit: resilient logs the transition
        host_logger.warning("bot line two")
        for sink in (before, after):
            assert sink.count("bot line one") == 1 and sink.count("bot line two") == 1
        err = capfd.readouterr().err
        transition = f"circuit {name} closed -> open"
        if policy == "loguru":
            for sink in (before, after):
                assert sink.count(transition) == 1
                ours = [r for r in sink.records if name in r["message"]]
                assert ours and all(r["extra"].get("resilient") is True for r in ours)
            # no sink of resilient's own: on stderr only through loguru's default handler
            default = 1 if 0 in host_logger._core.handlers else 0  # type: ignore[attr-defined]
            assert err.count(transition) == default
        else:
            for sink in (before, after):
                assert sink.resilient_lines() == []
            assert err.count(transition) == 1  # resilient's own stderr sink, once
    finally:
        before.close()
        after.close()
        await factory.shutdown()


def test_factory_logging_argument_is_checked() -> None:
    """An unknown logging= value fails at construction, naming the valid ones."""
    with pytest.raises(ValueError, match="'loguru'"):
        ResilienceFactory(quiet_config(), database=False, logging="json")  # type: ignore[arg-type]


def test_enable_logging_keeps_loguru_default_handler() -> None:
    """enable_logging() never removes loguru's default handler (or any other)."""
    handlers_before = set(host_logger._core.handlers)  # type: ignore[attr-defined]
    resilient.enable_logging("INFO", sink=lambda _m: None)
    assert set(host_logger._core.handlers) == handlers_before  # type: ignore[attr-defined]


# -- 14.2: no log flood, no self-inflicted error-rate alarm -----------------------------------


@hsettings(max_examples=25, deadline=None)
@given(
    successes=st.integers(min_value=0, max_value=8),
    threshold=st.integers(min_value=1, max_value=4),
    refused=st.integers(min_value=1, max_value=40),
)
def test_fallback_for_an_open_circuit_is_one_warning_and_no_error_rate(
    successes: int, threshold: int, refused: int
) -> None:
    """However many calls an open circuit refuses while a fallback is served: one WARNING for
    the episode, no ERROR line, the refusals counted in their own series, and the error rate
    (the high-error-rate alert's input) is failures over calls that reached the service."""
    from resilient.errors import tracker
    from resilient.health import HealthOrchestrator
    from resilient.testing import reset_state

    reset_state()
    lines: list[str] = []
    resilient.enable_logging("DEBUG", json_lines=False, sink=lines.append)
    name = unique("feed")
    mode = {"fail": False}

    @fallback(value=-1.0, name=name)
    @breaker(name, failure_threshold=threshold, reset_timeout=600)
    async def price() -> float:
        if mode["fail"]:
            raise ConnectionResetError("peer reset")
        return 1.0

    async def scenario() -> dict[str, Any]:
        for _ in range(successes):
            assert await price() == 1.0
        mode["fail"] = True
        for _ in range(threshold + refused):  # `threshold` failures open it, the rest refused
            assert await price() == -1.0
        return await HealthOrchestrator().get_system_health()

    try:
        with resilient.use_clock(resilient.FakeClock()):
            health = asyncio.run(scenario())
            rate = tracker.error_rate()  # on the clock the errors were recorded on
    finally:
        disable_logging()
    errors = health["error_handling"]
    expected_rate = threshold / (successes + threshold)
    assert errors["error_rate"] == pytest.approx(expected_rate)
    assert rate == pytest.approx(expected_rate)
    assert errors["by_category"] == {"network": threshold}
    assert errors["circuit_open_rejections"] == {"total": refused, "by_component": {name: refused}}
    assert health["circuit_breakers"][name]["rejected_calls"] == refused
    assert resilient.fallback_status()[name].served == threshold + refused
    assert not [line for line in lines if "| ERROR" in line]
    degraded = [line for line in lines if "degraded: serving" in line]
    assert len(degraded) == 1 and "| WARNING" in degraded[0]
    assert not [line for line in lines if "circuit_open" in line]


# -- 14.3: a sync policy blocking the application's event loop --------------------------------


def _blocking_warnings(sink: HostSink, name: str) -> list[str]:
    return [line for line in sink.lines if name in line and "event loop" in line]


async def test_sync_retry_on_the_event_loop_thread_warns_once_naming_the_async_form() -> None:
    """A plain function whose retry would sleep on the loop's thread: one warning per
    function (even with resilient's logging off), naming `async def` and asyncio.to_thread."""
    sink = HostSink()
    calls = {"n": 0}

    @retry(max_attempts=3, initial_delay=0.001, max_delay=0.002, jitter=False)
    def fetch_quote() -> float:
        calls["n"] += 1
        if calls["n"] % 3:
            raise ConnectionResetError("peer reset")
        return 1.0

    @retry(max_attempts=2, initial_delay=0.001, jitter=False)
    def other_call() -> None:
        raise ConnectionResetError("peer reset")

    try:
        assert fetch_quote() == 1.0
        assert fetch_quote() == 1.0  # a second blocking call: no second warning
        with pytest.raises(ConnectionResetError):
            other_call()
        warned = _blocking_warnings(sink, "fetch_quote")
        assert len(warned) == 1
        assert "async def" in warned[0] and "asyncio.to_thread(fetch_quote" in warned[0]
        assert len(_blocking_warnings(sink, "other_call")) == 1  # once per function
    finally:
        sink.close()


async def test_sync_timeout_on_the_event_loop_thread_warns_once() -> None:
    """A plain function under timeout() called from a coroutine warns once."""
    sink = HostSink()

    @resilient.timeout(1.0)
    def read_positions() -> int:
        return 3

    try:
        assert read_positions() == 3
        assert read_positions() == 3
        assert len(_blocking_warnings(sink, "read_positions")) == 1
    finally:
        sink.close()


def test_sync_policies_off_the_loop_thread_do_not_warn() -> None:
    """Outside an event loop (or in a worker thread) blocking is fine: no warning."""
    sink = HostSink()
    calls = {"n": 0}

    @retry(max_attempts=2, initial_delay=0.001, jitter=False)
    def flaky() -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionResetError("peer reset")
        return 1

    @resilient.timeout(1.0)
    def quick() -> int:
        return 2

    async def from_a_thread() -> tuple[int, int]:
        return await asyncio.to_thread(flaky), await asyncio.to_thread(quick)

    try:
        assert asyncio.run(from_a_thread()) == (1, 2)
        assert quick() == 2
        assert [line for line in sink.lines if "event loop" in line] == []
    finally:
        sink.close()


# -- 14.5: one database ------------------------------------------------------------------------


def db_config(tmp_path: Any, backend: str, file: str = "app.db") -> Config:
    base = quiet_config()
    if backend == "sqlite":
        database = replace(base.database, host="", sqlite_path=str(tmp_path / file))
    else:
        database = replace(
            base.database, host="127.0.0.1", port=5432, name="test", user="postgres", password=""
        )
    return replace(base, database=database)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        request.getfixturevalue("pg_url")  # skips (or fails in CI) without the server
    return str(request.param)


async def test_database_next_to_the_factory_shares_its_pool_and_component(
    tmp_path: Any, backend: str
) -> None:
    """The README's Database.from_config() next to a factory is factory.database: one pool,
    one component, and closing it does not take the database out of health."""
    from resilient.db import Database
    from resilient.health import registry

    config = db_config(tmp_path, backend)
    factory = ResilienceFactory(config, logging=False)
    await factory.initialize_resilience()
    try:
        db = Database.from_config(config)
        await db.start()
        assert db is factory.database
        assert [n for n in registry.names() if n.startswith("database")] == ["database"]
        assert await db.scalar("SELECT 1") == 1
        await db.close()  # the application is done with it; the factory is not
        assert "database" in registry.names()
        report = await registry.check_all()
        assert report.components["database"].status.value == "healthy"
        assert await factory.database.scalar("SELECT 1") == 1
    finally:
        await factory.shutdown()
    assert "database" not in registry.names()


async def test_database_started_before_the_factory_is_shared_too(tmp_path: Any) -> None:
    """Started first by the application, the database is the one the factory uses; each
    side's close leaves it to the other until the last one."""
    from resilient.db import Database
    from resilient.health import registry

    config = db_config(tmp_path, "sqlite")
    db = await Database.from_config(config).start()
    factory = ResilienceFactory(config, logging=False)
    await factory.initialize_resilience()
    assert factory.database is db
    await factory.shutdown()
    assert "database" in registry.names() and await db.scalar("SELECT 1") == 1
    await db.close()
    assert "database" not in registry.names()


async def test_database_of_another_url_registers_under_its_own_name(tmp_path: Any) -> None:
    """A second database of another URL is `database-2`; closing it keeps `database`."""
    from resilient.db import Database
    from resilient.health import registry

    factory = ResilienceFactory(db_config(tmp_path, "sqlite"), logging=False)
    await factory.initialize_resilience()
    try:
        other = Database.from_config(db_config(tmp_path, "sqlite", file="other.db"))
        await other.start()
        assert other is not factory.database and other.component == "database-2"
        assert {"database", "database-2"} <= set(registry.names())
        await other.close()
        assert "database" in registry.names() and "database-2" not in registry.names()
    finally:
        await factory.shutdown()


def test_factory_database_before_initialisation_says_what_to_call() -> None:
    """factory.database before initialize_resilience() names the call to make."""
    factory = ResilienceFactory(quiet_config(), logging=False)
    with pytest.raises(RuntimeError, match=r"await factory\.initialize_resilience\(\)"):
        _ = factory.database
    with pytest.raises(RuntimeError, match="database=False"):
        _ = ResilienceFactory(quiet_config(), logging=False, database=False).database


# -- 14.6: a factory that was never initialised -----------------------------------------------


class Feed:
    async def get_current_price(self, symbol: str) -> float:
        return 10.0

    def get_bars(self, symbol: str) -> list[float]:
        return [1.0]


async def test_first_call_on_an_uninitialised_factory_warns_once() -> None:
    """The first proxied call of a never-initialised factory writes one warning naming
    `await factory.initialize_resilience()`; later calls (any proxy) write nothing more."""
    sink = HostSink()
    factory = ResilienceFactory(quiet_config(), logging=False, database=False)
    data = factory.create_resilient_market_data(Feed(), unique("feed"))
    broker = factory.create_resilient_market_data(Feed(), unique("feed2"))
    try:
        assert await data.get_current_price("AAPL") == 10.0
        assert await data.get_current_price("AAPL") == 10.0
        assert data.get_bars("AAPL") == [1.0]
        assert await broker.get_current_price("AAPL") == 10.0
        warned = [line for line in sink.lines if "initialize_resilience()" in line]
        assert len(warned) == 1
        assert "get_current_price" in warned[0] and "never initialised" in warned[0]
        # the one-shot wrappers are gone: the proxies' own methods are back
        assert inspect.iscoroutinefunction(data.get_current_price)
        assert data.__dict__["get_bars"] is data._methods["get_bars"]
    finally:
        sink.close()
        await factory.shutdown()


async def test_initialised_factory_does_not_warn() -> None:
    """Proxies made before or after initialize_resilience() never warn once it ran."""
    sink = HostSink()
    factory = ResilienceFactory(quiet_config(), logging=False, database=False)
    early = factory.create_resilient_market_data(Feed(), unique("feed"))
    await factory.initialize_resilience()
    late = factory.create_resilient_market_data(Feed(), unique("feed"))
    try:
        assert await early.get_current_price("AAPL") == 10.0
        assert await late.get_current_price("AAPL") == 10.0
        assert [line for line in sink.lines if "initialize_resilience()" in line] == []
    finally:
        sink.close()
        await factory.shutdown()
