"""Test helpers for users of resilient: fake clock, zero-wait retries, fault schedules, servers."""

from __future__ import annotations

from .._clock import FakeClock, use_clock

__all__ = ["FakeClock", "use_clock"]
