"""A broker proxy turns off the SDK's own hidden retries (alpaca-py's REST retries, ccxt's
``maxRetriesOnFailure``): the proxy retries, and only when an order cannot be duplicated."""

from __future__ import annotations

from typing import Any

from resilient.config import current_config
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory


class AlpacaLike:
    paper = True

    def __init__(self) -> None:
        self._retry = 3
        self._retry_codes = [429, 504]

    def get_account(self) -> dict[str, Any]:
        return {}


AlpacaLike.__module__ = "alpaca.trading.client"


class CcxtLike:
    paper = True

    def __init__(self) -> None:
        self.options: dict[str, Any] = {"maxRetriesOnFailure": 2, "other": 1}

    def fetch_balance(self) -> dict[str, Any]:
        return {}


CcxtLike.__module__ = "ccxt.binance"


def _factory() -> ResilienceFactory:
    return ResilienceFactory(
        current_config(), registry=HealthRegistry(), logging=False, database=False
    )


def test_alpaca_rest_retries_are_turned_off() -> None:
    client = AlpacaLike()
    _factory().create_resilient_broker(client, "sdk-alpaca")
    assert client._retry == 0 and client._retry_codes == []


def test_ccxt_retries_are_turned_off() -> None:
    client = CcxtLike()
    _factory().create_resilient_broker(client, "sdk-ccxt")
    assert client.options == {"maxRetriesOnFailure": 0, "other": 1}


def test_other_clients_are_left_alone() -> None:
    class Plain:
        paper = True

        def __init__(self) -> None:
            self._retry = 3
            self.options = {"maxRetriesOnFailure": 2}

        def get_account(self) -> dict[str, Any]:
            return {}

    client = Plain()
    _factory().create_resilient_broker(client, "sdk-plain")
    assert client._retry == 3 and client.options == {"maxRetriesOnFailure": 2}
