"""The ``streams`` settings section: reconnect, liveness and market hours per stream.

```toml
[default.streams.defaults]           # every stream
idle_timeout = 30.0
[default.streams.quotes]             # one stream (overrides the defaults)
calendar = "us_equity"
[default.streams.calendars.us_equity]
timezone = "America/New_York"
sessions = { mon = "09:30-16:00", tue = "09:30-16:00" }
holidays = ["2026-12-25"]
```
Arguments of :class:`~resilient.streams.StreamSupervisor` override both.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from resilient._core.exceptions import ConfigError, ConfigProblem
from resilient.config import Config
from resilient.streams._calendar import MarketCalendar

__all__ = ["CALENDARS_KEY", "DEFAULTS_KEY", "StreamSettings", "stream_settings"]

DEFAULTS_KEY = "defaults"
CALENDARS_KEY = "calendars"


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """The resolved settings of one stream (durations in seconds)."""

    initial_delay: float = 1.0  # first reconnect wait
    max_delay: float = 60.0  # longest reconnect wait
    multiplier: float = 2.0  # growth of the wait per failed attempt
    jitter: float = 0.2  # each wait is drawn from [wait × (1 − jitter), wait]
    connect_timeout: float = 10.0  # connect and subscribe
    idle_timeout: float = 30.0  # no message for this long while open: reconnect (0: off)
    heartbeat_interval: float = 0.0  # ping this often (0: off)
    heartbeat_timeout: float = 10.0  # no pong within this: reconnect
    alert_after: float = 60.0  # silent this long while open: the component turns unhealthy
    failure_threshold: int = 5  # failed connections before the stream's breaker opens
    reset_timeout: float = 60.0  # seconds the breaker stays open before a trial connection
    critical: bool = False  # an unhealthy stream makes the whole system unhealthy
    calendar: MarketCalendar | None = None  # None: always open


_KEYS: dict[str, type] = {
    f.name: {"float": float, "int": int, "bool": bool}.get(str(f.type), str)
    for f in fields(StreamSettings)
}
_POSITIVE = {"initial_delay", "max_delay", "multiplier", "connect_timeout", "heartbeat_timeout"}
_POSITIVE |= {"alert_after", "failure_threshold", "reset_timeout"}
_CALENDAR_KEYS = {"timezone", "sessions", "holidays"}


def _check(key: str, typ: type, raw: Any, setting: str = "") -> tuple[Any, str | None, str]:
    """``(value, None, "")`` or ``(None, rule, fix)``; ``setting`` is the option's name
    (default: the last part of ``key``), which picks its rules."""
    name = setting or key.rsplit(".", 1)[-1]
    if typ is bool:
        if isinstance(raw, bool):
            return raw, None, ""
        return None, "must be a boolean (true/false)", "write true or false"
    if typ is str:
        if isinstance(raw, str):
            return raw, None, ""
        return None, "must be a string", "quote the value"
    if isinstance(raw, dt.timedelta):
        raw = raw.total_seconds()
    ok = isinstance(raw, int | float) and not isinstance(raw, bool)
    if ok and typ is int and isinstance(raw, float):
        ok = raw.is_integer()
    if not ok or not math.isfinite(float(raw)):
        kind = "an integer" if typ is int else "a number of seconds"
        return None, f"must be {kind} (got {type(raw).__name__})", f"write {key} as a number"
    value = typ(raw)
    if name in _POSITIVE and value <= 0:
        return None, "must be > 0", "choose a positive value"
    if value < 0:
        return None, "must be ≥ 0", "choose a value ≥ 0 (0 turns it off)"
    if name == "jitter" and value > 1:
        return None, "must be between 0 and 1", "write a share, e.g. 0.2 for ±20 %"
    if name == "multiplier" and value < 1:
        return None, "must be ≥ 1", "waits must not shrink: use 2.0 to double them"
    return value, None, ""


def stream_settings(config: Config, name: str, **overrides: Any) -> StreamSettings:
    """Resolve the settings of stream ``name``: built-in defaults, ``streams.defaults``,
    ``streams.<name>``, then ``overrides`` (keyword arguments, ``None`` meaning unset).

    Raises:
        ConfigError: a ``streams`` value is of the wrong type, out of range or unknown, or
            names a calendar that is not defined.
    """
    section = {str(k).lower(): v for k, v in config.section("streams").items()}
    problems: list[ConfigProblem] = []

    def problem(key: str, rule: str, fix: str) -> None:
        problems.append(ConfigProblem(key=key, rule=rule, fix=fix, env=config.env))

    values: dict[str, Any] = {}
    layers: list[tuple[str, Any]] = [
        (f"streams.{DEFAULTS_KEY}", section.get(DEFAULTS_KEY, {})),
        (f"streams.{name}", section.get(name.lower(), {})),
    ]
    for where, raw in layers:
        if not isinstance(raw, Mapping):
            problem(where, "must be a table of settings", f"write [{where}] as a table")
            continue
        for key, value in raw.items():
            key = str(key).lower()
            typ = _KEYS.get(key)
            if typ is None:
                close = difflib.get_close_matches(key, sorted(_KEYS), n=1)
                fix = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(_KEYS)}"
                problem(f"{where}.{key}", "is not a known stream setting", fix)
                continue
            checked, rule, fix = _check(f"{where}.{key}", typ, value)
            if rule is not None:
                problem(f"{where}.{key}", rule, fix)
            else:
                values[key] = checked
    for key, value in overrides.items():
        if value is None:
            continue
        typ = _KEYS.get(key)
        if typ is None:
            raise TypeError(f"unknown stream option {key!r}; known: {', '.join(_KEYS)}")
        if key == "calendar" and isinstance(value, MarketCalendar):
            values[key] = value
            continue
        checked, rule, fix = _check(f"stream {name!r}: {key}", typ, value, key)
        if rule is not None:
            raise ValueError(f"stream {name!r}: {key} {rule} ({fix})")
        values[key] = checked
    calendar = values.pop("calendar", "")
    if isinstance(calendar, str) and calendar:
        values["calendar"] = _calendar(section, calendar, problem)
    elif isinstance(calendar, MarketCalendar):
        values["calendar"] = calendar
    settings = replace(StreamSettings(), **values)
    if settings.max_delay < settings.initial_delay:
        problem(
            f"streams.{name}.max_delay",
            "must be ≥ initial_delay",
            "raise max_delay or lower initial_delay",
        )
    if problems:
        raise ConfigError(problems, env=config.env)
    return settings


def _calendar(section: Mapping[str, Any], name: str, problem: Any) -> MarketCalendar | None:
    calendars = section.get(CALENDARS_KEY, {})
    raw = calendars.get(name) if isinstance(calendars, Mapping) else None
    where = f"streams.{CALENDARS_KEY}.{name}"
    if not isinstance(raw, Mapping):
        known = ", ".join(sorted(calendars)) if isinstance(calendars, Mapping) else ""
        problem(
            where,
            "is not defined",
            f"add [{where}] with timezone, sessions and holidays"
            + (f" (defined: {known})" if known else "")
            + ', or set calendar = "" for a market that never closes',
        )
        return None
    raw = {str(k).lower(): v for k, v in raw.items()}
    for unknown in sorted(set(raw) - _CALENDAR_KEYS):
        problem(
            f"{where}.{unknown}", "is not a calendar setting", "use timezone, sessions, holidays"
        )
    sessions = raw.get("sessions", {})
    holidays = raw.get("holidays", [])
    if not isinstance(sessions, Mapping):
        problem(f"{where}.sessions", "must be a table", 'write sessions = { mon = "09:30-16:00" }')
        return None
    if isinstance(holidays, str) or not isinstance(holidays, list | tuple):
        problem(f"{where}.holidays", "must be a list of dates", 'write ["2026-12-25", …]')
        return None
    try:
        return MarketCalendar.build(
            timezone=str(raw.get("timezone", "UTC")),
            sessions=sessions,
            holidays=holidays,
            name=name,
        )
    except ValueError as exc:
        problem(where, str(exc), "see the calendar format in the README's Streams section")
        return None
