"""Stream settings, market calendars, and the optional websockets dependency."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _stream_support import wall_at

from resilient import ConfigError
from resilient.config import Config, current_config
from resilient.streams import MarketCalendar, StreamSupervisor, stream_settings

REPO = Path(__file__).resolve().parents[2]


def with_streams(section: dict[str, Any]) -> Config:
    base = current_config()
    return replace(base, extra={**base.extra, "streams": section})


def test_defaults_then_stream_then_arguments() -> None:
    """Built-in defaults < streams.defaults < streams.<name> < keyword arguments."""
    config = with_streams(
        {"defaults": {"idle_timeout": 20, "max_delay": 30}, "quotes": {"idle_timeout": 5}}
    )
    s = stream_settings(config, "quotes")
    assert (s.idle_timeout, s.max_delay, s.initial_delay) == (5.0, 30.0, 1.0)
    assert stream_settings(config, "trades").idle_timeout == 20.0
    assert stream_settings(config, "quotes", idle_timeout=2, jitter=0).idle_timeout == 2.0


def test_shipped_defaults_and_calendar() -> None:
    """The package's settings define every stream key and a us_equity calendar."""
    s = stream_settings(current_config(), "anything", calendar="us_equity")
    assert s.calendar is not None and s.calendar.timezone == "America/New_York"
    assert not s.calendar.is_open(wall_at(2026, 12, 25, 11))  # Christmas
    assert s.calendar.is_open(wall_at(2026, 12, 24, 11))
    assert stream_settings(current_config(), "anything").calendar is None  # always open


@pytest.mark.parametrize(
    ("section", "key", "rule"),
    [
        (
            {"defaults": {"idle_timout": 5}},
            "streams.defaults.idle_timout",
            "did you mean idle_timeout",
        ),
        ({"quotes": {"max_delay": -1}}, "streams.quotes.max_delay", "must be > 0"),
        ({"quotes": {"jitter": 2}}, "streams.quotes.jitter", "between 0 and 1"),
        ({"quotes": {"failure_threshold": 1.5}}, "streams.quotes.failure_threshold", "integer"),
        ({"quotes": {"critical": "yes"}}, "streams.quotes.critical", "boolean"),
        ({"quotes": {"calendar": "lse"}}, "streams.calendars.lse", "is not defined"),
        ({"quotes": {"initial_delay": 5, "max_delay": 1}}, "streams.quotes.max_delay", "≥ initial"),
        (
            {"quotes": {"calendar": "x"}, "calendars": {"x": {"timezone": "Mars/Base"}}},
            "streams.calendars.x",
            "unknown timezone",
        ),
        (
            {"quotes": {"calendar": "x"}, "calendars": {"x": {"sessions": {"mon": "9-16"}}}},
            "streams.calendars.x",
            "09:30-16:00",
        ),
        (
            {"quotes": {"calendar": "x"}, "calendars": {"x": {"holidays": ["Xmas"]}}},
            "streams.calendars.x",
            "not a date",
        ),
    ],
)
def test_invalid_settings_name_the_key_and_the_fix(
    section: dict[str, Any], key: str, rule: str
) -> None:
    """A wrong ``streams`` value is a ConfigError naming the key, the rule and a fix."""
    with pytest.raises(ConfigError) as info:
        StreamSupervisor("quotes", lambda: None, on_message=print, config=with_streams(section))
    problems = {p.key: f"{p.rule} {p.fix}" for p in info.value.problems}
    assert key in problems, problems
    assert rule in problems[key]


def test_invalid_arguments_raise_at_once() -> None:
    """Bad keyword options are ValueError / TypeError naming the option."""
    with pytest.raises(ValueError, match="idle_timeout"):
        StreamSupervisor("q", lambda: None, on_message=print, idle_timeout=-1)
    with pytest.raises(TypeError, match="idle_timeot"):
        StreamSupervisor("q", lambda: None, on_message=print, idle_timeot=1)
    with pytest.raises(ValueError, match="non-empty name"):
        StreamSupervisor(" ", lambda: None, on_message=print)
    with pytest.raises(TypeError, match="callable"):
        StreamSupervisor("q", "wss://x", on_message=print)


def test_calendar_sessions_holidays_and_daylight_saving() -> None:
    """Sessions are local time across daylight-saving changes; holidays close the day;
    ``next_open`` skips weekends and holidays; two sessions a day are allowed."""
    cal = MarketCalendar.build(
        timezone="America/New_York",
        sessions={"mon": ["04:00-09:30", "09:30-20:00"], "tue": "09:30-16:00"},
        holidays=["2026-07-06"],
    )
    assert cal.is_open(wall_at(2026, 3, 9, 10))  # the Monday after the March change
    assert cal.session_start(wall_at(2026, 3, 9, 10)) == wall_at(2026, 3, 9, 9, 30)
    assert cal.is_open(wall_at(2026, 3, 9, 5))
    assert not cal.is_open(wall_at(2026, 3, 10, 17))
    assert not cal.is_open(wall_at(2026, 7, 6, 10))  # holiday Monday
    assert cal.next_open(wall_at(2026, 7, 3, 12)) == wall_at(2026, 7, 7, 9, 30)
    never = MarketCalendar.build(timezone="UTC", sessions={})
    assert never.next_open(0.0) is None and not never.is_open(0.0)
    with pytest.raises(ValueError, match="overlap"):
        MarketCalendar.build(timezone="UTC", sessions={"mon": ["09:00-12:00", "11:00-13:00"]})
    with pytest.raises(ValueError, match="weekday"):
        MarketCalendar.build(timezone="UTC", sessions={"monday-ish": "09:00-12:00"})
    monday = MarketCalendar.build(timezone="UTC", sessions={"Monday": "09:00-12:00"})
    assert monday.is_open(wall_at(2026, 12, 7, 5))  # 10:00 UTC on a Monday
    assert not monday.is_open(wall_at(2026, 12, 7, 8))  # 13:00 UTC


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_resilient_does_not_import_websockets() -> None:
    """``import resilient`` (and ``resilient.streams``) leave websockets unimported."""
    proc = _run(
        """
        import sys, resilient, resilient.streams, resilient.integration
        assert "websockets" not in sys.modules, "websockets imported"
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_streams_work_without_websockets_installed() -> None:
    """With websockets unavailable, an async iterator source is supervised as usual and
    ``websocket()`` says which extra to install."""
    proc = _run(
        """
        import asyncio, sys
        sys.modules["websockets"] = None  # as if not installed
        from resilient.health import HealthRegistry
        from resilient.streams import StreamSupervisor, websocket

        async def main():
            got = []
            async def source():
                for i in range(3):
                    yield i
            sup = StreamSupervisor("s", source, on_message=got.append,
                                   registry=HealthRegistry(), initial_delay=0.01)
            async with sup:
                while len(got) < 6:
                    await asyncio.sleep(0.01)
            try:
                websocket("ws://127.0.0.1:1")()
            except ImportError as exc:
                assert "resilient[streams]" in str(exc)
                print("ok", got[:6])

        asyncio.run(main())
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok [0, 1, 2, 0, 1, 2]"
