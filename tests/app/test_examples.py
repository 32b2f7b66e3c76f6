"""Every example under examples/ runs to completion (each one checks its own results)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("test_"))
USER_TESTS = sorted(EXAMPLES.glob("test_*.py"))
SLOW = {"demo.py", "trading_loop.py"}  # about 10 s and 2 s


def _env(tmp: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_TRADER_")}
    env["AI_TRADER_ENV"] = "development"
    if tmp is not None:
        env["TMPDIR"] = str(tmp)
    return env


def test_examples_exist() -> None:
    """The use cases the README points to are all there."""
    names = {p.name for p in SCRIPTS}
    assert {
        "guide_quickstart.py",
        "decorators_sync_and_async.py",
        "trading_loop.py",
        "config_per_environment.py",
        "database_usage.py",
        "demo.py",
    } <= names


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in SLOW else [])
        for p in SCRIPTS
    ],
)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    """The example exits 0 from a scratch working directory and leaves no files behind
    (neither there nor in its temporary directory)."""
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=work,
        env=_env(tmp),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip(), f"{script.name} printed nothing"
    assert "Traceback" not in proc.stderr
    assert list(work.iterdir()) == []
    assert list(tmp.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("test_file", USER_TESTS, ids=[p.name for p in USER_TESTS])
def test_example_test_files_pass(test_file: Path, tmp_path: Path) -> None:
    """The example test files (what a user would write) pass under pytest."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
