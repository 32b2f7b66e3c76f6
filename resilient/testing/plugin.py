"""The pytest plugin (entry point ``pytest11``): fixtures for tests of resilient code."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .._clock import FakeClock, use_clock


@pytest.fixture
def fake_clock() -> Iterator[FakeClock]:
    """A :class:`FakeClock` installed for the test; breakers, retries and timeouts honour it."""
    clock = FakeClock()
    with use_clock(clock):
        yield clock
