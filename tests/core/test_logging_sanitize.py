"""Logging is silent until enabled, carries the correlation id and never writes a secret."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from resilient import correlation_id, disable_logging, enable_logging
from resilient._core.context import current_correlation_id, ensure_correlation_id
from resilient._core.log import logger as _package_logger
from resilient._core.sanitize import mask_url, register_secret, sanitize, sanitize_obj

secret_values = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="\"'\\"),
    min_size=6,
    max_size=30,
).map(lambda s: f"Kx{s}7!")


# Records are attributed to the calling module; tests log as if from inside the package.
logger = _package_logger.patch(lambda record: record.update(name="resilient.tests"))


@pytest.fixture
def lines() -> list[str]:
    out: list[str] = []
    yield out
    disable_logging()


def test_silent_until_enabled(lines: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The package writes nothing before enable_logging(); afterwards its records appear."""
    from resilient.config import reload_config, subscribe

    def failing(_cfg: object) -> None:
        raise RuntimeError("subscriber failed")

    unsubscribe = subscribe(failing)
    try:
        reload_config()  # logs an error from inside the package
        assert capsys.readouterr().err == ""
        enable_logging("INFO", sink=lines.append)
        reload_config()
    finally:
        unsubscribe()
    assert len(lines) == 1
    assert "configuration subscriber" in lines[0]
    assert "RuntimeError: subscriber failed" in lines[0]


def test_text_line_has_correlation_id_and_extras(lines: list[str]) -> None:
    """Text lines carry the correlation id and extra fields."""
    enable_logging("DEBUG", json_lines=False, sink=lines.append)
    with correlation_id("cid-123"):
        logger.bind(breaker="alpaca").warning("circuit opened")
    assert "cid-123" in lines[0] and "circuit opened" in lines[0] and "breaker=alpaca" in lines[0]


def test_json_lines(lines: list[str]) -> None:
    """JSON lines hold level, message, correlation id, extras and the exception's class."""
    enable_logging("INFO", json_lines=True, sink=lines.append)
    with correlation_id("cid-json"):
        try:
            raise ConnectionError("refused by host")
        except ConnectionError:
            logger.bind(component="broker").exception("call failed")
    record = json.loads(lines[0])
    assert record["level"] == "ERROR" and record["correlation_id"] == "cid-json"
    assert record["extra"] == {"component": "broker"}
    assert record["exception"] == "ConnectionError: refused by host"


def test_level_from_settings(lines: list[str]) -> None:
    """Without a level, the testing environment's WARNING level applies."""
    enable_logging(sink=lines.append)
    logger.info("hidden")
    logger.warning("shown")
    assert [("shown" in line) for line in lines] == [True]


@hsettings(max_examples=50)
@given(secret=secret_values)
def test_registered_secret_never_logged(secret: str) -> None:
    """A registered secret is masked in messages, extras and exception text."""
    out: list[str] = []
    register_secret(secret)
    enable_logging("DEBUG", json_lines=True, sink=out.append)
    try:
        logger.bind(api_key=secret, note=f"key {secret}").info("using {}", secret)
        try:
            raise PermissionError(f"bad key {secret}")
        except PermissionError:
            logger.exception("auth failed")
    finally:
        disable_logging()
    text = "".join(out)
    assert len(out) == 2
    assert secret not in text
    assert "***" in text


@pytest.mark.parametrize(
    ("raw", "hidden"),
    [
        ("postgresql+asyncpg://trader:hunter2pw@db:5432/x", "hunter2pw"),
        ("redis://:r3dis-pass@cache:6379/0", "r3dis-pass"),
        ("Authorization: Bearer abcdefghijklmnop", "abcdefghijklmnop"),
        ("headers={'Authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz"),
        ("api_key=AKIA1234567890 sent", "AKIA1234567890"),
        ('{"password": "pa55word!"}', "pa55word!"),
        ("token: tok_live_998877", "tok_live_998877"),
        ("APCA-API-SECRET-KEY=sk-abc-123456", "sk-abc-123456"),
    ],
)
def test_patterns_masked(raw: str, hidden: str) -> None:
    """DSN passwords, Authorization headers and key=value secrets are masked."""
    assert hidden not in sanitize(raw)


def test_url_masking_keeps_user_and_host() -> None:
    """Only the password part of a URL is masked."""
    assert mask_url("redis://u:p@ss/w@host:1/0") == "redis://u:***@host:1/0"
    assert sanitize("no secrets here") == "no secrets here"


def test_sanitize_obj_masks_secret_fields_only() -> None:
    """Secret-named string fields are masked; counts and other fields stay."""
    data = {
        "password": "x-secret-1",
        "by_category": {"authentication": 3},
        "nested": [{"api_key": "k-secret-2", "ok": "fine"}],
        "token_count": 4,
    }
    out = sanitize_obj(data)
    assert out["password"] == "***" and out["nested"][0]["api_key"] == "***"
    assert out["by_category"] == {"authentication": 3} and out["token_count"] == 4
    assert out["nested"][0]["ok"] == "fine"


async def test_correlation_id_follows_tasks_and_gather() -> None:
    """The correlation id is inherited by tasks and gathered coroutines, and isolated per task."""

    async def read() -> str | None:
        await asyncio.sleep(0)
        return current_correlation_id()

    with correlation_id("outer") as cid:
        assert cid == "outer"
        task = asyncio.create_task(read())
        gathered = await asyncio.gather(read(), read())
        assert await task == "outer" and gathered == ["outer", "outer"]
    assert current_correlation_id() is None

    async def own() -> str:
        return ensure_correlation_id()

    a, b = await asyncio.gather(own(), own())
    assert a != b and current_correlation_id() is None


def test_enable_logging_writes_each_line_once(capfd: pytest.CaptureFixture[str]) -> None:
    """With enable_logging() on stderr, a record appears once, not also via loguru's default
    handler (which stays installed, like every handler of the application)."""
    from loguru import logger as root

    handler = root.add(lambda _m: None)  # a user's own handler is kept
    try:
        enable_logging("INFO", json_lines=False)
        logger.warning("exactly-once-marker")
        disable_logging()
        err = capfd.readouterr().err
        assert err.count("exactly-once-marker") == 1
        root.remove(handler)  # still installed: enable_logging did not remove it
    finally:
        disable_logging()


def test_bytes_secret_under_secret_key_never_logged(lines: list[str]) -> None:
    """A bytes value bound under a secret-named key is masked like a str one, in both formats."""
    for json_lines in (True, False):
        enable_logging("DEBUG", json_lines=json_lines, sink=lines.append)
        logger.bind(password=b"hunter2-bytes", note="kept").info("login")
        disable_logging()
    text = "".join(lines)
    assert len(lines) == 2
    assert "hunter2-bytes" not in text
    assert "***" in text and "kept" in text


def test_url_password_is_the_part_mask_url_masks() -> None:
    """url_password() returns exactly the part of the URL that mask_url() replaces."""
    from resilient._core.sanitize import url_password

    assert url_password("redis://u:p@ss/w@host:1/0") == "p@ss/w"
    assert url_password("redis://:r3dis-pass@cache:6379/0") == "r3dis-pass"
    assert url_password("redis://cache:6379/0") is None
    assert url_password("not a url") is None
