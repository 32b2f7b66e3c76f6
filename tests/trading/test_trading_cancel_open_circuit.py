"""A cancel reaches the broker even while the service's circuit is open (a cancel must never
be refused by the protection meant for the broker's failures), sync and async; its error is
raised as it is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from resilient import breakers
from resilient.config import current_config
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory


class _Broker:
    paper = True

    def __init__(self) -> None:
        self.cancelled: list[str] = []
        self.fail = False

    def cancel_order(self, order_id: str) -> dict[str, str]:
        if self.fail:
            raise ValueError(f"order {order_id} is already filled")
        self.cancelled.append(order_id)
        return {"id": order_id, "status": "canceled"}

    async def cancel_all_orders(self) -> int:
        if self.fail:
            raise ValueError("nothing to cancel")
        self.cancelled.append("*")
        return 3


@pytest.fixture
async def broker() -> AsyncIterator[tuple[_Broker, Any]]:
    factory = ResilienceFactory(
        current_config(), registry=HealthRegistry(), logging=False, database=False
    )
    await factory.initialize_resilience()
    raw = _Broker()
    proxy = factory.create_resilient_broker(raw, "cancel-svc")
    yield raw, proxy
    await factory.shutdown()


async def test_cancels_pass_an_open_circuit(broker: tuple[_Broker, Any]) -> None:
    raw, proxy = broker
    breakers.get("cancel-svc").force_open()
    assert breakers.get("cancel-svc").state == "open"
    assert proxy.cancel_order("o-1") == {"id": "o-1", "status": "canceled"}
    assert await proxy.cancel_all_orders() == 3
    assert raw.cancelled == ["o-1", "*"]


async def test_a_failing_cancel_behind_an_open_circuit_raises_its_error(
    broker: tuple[_Broker, Any],
) -> None:
    raw, proxy = broker
    breakers.get("cancel-svc").force_open()
    raw.fail = True
    with pytest.raises(ValueError, match="already filled"):
        proxy.cancel_order("o-2")
    with pytest.raises(ValueError, match="nothing to cancel"):
        await proxy.cancel_all_orders()
    assert raw.cancelled == []


async def test_cancels_with_a_closed_circuit(broker: tuple[_Broker, Any]) -> None:
    raw, proxy = broker
    assert proxy.cancel_order("o-3")["status"] == "canceled"
    assert await proxy.cancel_all_orders() == 3
    assert raw.cancelled == ["o-3", "*"]
