"""``resilient.sanitize`` masks every piece of a URL password once the configuration that
holds it is loaded: unencoded delimiters split differently by each client library, and
percent-encoded passwords in both forms."""

from __future__ import annotations

from pathlib import Path

from resilient import sanitize
from resilient.config import ConfigManager


def _load(tmp_path: Path, url: str) -> None:
    ConfigManager("development", cwd=tmp_path, environ={"AI_TRADER_REDIS__URL": url}).load_config()


def test_pieces_of_a_password_with_unencoded_delimiters_are_masked(tmp_path: Path) -> None:
    _load(tmp_path, "redis://user:alpha1x@bravo2x/charlie3x:delta4x@127.0.0.1:6379/0")
    text = sanitize("a alpha1x b bravo2x c charlie3x d delta4x e")
    assert text == "a *** b *** c *** d *** e"


def test_percent_encoded_password_is_masked_raw_and_decoded(tmp_path: Path) -> None:
    _load(tmp_path, "redis://:p%40ssw0rdQ%2Fzz9@127.0.0.1:6379/0")
    assert sanitize("decoded p@ssw0rdQ/zz9 raw p%40ssw0rdQ%2Fzz9") == "decoded *** raw ***"


def test_a_url_without_password_registers_nothing(tmp_path: Path) -> None:
    _load(tmp_path, "redis://cache-host-77:6379/0")
    assert sanitize("cache-host-77 is down") == "cache-host-77 is down"


def test_unprintable_objects() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert sanitize(Broken()) == "<unprintable Broken>"
