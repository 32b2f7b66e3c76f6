"""``resilient breakers``: list shared and local circuit states, reset one cluster-wide."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from resilient import breaker, breakers
from resilient._backends.redis import close_workers
from resilient._backends.shared_state import RedisSharedState
from resilient._cli import main
from resilient.config import reload_config
from resilient.testing.servers import free_port


@pytest.fixture
def redis_env(redis_url: str) -> Iterator[str]:
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    os.environ["AI_TRADER_REDIS__URL"] = redis_url
    os.environ["AI_TRADER_REDIS__KEY_PREFIX"] = prefix
    reload_config()
    try:
        yield prefix
    finally:
        del os.environ["AI_TRADER_REDIS__URL"]
        del os.environ["AI_TRADER_REDIS__KEY_PREFIX"]
        reload_config()
        close_workers()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def _store(url: str, prefix: str, name: str, state: str) -> None:
    async def go() -> None:
        st = RedisSharedState(url, prefix=prefix, origin="another-process")
        await st.reset(name, state=state)

    asyncio.run(go())
    close_workers()


def test_list_and_reset_cluster_wide(
    redis_url: str, redis_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _store(redis_url, redis_env, "alpaca", "open")
    assert main(["breakers", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["alpaca"]["state"] == "open"
    assert listed["alpaca"]["source"] == "redis"

    assert main(["breakers"]) == 0
    table = capsys.readouterr().out
    assert "alpaca" in table and "open" in table

    assert main(["breakers", "reset", "alpaca"]) == 0
    assert "reset to closed cluster-wide" in capsys.readouterr().out
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.hget(f"{redis_env}:breaker:{{alpaca}}", "state") == "closed"
    client.close()


def test_reset_unknown_name_fails(redis_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["breakers", "reset", "nope"]) == 1
    assert "unknown breaker 'nope'" in capsys.readouterr().err


def test_local_breakers_are_listed_and_reset_without_redis(
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"local-{uuid.uuid4().hex[:6]}"

    @breaker(name, failure_threshold=1)
    def svc() -> None:
        raise ConnectionError("down")

    try:
        with pytest.raises(ConnectionError):
            svc()
        assert main(["breakers", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[name]["state"] == "open"
        assert main(["breakers", "reset", name]) == 0
        assert breakers.get(name).state == "closed"
    finally:
        breakers.remove(name)


def test_shared_reset_without_redis_url_explains_the_fix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["breakers", "reset", "somewhere-else"]) == 2
    assert "redis.url" in capsys.readouterr().err


def test_unreachable_redis_is_reported_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "cli-secret-pw-42"
    os.environ["AI_TRADER_REDIS__URL"] = f"redis://:{secret}@127.0.0.1:{free_port()}/0"
    reload_config()
    try:
        assert main(["breakers"]) == 1
        assert main(["breakers", "reset", "x"]) == 1
    finally:
        del os.environ["AI_TRADER_REDIS__URL"]
        reload_config()
        close_workers()
    captured = capsys.readouterr()
    assert "Redis unreachable" in captured.err
    assert secret not in captured.out + captured.err


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["breakers", "reset"]) == 2
    assert "NAME is required" in capsys.readouterr().err
