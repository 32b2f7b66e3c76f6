"""ResilienceFactory misuse and its messages: a wrong ``logging`` value, a missing client,
unknown services, the database before start or without one, a proxy called before
``initialize_resilience()``, and an invalid ``services`` section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from resilient import disable_logging, enable_logging
from resilient.config import ConfigError, ConfigManager, current_config
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory


class _Feed:
    async def get_current_price(self, symbol: str) -> float:
        return 101.0

    def get_bars(self, symbol: str) -> list[float]:
        return [1.0, 2.0]


def _factory(*, logging: Any = False, database: bool = True) -> ResilienceFactory:
    return ResilienceFactory(
        current_config(), registry=HealthRegistry(), logging=logging, database=database
    )


def test_logging_must_be_a_known_mode() -> None:
    with pytest.raises(ValueError, match="logging must be True/'stderr', 'loguru' or False"):
        _factory(logging="syslog")


def test_a_client_is_required() -> None:
    factory = _factory(logging=False)
    with pytest.raises(TypeError, match="create_resilient_market_data"):
        factory.create_resilient_market_data(None, "feed")
    assert factory.services == {}


def test_unknown_service_lists_the_known_ones() -> None:
    factory = _factory(logging=False)
    with pytest.raises(KeyError, match=r"no resilient service 'nope' \(known: none\)"):
        factory.service("nope")
    factory.create_resilient_market_data(_Feed(), "quotes")
    with pytest.raises(KeyError, match=r"\(known: quotes\)"):
        factory.service("nope")
    assert factory.service("quotes") is factory.services["quotes"]


async def test_database_before_start_and_without_one() -> None:
    with pytest.raises(RuntimeError, match="call it first"):
        _ = _factory(logging=False).database
    without = _factory(logging=False, database=False)
    with pytest.raises(RuntimeError, match="built with database=False"):
        _ = without.database


async def test_calling_a_proxy_before_initialisation_warns_once_and_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    factory = _factory(logging=False, database=False)
    feed = factory.create_resilient_market_data(_Feed(), "early-feed")
    lines: list[str] = []
    enable_logging("WARNING", json_lines=True, sink=lines.append)
    try:
        assert await feed.get_current_price("AAPL") == 101.0
        assert feed.get_bars("AAPL") == [1.0, 2.0]
        assert await feed.get_current_price("MSFT") == 101.0
    finally:
        disable_logging()
    notices = [json.loads(line)["message"] for line in lines if "never initialised" in line]
    assert len(notices) == 1
    assert notices[0].startswith("early-feed.get_current_price() called on a ResilienceFactory")
    async with factory:
        assert await feed.get_current_price("AAPL") == 101.0


def test_a_services_entry_that_is_not_a_table(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text("[default.services]\nbroker = 3\n", encoding="utf-8")
    config = ConfigManager("development", cwd=tmp_path).load_config()
    with pytest.raises(ConfigError) as info:
        ResilienceFactory(config, logging=False, registry=HealthRegistry())
    assert [(p.key, p.rule) for p in info.value.problems] == [
        ("services.broker", "must be a table of settings")
    ]


async def test_initialising_twice_is_harmless(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    registry = HealthRegistry()
    factory = ResilienceFactory(current_config(), registry=registry, logging=False)
    first = await factory.initialize_resilience()
    names = sorted(registry.names())
    second = await factory.initialize_resilience()
    assert sorted(registry.names()) == names
    assert first["overall_status"] == second["overall_status"] == "healthy"
    assert factory.database is factory.database
    await factory.shutdown()
    await factory.shutdown()  # idempotent
    assert registry.names() == []
