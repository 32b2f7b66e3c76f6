"""``resilient demo`` run in this process: the narrative, the closing summary and the exit
code (the JSON form is checked end to end in a subprocess by ``test_demo.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from resilient._cli import main


@pytest.mark.slow
def test_demo_narrative_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The narrated run shows the phases, the final health and the summary, and leaves no
    file behind; no progress line is drawn when stderr is not a terminal. The exit code says
    whether every behaviour was observed (the scripted timing can slip on a loaded machine,
    so a miss must be named on stderr rather than fail silently)."""
    monkeypatch.chdir(tmp_path)
    code = main(["demo"])
    captured = capsys.readouterr()
    out = captured.out
    assert out.startswith("resilient demo: a simulated trading session through a scripted outage")
    for kind in ("phase", "retry", "breaker", "fallback", "ALERT"):
        assert re.search(rf"^\s+\d+\.\d\ds\s+{kind}\s", out, re.MULTILINE), kind
    assert "final system health: healthy" in out
    summary = next(line for line in out.splitlines() if " price reads, " in line)
    reads, retries = re.findall(r"(\d+) price reads, (\d+) retries", summary)[0]
    assert int(reads) > 0 and int(retries) > 0
    if code == 0:
        assert out.rstrip().splitlines()[-1].startswith("every behaviour observed: retries, ")
        assert "not observed" not in captured.err
    else:
        assert code == 1
        assert "every behaviour observed" not in out
        assert re.search(r"^not observed: \w+", captured.err, re.MULTILINE)
    assert "\r" not in captured.err  # stderr is captured, not a terminal
    assert list(tmp_path.iterdir()) == []
