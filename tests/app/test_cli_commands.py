"""The ``resilient`` command line: dispatch, ``config`` listings, ``trading state`` through
Redis, ``breakers`` error paths and ``python -m resilient``."""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from resilient import breaker, breakers
from resilient._cli import main
from resilient.config import reload_config
from resilient.health import registry
from resilient.testing.servers import free_port


@pytest.fixture
def env_vars(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Set ``AI_TRADER_*`` variables with ``monkeypatch.setenv``; the process configuration
    is reloaded once they are set (by the test) and again after they are removed."""
    yield monkeypatch
    monkeypatch.undo()
    reload_config()


@pytest.fixture
def redis_prefix(redis_url: str, env_vars: pytest.MonkeyPatch) -> Iterator[str]:
    prefix = f"clicmd-{uuid.uuid4().hex[:8]}"
    env_vars.setenv("AI_TRADER_REDIS__URL", redis_url)
    env_vars.setenv("AI_TRADER_REDIS__KEY_PREFIX", prefix)
    reload_config()
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


# -- dispatch ----------------------------------------------------------------------------------


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: resilient")
    for name in ("demo", "health", "config", "breakers", "trading"):
        assert name in out


def test_only_options_is_help_too(capsys: pytest.CaptureFixture[str]) -> None:
    """An option with no command names no module to load: the help, exit 2."""
    with pytest.raises(SystemExit) as exc:
        main(["--no-such-option"])
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m_resilient_runs_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m resilient`` exits with the CLI's code."""
    monkeypatch.setattr(sys, "argv", ["resilient", "trading", "state", "--json"])
    sys.modules.pop("resilient.__main__", None)
    with pytest.raises(SystemExit) as exc:
        importlib.import_module("resilient.__main__")
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out)["state"] == "active"


# -- config ------------------------------------------------------------------------------------


def test_config_sources_lists_files_and_variables(
    env_vars: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env_vars.setenv("AI_TRADER_DATABASE__PASSWORD", "s3cr3t-Pa55word-xyz")
    env_vars.setenv("AI_TRADER_LOG_LEVEL", "WARNING")
    assert main(["config", "--sources"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "configuration sources for environment 'testing', lowest first:"
    kinds = [line.split()[1] for line in lines[1:]]
    assert [line.split()[0] for line in lines[1:]] == [f"{i}." for i in range(1, len(kinds) + 1)]
    assert "defaults" in kinds and "variable" in kinds
    assert any("AI_TRADER_LOG_LEVEL" in line and "variable" in line for line in lines)
    assert "AI_TRADER_DATABASE__PASSWORD" in out
    assert "s3cr3t-Pa55word-xyz" not in out


def test_config_sources_json(
    env_vars: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env_vars.setenv("AI_TRADER_DATABASE__PASSWORD", "an0ther-Secret-val")
    assert main(["config", "--env", "staging", "--sources", "--json"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out)
    assert all(set(row) == {"kind", "where", "sets"} for row in rows)
    assert any(r["kind"] == "defaults" and r["where"].endswith("settings.toml") for r in rows)
    variables = [r for r in rows if r["kind"] == "variable"]
    assert any(r["where"] == "AI_TRADER_DATABASE__PASSWORD" for r in variables)
    assert "an0ther-Secret-val" not in out


def test_config_validate_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--env", "staging", "--validate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"env": "staging", "valid": True}


def test_config_table_masks_secrets_and_names_variables(
    env_vars: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env_vars.setenv("AI_TRADER_DATABASE__PASSWORD", "hunter2-Hunter2-pw")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "environment: testing"
    assert "[redis]" in out and "[database]" in out
    password = next(line for line in out.splitlines() if "(AI_TRADER_DATABASE__PASSWORD)" in line)
    assert password.split()[:2] == ["password", "="]
    assert "hunter2-Hunter2-pw" not in out
    assert "(unset)" in out  # e.g. redis.url in the testing environment


def test_config_shows_extra_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A section the schema does not know is printed as JSON after the known ones."""
    (tmp_path / "settings.toml").write_text(
        '[default]\nextra_sections = ["my_app"]\n[default.my_app]\ngreeting = "hello"\nlimit = 3\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    assert main(["config", "--env", "development", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["my_app"] == {"greeting": "hello", "limit": 3}
    assert main(["config", "--env", "development"]) == 0
    out = capsys.readouterr().out
    assert "[my_app]" in out
    assert out.index("[my_app]") > out.index("[redis]")
    assert '"greeting": "hello"' in out


def test_config_error_exits_2_with_the_problem(
    env_vars: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env_vars.setenv("AI_TRADER_REDIS__TIMEOUT", "-3")
    assert main(["config", "--env", "staging"]) == 2
    err = capsys.readouterr().err
    assert "redis.timeout" in err


def test_config_sources_of_an_unreadable_file_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "settings.toml").write_text("[default\nbroken = ", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["config", "--env", "development", "--sources"]) == 2
    err = capsys.readouterr().err
    assert "settings.toml" in err and "TOML" in err


# -- trading state through Redis ---------------------------------------------------------------


def test_trading_state_set_and_read_through_redis(
    redis_prefix: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trading", "state", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {"state": "active", "source": "settings (trading.state)"}

    assert main(["trading", "state", "reducing"]) == 0
    assert capsys.readouterr().out.strip() == "trading state: reducing (from redis (cli))"
    stored = redis.Redis.from_url(redis_url).get(f"{redis_prefix}:trading:state")
    assert stored is not None and json.loads(stored)["state"] == "reducing"

    assert main(["trading", "state", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "reducing" and shown["source"] == "redis (cli)"
    assert isinstance(shown["set_at"], float)


def test_trading_state_ignores_an_unusable_shared_value(
    redis_prefix: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value in Redis that is not a trading state leaves the configured one shown."""
    client = redis.Redis.from_url(redis_url)
    client.set(f"{redis_prefix}:trading:state", '{"state": "panic"}')
    client.close()
    assert main(["trading", "state"]) == 0
    assert capsys.readouterr().out.strip() == (
        "trading state: active (from settings (trading.state))"
    )


def test_trading_state_with_unreachable_redis_exits_1(
    env_vars: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env_vars.setenv("AI_TRADER_REDIS__URL", f"redis://:pw-Secret-123@127.0.0.1:{free_port()}/0")
    env_vars.setenv("AI_TRADER_REDIS__TIMEOUT", "0.2")
    reload_config()
    assert main(["trading", "state", "halted"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("Redis unreachable: ")
    assert "pw-Secret-123" not in captured.err
    assert captured.out == ""


def test_trading_state_rejects_an_unknown_state(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["trading", "state", "sideways"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# -- breakers ----------------------------------------------------------------------------------


def test_breakers_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["breakers", "reset", "--json"]) == 2
    assert "NAME is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["breakers", "alpaca"])
    assert exc.value.code == 2
    assert "invalid choice: 'alpaca'" in capsys.readouterr().err


def test_breakers_empty_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["breakers"]) == 0
    assert capsys.readouterr().out.strip() == ("no circuit breakers known (none in this process)")


def test_breakers_empty_listing_with_redis(
    redis_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["breakers"]) == 0
    assert "none stored in Redis" in capsys.readouterr().out
    assert main(["breakers", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {}


def test_breakers_table_shows_local_counts(capsys: pytest.CaptureFixture[str]) -> None:
    @breaker(name="cli-quotes", failure_threshold=5)
    def quotes() -> int:
        raise ConnectionError("down")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            quotes()
    assert main(["breakers"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["NAME", "STATE", "SOURCE"]
    row = next(line for line in out if line.startswith("cli-quotes"))
    assert row.split()[1:3] == ["closed", "process"]
    assert "calls 2, failures 2" in row


def test_breakers_reset_local_with_redis_reports_cluster_scope(
    redis_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A breaker known only in this process is reset in Redis too (version > 0), as JSON."""

    @breaker(name="cli-local", failure_threshold=1)
    def call() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        call()
    assert breakers.get("cli-local").state == "open"
    assert main(["breakers", "reset", "cli-local", "--json"]) == 0
    message = json.loads(capsys.readouterr().out)
    assert message["name"] == "cli-local" and message["scope"] == "cluster"
    assert message["state"] == "closed" and message["version"] >= 1
    assert breakers.get("cli-local").state == "closed"


def test_breakers_reset_with_unreachable_redis_exits_1(
    env_vars: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env_vars.setenv("AI_TRADER_REDIS__URL", f"redis://:pw-Hidden-987@127.0.0.1:{free_port()}/0")
    env_vars.setenv("AI_TRADER_REDIS__TIMEOUT", "0.2")
    reload_config()
    assert main(["breakers", "reset", "anything"]) == 1
    err = capsys.readouterr().err
    assert "nothing was reset" in err
    assert "pw-Hidden-987" not in err


def test_missing_extra_is_reported_with_the_install_hint(
    redis_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command whose optional dependency is absent exits 2 naming the extra to install."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [m for m in sys.modules if m == "redis" or m.startswith("redis.")]:
            mp.setitem(sys.modules, name, None)
        assert main(["breakers"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resilient breakers: ")
    assert 'pip install "resilient[redis]"' in err


# -- interruption and closed pipes -------------------------------------------------------------


def test_interrupt_while_checks_run_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C during ``resilient health`` ends it with the conventional 130, no traceback."""

    async def interrupted() -> bool:
        raise KeyboardInterrupt

    registry.register("slow-thing", interrupted)
    try:
        assert main(["health"]) == 130
    finally:
        registry.unregister("slow-thing")
    assert capsys.readouterr().out == ""


class _ClosedPipe(io.TextIOBase):
    """stdout piped into a reader that has gone away (``resilient config | head -1``)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self) -> int:
        return self._fd


def test_closed_output_pipe_exits_0_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "stdout"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT)
    try:
        with capsys.disabled():
            monkeypatch.setattr(sys, "stdout", _ClosedPipe(fd))
            code = main(["config"])
            monkeypatch.undo()
        os.write(fd, b"after")  # the descriptor now points at /dev/null
    finally:
        os.close(fd)
    assert code == 0
    assert target.read_bytes() == b""


def test_health_with_a_broken_database_layer_is_unhealthy(tmp_path: Path) -> None:
    """A database module that cannot be imported (a broken install) is reported, not hidden."""
    code = (
        "import sys; sys.modules['resilient.db'] = None\n"
        "from resilient._cli import main\n"
        "sys.exit(main(['health', '--json']))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_TRADER_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    data = json.loads(done.stdout)
    assert done.returncode == 2, done.stderr
    database = data["components"]["database"]
    assert database["status"] == "unhealthy"
    assert database["detail"].startswith("ModuleNotFoundError: ")
