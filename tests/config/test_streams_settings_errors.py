"""``stream_settings`` errors not covered by the table of ``test_streams_settings.py``: wrong
shapes of the section and of calendars, and keyword overrides."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from resilient.config import Config, ConfigError, current_config
from resilient.streams import MarketCalendar, stream_settings


def _config(section: dict[str, Any]) -> Config:
    base = current_config()
    return replace(base, extra={**base.extra, "streams": section})


@pytest.mark.parametrize(
    ("section", "key", "rule"),
    [
        ({"quotes": 3}, "streams.quotes", "must be a table of settings"),
        ({"defaults": ["x"]}, "streams.defaults", "must be a table of settings"),
        ({"quotes": {"calendar": 5}}, "streams.quotes.calendar", "must be a string"),
        ({"quotes": {"multiplier": 0.5}}, "streams.quotes.multiplier", "must be ≥ 1"),
        ({"quotes": {"idle_timeout": -2}}, "streams.quotes.idle_timeout", "must be ≥ 0"),
        ({"quotes": {"max_delay": float("inf")}}, "streams.quotes.max_delay", "must be a number"),
        (
            {"quotes": {"calendar": "x"}, "calendars": ["x"]},
            "streams.calendars.x",
            "is not defined",
        ),
        (
            {"quotes": {"calendar": "x"}, "calendars": {"x": {"sessions": "always"}}},
            "streams.calendars.x.sessions",
            "must be a table",
        ),
        (
            {"quotes": {"calendar": "x"}, "calendars": {"x": {"holidays": "2026-12-25"}}},
            "streams.calendars.x.holidays",
            "must be a list of dates",
        ),
        (
            {"quotes": {"calendar": "x"}, "calendars": {"x": {"tz": "UTC"}}},
            "streams.calendars.x.tz",
            "is not a calendar setting",
        ),
    ],
)
def test_wrong_shapes_are_named(section: dict[str, Any], key: str, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        stream_settings(_config(section), "quotes")
    problems = {p.key: p.rule for p in info.value.problems}
    assert key in problems, problems
    assert problems[key].startswith(rule)


def test_a_defined_calendar_is_listed_when_another_is_missing() -> None:
    section = {
        "quotes": {"calendar": "lse"},
        "calendars": {"nyse": {"timezone": "America/New_York"}},
    }
    with pytest.raises(ConfigError) as info:
        stream_settings(_config(section), "quotes")
    (problem,) = info.value.problems
    assert problem.key == "streams.calendars.lse"
    assert "(defined: nyse)" in problem.fix


def test_durations_may_be_timedeltas() -> None:
    settings = stream_settings(
        _config({"quotes": {"idle_timeout": dt.timedelta(seconds=45)}}), "quotes"
    )
    assert settings.idle_timeout == 45.0


def test_overrides_are_checked() -> None:
    config = _config({})
    with pytest.raises(TypeError, match="unknown stream option 'idle'"):
        stream_settings(config, "quotes", idle=3)
    with pytest.raises(ValueError, match="stream 'quotes': idle_timeout must be ≥ 0"):
        stream_settings(config, "quotes", idle_timeout=-1)
    with pytest.raises(ValueError, match="stream 'quotes': critical must be a boolean"):
        stream_settings(config, "quotes", critical="yes")
    settings = stream_settings(config, "quotes", failure_threshold=None, critical=True)
    assert settings.critical is True
    assert settings.failure_threshold == 5  # None leaves the setting as it was


@pytest.mark.parametrize("override", [{"jitter": 1.5}, {"multiplier": 0.5}, {"initial_delay": 0}])
def test_overrides_follow_the_rules_of_the_settings(override: dict[str, float]) -> None:
    """Keyword overrides get the per-name rules (positive delays, jitter ≤ 1, multiplier ≥ 1)
    that the same values from the settings get."""
    (key,) = override
    with pytest.raises(ValueError, match=key):
        stream_settings(_config({}), "quotes", **override)


def test_a_calendar_instance_override_is_used_as_is() -> None:
    calendar = MarketCalendar.build(
        timezone="UTC", sessions={"mon": "09:30-16:00"}, holidays=[], name="mine"
    )
    settings = stream_settings(_config({}), "quotes", calendar=calendar)
    assert settings.calendar is calendar
    assert stream_settings(_config({}), "quotes").calendar is None
