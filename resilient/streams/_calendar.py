"""Market hours: trading sessions per weekday, holidays and a timezone.

A stream that is quiet while its market is closed is not stale: the supervisor counts silence
only over open hours, and its health component stays healthy while the market is closed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["WEEKDAYS", "MarketCalendar"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SESSION = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_DAY = 86_400
_SEARCH_DAYS = 40  # the longest run of closed days a calendar may hold before it is "never open"


def _minutes(hours: str, minutes: str) -> int:
    return int(hours) * 60 + int(minutes)


def _parse_session(text: str, where: str) -> tuple[int, int]:
    m = _SESSION.match(text)
    if m is None:
        raise ValueError(f'{where}: {text!r} is not a session; write it like "09:30-16:00"')
    start, end = _minutes(m[1], m[2]), _minutes(m[3], m[4])
    if not (0 <= start < end <= 24 * 60) or int(m[2]) > 59 or int(m[4]) > 59:
        raise ValueError(
            f"{where}: {text!r} must start before it ends, within one day (00:00-24:00)"
        )
    return start, end


def _parse_holiday(value: Any, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f'{where}: {value!r} is not a date; write it like "2026-12-25"')


@dataclass(frozen=True, slots=True)
class MarketCalendar:
    """When a market is open: sessions per weekday, holidays, a timezone.

    Args:
        timezone: an IANA name (``"America/New_York"``).
        sessions: weekday (``mon`` … ``sun``) → sessions in local time (``"09:30-16:00"`` or a
            list of them); a day not named is closed.
        holidays: dates (``"2026-12-25"``) on which the market is closed all day.
        name: a label for messages.

    Raises:
        ValueError: an unknown timezone or weekday, or a malformed session or date.
    """

    timezone: str
    sessions: tuple[tuple[tuple[int, int], ...], ...]  # per weekday (0 = Monday): minutes
    holidays: frozenset[dt.date]
    name: str = ""

    @classmethod
    def build(
        cls,
        *,
        timezone: str,
        sessions: Mapping[str, str | Sequence[str]],
        holidays: Iterable[Any] = (),
        name: str = "",
    ) -> MarketCalendar:
        """Build a calendar from settings-style values (see the class)."""
        where = f"calendar {name!r}" if name else "calendar"
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(
                f'{where}: unknown timezone {timezone!r}; use an IANA name like "America/New_York"'
            ) from None
        days: list[tuple[tuple[int, int], ...]] = [()] * 7
        for key, value in sessions.items():
            word = str(key).strip().lower()
            day = word[:3]
            if day not in WEEKDAYS or word not in (day, _FULL_NAMES[WEEKDAYS.index(day)]):
                raise ValueError(f"{where}: {key!r} is not a weekday; use mon, tue, … sun")
            texts = [value] if isinstance(value, str) else list(value)
            parsed = sorted(_parse_session(str(t), f"{where} {day}") for t in texts if str(t))
            for (_, end), (start, _) in itertools.pairwise(parsed):
                if start < end:
                    raise ValueError(f"{where} {day}: sessions overlap")
            days[WEEKDAYS.index(day)] = tuple(parsed)
        dates = frozenset(_parse_holiday(h, f"{where} holidays") for h in holidays)
        return cls(timezone, tuple(days), dates, name)

    def _local(self, wall: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(wall, ZoneInfo(self.timezone))

    def _sessions_on(self, day: dt.date) -> tuple[tuple[int, int], ...]:
        if day in self.holidays:
            return ()
        return self.sessions[day.weekday()]

    def _at(self, day: dt.date, minutes: int) -> float:
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(self.timezone))
        return (midnight + dt.timedelta(minutes=minutes)).timestamp()

    def session_start(self, wall: float) -> float | None:
        """The wall-clock time the current session opened, or ``None`` when closed."""
        local = self._local(wall)
        now = local.hour * 60 + local.minute + local.second / 60
        for start, end in self._sessions_on(local.date()):
            if start <= now < end:
                return self._at(local.date(), start)
        return None

    def is_open(self, wall: float) -> bool:
        """Whether the market is open at ``wall`` (seconds since the epoch)."""
        return self.session_start(wall) is not None

    def next_open(self, wall: float) -> float | None:
        """The wall-clock time of the next session start after ``wall`` (``None``: none within
        the next 40 days)."""
        local = self._local(wall)
        for offset in range(_SEARCH_DAYS):
            day = local.date() + dt.timedelta(days=offset)
            for start, _ in self._sessions_on(day):
                at = self._at(day, start)
                if at > wall:
                    return at
        return None
