"""``redis.url`` validated at load: each malformed form is named with its fix; the valid
forms load."""

from __future__ import annotations

from pathlib import Path

import pytest

from resilient.config import ConfigError, ConfigManager


def _load(tmp_path: Path, url: str) -> str:
    config = ConfigManager(
        "development", cwd=tmp_path, environ={"AI_TRADER_REDIS__URL": url}
    ).load_config()
    return str(config.redis.url)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("localhost:6379", "is not a URL"),
        ("unix://", "has no socket path"),
        ("redis+cluster://h1:7000,,h2:7001", "has an empty host in its host list"),
        ("redis+cluster://[::1:7000", "is malformed"),
        ("redis+cluster://:7000", "has no name"),
        ("redis+sentinel://s1:26379/mymaster/0?ssl=true", "has query options"),
    ],
)
def test_malformed_urls_are_named(tmp_path: Path, url: str, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, url)
    [problem] = info.value.problems
    assert problem.key == "redis.url"
    assert rule in problem.rule


@pytest.mark.parametrize(
    "url",
    [
        "unix:///var/run/redis.sock",
        "redis+cluster://[::1]:7000,h2:7001",
        "rediss+cluster://user:pw-Aa1@h1:7000",
        "redis+sentinel://:pw-Bb2@s1,s2:26380/mymaster/2",
    ],
)
def test_valid_forms_load(tmp_path: Path, url: str) -> None:
    assert _load(tmp_path, url) == url
