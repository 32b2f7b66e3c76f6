"""Every ```python block of README.md runs as a test (pytest-markdown-docs), so the README
cannot drift from the code.

- ``python -m pytest`` collects README.md (it is in ``testpaths``); one test per block, named
  ``README.md::[CodeFence#N][line:L]`` after the line the block starts on, and a failure
  prints the block with its line numbers.
- A block runs as a module of its own (top-level ``await`` allowed), in a fresh temporary
  working directory with resilient's process state reset before and after; ```python
  continuation`` continues the previous block.
- A fragment that cannot run on its own is marked ```python notest``. Blocks may use the
  stand-ins below for the reader's own objects (``your_broker``, ``price_source``…); a block
  that needs PostgreSQL or Redis uses the servers at 127.0.0.1:5432 / 6379 (CI starts them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("AI_TRADER_ENV", "testing")

DOCUMENTS = ("README.md",)
"""Markdown files of the project whose Python blocks are tests."""


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect the project's documents without ``--markdown-docs`` (which would also collect
    every docstring); with the flag, pytest-markdown-docs collects them itself."""
    if file_path.name not in DOCUMENTS or file_path.parent != Path(__file__).parent:
        return None
    if parent.config.getoption("markdowndocs", default=False):
        return None
    try:
        from pytest_markdown_docs.plugin import MarkdownTextFile
    except ModuleNotFoundError:
        raise pytest.UsageError(
            "README.md's code blocks are tests: pip install pytest-markdown-docs "
            '(in the dev extra: pip install -e ".[dev]")'
        ) from None
    collector: pytest.Collector = MarkdownTextFile.from_parent(parent, path=file_path)
    return collector


def _is_document_block(item: pytest.Item) -> bool:
    return item.get_closest_marker("markdown-docs") is not None


@pytest.fixture(autouse=True)
def _document_block_sandbox(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """A README block runs in an empty working directory (its embedded SQLite file lands
    there) with fresh process state; other tests are left to their own fixtures."""
    if not _is_document_block(request.node):
        yield
        return
    from loguru import logger

    from resilient import disable_logging
    from resilient.testing._isolation import isolated_state

    handlers = set(logger._core.handlers)  # type: ignore[attr-defined]
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp_path_factory.mktemp("readme-block"))
    try:
        with isolated_state():
            yield
    finally:
        disable_logging()
        for handler in set(logger._core.handlers) - handlers:  # type: ignore[attr-defined]
            logger.remove(handler)  # a block's own loguru handlers end with it
        mp.undo()


# -- stand-ins for the reader's own objects ----------------------------------------------------


class _Broker:
    """Stands for the reader's broker client (an asyncio SDK)."""

    paper = True

    async def get_account_info(self) -> dict[str, float]:
        return {"cash": 25_000.0, "buying_power": 50_000.0}

    async def submit_order(
        self, symbol: str, qty: float, side: str, client_order_id: str | None = None
    ) -> dict[str, Any]:
        return {"symbol": symbol, "qty": qty, "side": side, "client_order_id": client_order_id}


class _MarketData:
    """Stands for the reader's market-data client."""

    async def get_current_price(self, symbol: str) -> float:
        return 187.5

    async def get_bars(self, symbol: str) -> list[float]:
        return [186.0, 187.5]


def pytest_markdown_docs_globals() -> dict[str, Any]:
    """Names README blocks use for the reader's own objects (fresh for every block)."""
    import httpx

    from examples.test_my_broker import BrokerAPI, BrokerGateway
    from resilient.integration import ResilienceFactory

    request = httpx.Request("GET", "https://api.broker.test/v2/account")
    response = httpx.Response(429, headers={"Retry-After": "2"}, request=request)

    async def ping_broker() -> bool:
        return True

    market_data = _MarketData()
    return {
        "httpx_error": httpx.HTTPStatusError("429", request=request, response=response),
        "exc": ConnectionResetError("connection reset by peer"),
        "ping_broker": ping_broker,
        "your_broker": _Broker(),
        "your_market_data": market_data,
        "alpaca_paper_client": _Broker(),
        "price_source": market_data,
        "factory": ResilienceFactory(logging=False, database=False),
        "BrokerAPI": BrokerAPI,
        "BrokerGateway": BrokerGateway,
    }
