"""``resilient demo``: the scripted session shows every behaviour, fast, with exit 0."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resilient._cli import main
from resilient._demo import _Display


@pytest.mark.slow
def test_demo_json_run(tmp_path: Path) -> None:
    """``resilient demo --json`` exits 0 in under a minute on the embedded defaults, every
    check observed, nothing secret in the output and nothing left on disk."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_TRADER_")}
    env.update(
        AI_TRADER_ENV="development",
        TMPDIR=str(tmp_path),
        AI_TRADER_DATABASE__PASSWORD="demo-secret-value-42",
    )
    work = tmp_path / "work"
    work.mkdir()
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "resilient", "demo", "--json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert elapsed < 60
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    assert all(result["checks"].values()), result["checks"]
    kinds = {e["kind"] for e in result["events"]}
    assert {"phase", "retry", "breaker", "fallback", "ALERT", "order", "refused"} <= kinds
    transitions = [(e["old"], e["new"]) for e in result["events"] if e["kind"] == "breaker"]
    assert ("closed", "open") in transitions and ("half-open", "closed") in transitions
    alerts = {(e["rule"], e["state"]) for e in result["events"] if e["kind"] == "ALERT"}
    assert ("circuit_breaker_open", "firing") in alerts
    assert ("circuit_breaker_open", "resolved") in alerts
    assert result["counts"]["orders_in_database"] == 2
    assert len({o["client_order_id"] for o in result["orders"]}) == len(result["orders"]) == 2
    assert result["health"]["overall_status"] == "healthy"
    assert result["health"]["circuit_breakers"]["main_data"]["state"] == "closed"
    assert "demo-secret-value-42" not in proc.stdout + proc.stderr
    assert list(work.iterdir()) == []
    assert [p for p in tmp_path.iterdir() if p.name != "work"] == []


def test_demo_help(capsys: pytest.CaptureFixture[str]) -> None:
    """``resilient demo --help`` documents the options and exits 0."""
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--json" in out and "--seed" in out and "Exit 0" in out


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_is_drawn_and_cleared() -> None:
    """The progress line is redrawn on stderr around narrative lines and cleared at the end."""
    out, err = io.StringIO(), _Tty()
    display = _Display(out, err, narrate=True, progress=True)
    display.status(0.5, "outage AAPL 190.00 (cached, 1.0s old)")
    display.line("breaker", "main_data: closed -> open")
    display.done()
    assert "[############............]  50% outage" in err.getvalue()
    assert err.getvalue().endswith("\r\033[K")
    assert "breaker   main_data: closed -> open" in out.getvalue()


def test_no_progress_without_narration() -> None:
    """With --json nothing but the final document is written to stdout."""
    out, err = io.StringIO(), io.StringIO()
    display = _Display(out, err, narrate=False, progress=False)
    display.status(0.2, "warm-up")
    display.line("phase", "warm-up")
    assert out.getvalue() == "" and err.getvalue() == ""
