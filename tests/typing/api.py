"""Type-checked (mypy), never run: decorated functions keep their signatures."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import assert_type

import resilient
from resilient import (
    BreakerSnapshot,
    CircuitOpenError,
    EventKind,
    PolicyEvent,
    add_hook,
    breaker,
    breakers,
    deadline,
    fallback,
    get_breaker,
    retry,
    timeout,
)
from resilient.testing import capture_events, zero_wait_retries


@breaker("typing-broker")
@retry(max_attempts=3, retry_on=(ConnectionError, TimeoutError))
async def get_account(account_id: str, *, currency: str = "USD") -> dict[str, float]:
    return {currency: 1.0}


@resilient.resilient("typing-data", cache=True, timeout=2.0, idempotent=False)
async def get_price(symbol: str) -> float:
    return 1.0


@fallback(value=0)
@timeout(1.5)
def sync_quote(symbol: str, size: int = 1) -> int:
    return size


@retry(retry_on=lambda exc: isinstance(exc, OSError), idempotent=lambda a, kw: "key" in kw)
def place(symbol: str, key: str | None = None) -> str:
    return symbol


@breaker
@retry
async def bare(symbol: str) -> float:
    return 1.0


def on_event(event: PolicyEvent) -> None:
    assert_type(event.attempt, int)
    assert_type(event.exception, BaseException | None)


async def main() -> None:
    assert_type(await get_account("a", currency="EUR"), dict[str, float])
    assert_type(await get_price("AAPL"), float)
    assert_type(sync_quote("AAPL", size=2), int)
    assert_type(place("AAPL", key="k"), str)
    assert_type(await bare("AAPL"), float)
    snapshot = get_breaker("typing-broker").snapshot()
    assert_type(snapshot, BreakerSnapshot)
    assert_type(snapshot.success_rate, float)
    assert_type(breakers.names(), list[str])
    remove = add_hook(on_event)
    remove()
    only_transitions = add_hook(on_event, kinds=[EventKind.BREAKER_STATE, "fallback_served"])
    assert_type(only_transitions, Callable[[], None])
    only_transitions()
    partial_price = breaker("typing-partial")(functools.partial(get_account, "acct"))
    await partial_price(currency="USD")
    with deadline(2.0), zero_wait_retries(), capture_events() as events:
        assert_type(events, list[PolicyEvent])
    try:
        await get_account("a")
    except CircuitOpenError as exc:
        assert_type(exc.retry_after, float)


async def misuse() -> None:
    # The ignores are checked (warn_unused_ignores): these calls must be type errors.
    sync_quote(1)  # type: ignore[arg-type]
    await get_account("a", currency=1)  # type: ignore[arg-type]


async def streams() -> None:
    from resilient.streams import Gap, StreamSupervisor, websocket
    from resilient.trading import TimedPrice

    def backfill(gap: Gap) -> None:
        assert_type(gap.seconds, float)

    quotes = StreamSupervisor("typing-quotes", websocket("ws://127.0.0.1:1"), on_message=print)
    async with quotes:
        await quotes.subscribe("AAPL")
    assert_type(quotes.subscriptions, tuple[str, ...])
    assert_type(quotes.last_message_age(), float | None)
    assert_type(TimedPrice(1.0, source="ws").age, float)
    StreamSupervisor("typing-gaps", websocket("ws://x"), on_message=print, on_gap=backfill)
