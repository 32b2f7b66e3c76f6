"""What README.md says, checked against the code (its python blocks also run as tests of their
own: see conftest.py at the project root)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import resilient
from resilient import CircuitOpenError, breaker, retry
from resilient.http import create_app
from resilient.integration import ResilienceFactory
from resilient.testing import zero_wait_retries

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def fenced_blocks(lang: str) -> list[tuple[int, str]]:
    """(first line number, text) of every ```lang block of the README."""
    blocks, lines = [], README.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip().split() == [f"```{lang}"] or lines[i].startswith(f"```{lang} "):
            start, i = i + 2, i + 1
            body = []
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append((start, "\n".join(body)))
        i += 1
    return blocks


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


# -- 11: the first example stacks the decorators in the order resilient() composes them --------


def test_first_example_puts_retry_outside_breaker() -> None:
    """The first decorator example has @retry above @breaker, as resilient() composes them."""
    text = section("Breakers, retries, fallbacks and timeouts")
    first = text[text.index("```python") : text.index("```", text.index("```python") + 3)]
    lines = [line.strip() for line in first.splitlines()]
    retry_at = next(i for i, line in enumerate(lines) if line.startswith("@retry"))
    breaker_at = next(i for i, line in enumerate(lines) if line.startswith("@breaker"))
    assert retry_at < breaker_at, "the first example must put @retry outside @breaker"
    assert "retry(breaker(" in text


async def test_the_documented_order_is_the_one_that_opens_the_circuit_soonest() -> None:
    """What the README says about the order: retry outside counts every attempt (one call of
    three attempts opens a threshold-3 circuit); breaker outside needs three such calls."""
    attempts = {"inside": 0, "outside": 0}

    @retry(max_attempts=3)
    @breaker("readme-order-inside", failure_threshold=3, reset_timeout=60)
    async def retry_outside() -> None:
        attempts["inside"] += 1
        raise ConnectionResetError("down")

    @breaker("readme-order-outside", failure_threshold=3, reset_timeout=60)
    @retry(max_attempts=3)
    async def breaker_outside() -> None:
        attempts["outside"] += 1
        raise ConnectionResetError("down")

    with zero_wait_retries():
        with pytest.raises(ConnectionResetError):
            await retry_outside()
        assert resilient.get_breaker("readme-order-inside").state == "open"
        with pytest.raises(CircuitOpenError):
            await retry_outside()
        for _ in range(3):
            with pytest.raises(ConnectionResetError):
                await breaker_outside()
        assert resilient.get_breaker("readme-order-outside").state == "open"
    assert attempts == {"inside": 3, "outside": 9}


# -- 12: the troubleshooting /health command shows what the endpoint returns --------------------


def _jq(jq_filter: str, document: str) -> list[dict[str, object]]:
    out = subprocess.run(
        ["jq", "-c", jq_filter], input=document, capture_output=True, text=True, check=True
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
async def test_troubleshooting_health_command_matches_the_endpoint() -> None:
    """The README's `curl …/health | jq …` filter, run on the real endpoint's document for an
    open circuit, prints the line the README shows (numbers aside)."""
    text = section("Troubleshooting")
    match = re.search(r"curl -s 127\.0\.0\.1:8080/health \| jq -c '([^']+)'\n# (\{.*\})\n", text)
    assert match, "the troubleshooting section shows a /health jq command and its output"
    jq_filter, shown = match.group(1), json.loads(match.group(2))

    class Broker:
        paper = True

        async def get_account_info(self) -> dict[str, float]:
            raise ConnectionResetError("connection reset by peer")

    factory = ResilienceFactory(logging=False, database=False)
    await factory.initialize_resilience()
    broker = factory.create_resilient_broker(Broker(), "main_broker")
    try:
        with zero_wait_retries():
            for _ in range(10):
                with pytest.raises((ConnectionResetError, CircuitOpenError)):
                    await broker.get_account_info()
        app = create_app(factory.get_orchestrator())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://health") as client:
            response = await client.get("/health")
    finally:
        await factory.shutdown()
    assert response.status_code == 503
    rows = _jq(jq_filter, response.text)

    def shape(row: dict[str, object]) -> dict[str, object]:
        return {k: re.sub(r"\d+(\.\d+)?", "N", str(v)) for k, v in row.items()}

    assert shape(shown) in [shape(row) for row in rows]


# -- 13: the pytest plugin's hypothesis example runs in a fresh project ------------------------


def _fresh_project(tmp_path: Path, *, with_line: bool) -> subprocess.CompletedProcess[str]:
    example = next(body for _, body in fenced_blocks("python") if "fault_schedules(" in body)
    toml = next(body for _, body in fenced_blocks("toml") if "asyncio_mode" in body)
    project = tmp_path / ("with-line" if with_line else "without-line")
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "my-bot"\nversion = "0"\n\n' + (toml + "\n" if with_line else "")
    )
    shutil.copy(ROOT / "examples" / "test_my_broker.py", project / "broker_fakes.py")
    (project / "test_orders.py").write_text(
        "from broker_fakes import BrokerAPI, BrokerGateway\n" + example + "\n"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AI_TRADER_", "CI"))}
    environ["PYTHONPATH"] = str(ROOT)  # this checkout of resilient
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_orders.py"],
        cwd=project,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_hypothesis_example_runs_in_a_fresh_project_with_the_documented_line(
    tmp_path: Path,
) -> None:
    """The README's hypothesis example, with the pyproject line documented next to it, passes
    in a project with no other configuration; without the line it fails as the README says."""
    done = _fresh_project(tmp_path, with_line=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 passed" in done.stdout
    without = _fresh_project(tmp_path, with_line=False)
    assert without.returncode != 0
    assert "doesn't know how to run async test functions" in without.stdout
    assert "PytestDeprecationWarning" not in done.stderr  # the documented lines are complete
