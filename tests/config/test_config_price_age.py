"""``trading.max_price_age`` in a settings file: a number, or a table of a default and limits
per symbol pattern and per service; every broken part is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from resilient.config import Config, ConfigError, ConfigManager


def _load(tmp_path: Path, toml: str) -> Config:
    (tmp_path / "settings.toml").write_text(toml, encoding="utf-8")
    return ConfigManager("development", cwd=tmp_path, environ={}).load_config()


def test_a_table_of_limits(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "[default.trading.max_price_age]\ndefault = 30.0\n"
        '[default.trading.max_price_age.symbols]\n"BTC/*" = 2.0\n'
        "[default.trading.max_price_age.services]\nslow_feed = 0\n",
    )
    limits = config.trading.max_price_age
    assert limits.limit_for("BTC/USD") == 2.0
    assert limits.limit_for("AAPL") == 30.0
    assert limits.limit_for("AAPL", "slow_feed") is None  # 0: no limit for that service
    assert limits.limit_for("BTC/USD", "slow_feed") == 2.0  # the symbol's limit wins


@pytest.mark.parametrize(
    ("toml", "key", "rule"),
    [
        ("[default.trading]\nmax_price_age = -1\n", "trading.max_price_age", "must be ≥ 0"),
        (
            '[default.trading]\nmax_price_age = "soon"\n',
            "trading.max_price_age",
            "must be a number of seconds or a table (got str)",
        ),
        (
            "[default.trading.max_price_age]\ndefualt = 3\n",
            "trading.max_price_age.defualt",
            "is not a known key",
        ),
        (
            '[default.trading.max_price_age]\ndefault = "x"\n',
            "trading.max_price_age.default",
            "must be a number of seconds",
        ),
        (
            "[default.trading.max_price_age]\nsymbols = 3\n",
            "trading.max_price_age.symbols",
            "must be a table",
        ),
    ],
)
def test_broken_limits_are_named(tmp_path: Path, toml: str, key: str, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, toml)
    problems = {p.key: p.rule for p in info.value.problems}
    assert key in problems, problems
    assert problems[key].startswith(rule)
