"""The property suite: counts every example hypothesis runs and prints the total.

Each test's ``hypothesis.inner_test`` (hypothesis' documented seam for wrapping the test body)
is wrapped for the duration of the test, so the count is the number of times a test body really
ran: generated examples plus the replays of shrinking.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

CI_TARGET = 20_000
SCALE = float(os.environ.get("RESILIENT_PROPERTY_SCALE", "1"))

_counts: Counter[str] = Counter()
_seconds: Counter[str] = Counter()
_shortfall: list[int] = []
_HERE = Path(__file__).parent


def _count_into(key: str, inner: Any) -> Any:
    if inspect.iscoroutinefunction(inner):

        @functools.wraps(inner)
        async def counted_async(*args: Any, **kwargs: Any) -> Any:
            _counts[key] += 1
            return await inner(*args, **kwargs)

        return counted_async

    @functools.wraps(inner)
    def counted(*args: Any, **kwargs: Any) -> Any:
        _counts[key] += 1
        return inner(*args, **kwargs)

    return counted


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    handle = getattr(getattr(item, "obj", None), "hypothesis", None)
    path = Path(str(getattr(item, "path", "")))
    if handle is None or _HERE not in path.parents:
        return (yield)
    original = handle.inner_test
    handle.inner_test = _count_into(item.nodeid, original)
    try:
        return (yield)
    finally:
        handle.inner_test = original


def _whole_suite(config: pytest.Config) -> bool:
    """Whether this run selects every property test (no -k/-m, only directories as arguments)."""
    if config.getoption("keyword") or config.getoption("markexpr"):
        return False
    return all(Path(arg.split("::")[0]).is_dir() for arg in config.args)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from hypothesis import settings

    total = sum(_counts.values())
    if (
        _counts
        and settings.get_current_profile_name() == "ci"
        and SCALE == 1
        and _whole_suite(session.config)
        and total < CI_TARGET
        and exitstatus == 0
    ):
        # A strategy that became too small (hypothesis stops when it runs out of distinct
        # examples) must not silently shrink the CI run below its target.
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        _shortfall.append(total)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid in _counts:
        _seconds[report.nodeid] += report.duration


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _counts:
        return
    from hypothesis import settings

    profile = settings.get_current_profile_name()
    total = sum(_counts.values())
    by_area: Counter[str] = Counter()
    area_seconds: Counter[str] = Counter()
    for nodeid, n in _counts.items():
        module = nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        area = module.removeprefix("test_prop_")
        by_area[area] += n
        area_seconds[area] += _seconds[nodeid]
    tr = terminalreporter
    tr.section("property examples")
    for area, n in sorted(by_area.items()):
        tr.write_line(f"{area:<24} {n:>8,} examples {area_seconds[area]:>7.1f} s")
    if config.getoption("verbose") > 0:
        for nodeid, n in sorted(_counts.items()):
            tr.write_line(f"  {nodeid:<88} {n:>7,} {_seconds[nodeid]:>6.1f} s")
    target = f" (CI target >= {CI_TARGET:,}: {'met' if total >= CI_TARGET else 'NOT met'})"
    tr.write_line(
        f"property examples: {total:,} in {len(_counts)} tests, profile {profile!r}, "
        f"{sum(_seconds.values()):.1f} s{target if profile == 'ci' else ''}"
    )
    if _shortfall:
        tr.write_line(
            f"FAILED: the CI property run executed {_shortfall[0]:,} examples, below its target of "
            f"{CI_TARGET:,}; raise the @examples(ci=...) budgets in tests/property",
            red=True,
        )
