"""Client-side rate limits per service (limits library, memory or Redis): weights, linked
endpoint limits and the venue's feedback, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient.errors import classify, proves_not_sent
from resilient.trading import RateLimitExceeded, ServiceRateLimiter


async def test_calls_within_the_limit_do_not_wait() -> None:
    """Calls under the limit pass at once and are counted as usage."""
    limiter = ServiceRateLimiter("svc", "5/second", max_wait=0.0)
    for _ in range(5):
        await limiter.acquire()
    usage = await limiter.usage()
    assert usage["window_used"] == 5
    assert usage["requests"] == 5
    assert usage["throttled"] == 0
    assert usage["backend"] == "memory"


async def test_over_the_limit_is_refused_without_waiting_beyond_max_wait() -> None:
    """A call over the limit is refused with retry_after when the wait exceeds max_wait."""
    limiter = ServiceRateLimiter("svc", "2/minute", max_wait=0.05)
    await limiter.acquire()
    await limiter.acquire()
    started = time.monotonic()
    with pytest.raises(RateLimitExceeded) as info:
        await limiter.acquire()
    assert time.monotonic() - started < 0.5
    assert 0 < info.value.retry_after <= 61
    assert info.value.name == "svc"
    assert "services.svc.rate_limit" in str(info.value)
    assert classify(info.value).value == "rate_limit"
    assert proves_not_sent(info.value)
    usage = await limiter.usage()
    assert usage["refused"] == 1 and usage["throttled"] == 1


async def test_over_the_limit_waits_for_a_slot() -> None:
    """With room in max_wait, a call waits for the window to free a slot."""
    limiter = ServiceRateLimiter("svc", "2/second", max_wait=2.0)
    started = time.monotonic()
    for _ in range(3):
        await limiter.acquire()
    assert time.monotonic() - started >= 0.5
    assert limiter.throttled == 1


def test_sync_acquire() -> None:
    """Synchronous clients share the same limit."""
    limiter = ServiceRateLimiter("svc", "1/minute", max_wait=0.0)
    limiter.acquire_sync()
    with pytest.raises(RateLimitExceeded):
        limiter.acquire_sync()


@pytest.mark.redis
async def test_redis_limit_is_shared_between_limiters(redis_url: str) -> None:
    """Two limiters on one Redis (two processes) share one budget."""
    prefix = f"test-{uuid.uuid4().hex}"
    a = ServiceRateLimiter(
        "shared", "3/minute", max_wait=0.0, redis_url=redis_url, key_prefix=prefix, timeout=1.0
    )
    b = ServiceRateLimiter(
        "shared", "3/minute", max_wait=0.0, redis_url=redis_url, key_prefix=prefix, timeout=1.0
    )
    try:
        await a.acquire()
        await b.acquire()
        b.acquire_sync()
        with pytest.raises(RateLimitExceeded):
            await a.acquire()
        usage = await a.usage()
        assert usage["backend"] == "redis"
        assert usage["window_used"] == 3
        assert not a.degraded
    finally:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await a.aclose()
        await b.aclose()


async def test_unreachable_redis_degrades_to_memory() -> None:
    """With Redis down the limiter still limits (in memory) and reports itself degraded."""
    limiter = ServiceRateLimiter(
        "svc", "2/minute", max_wait=0.0, redis_url="redis://127.0.0.1:1/0", timeout=0.05
    )
    try:
        await limiter.acquire()
        await limiter.acquire()
        with pytest.raises(RateLimitExceeded):
            await limiter.acquire()
        assert limiter.degraded
        usage = await limiter.usage()
        assert "backend_error" in usage
    finally:
        await limiter.aclose()


# --- weights, linked limits and the venue's feedback (a real HTTP server on 127.0.0.1) --------


@dataclass
class Venue:
    """A venue with a weight limit per fixed window that tells its count in headers."""

    limit: int = 100
    window: float = 60.0
    used: int = 0
    started: float = field(default_factory=time.monotonic)
    served: int = 0
    too_many: int = 0
    ban_for: float | None = None
    url: str = ""

    def _roll(self) -> None:
        now = time.monotonic()
        if now - self.started >= self.window:
            self.started, self.used = now, 0

    async def handle(self, request: web.Request) -> web.Response:
        self._roll()
        weight = int(request.query.get("w", "1"))
        reset = self.window - (time.monotonic() - self.started)
        if self.ban_for is not None:
            return web.Response(status=418, headers={"Retry-After": f"{self.ban_for:g}"})
        if self.used + weight > self.limit:
            self.too_many += 1
            return web.Response(
                status=429,
                headers={"Retry-After": f"{reset:.3f}", "X-MBX-USED-WEIGHT-1M": str(self.used)},
            )
        self.used += weight
        self.served += 1
        return web.Response(
            text="ok",
            headers={
                "X-MBX-USED-WEIGHT-1M": str(self.used),
                "X-RateLimit-Remaining": str(self.limit - self.used),
                "X-RateLimit-Reset": f"{reset:.3f}",
            },
        )


@pytest.fixture
async def venue() -> AsyncIterator[Venue]:
    state = Venue()
    app = web.Application()
    app.router.add_get("/api", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}/api"
    try:
        yield state
    finally:
        await runner.cleanup()


class VenueClient:
    """The vendor SDK: raises aiohttp's ClientResponseError (status, headers) on 4xx and keeps
    the last answer's headers in ``last_response_headers``, as ccxt does."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url
        self.last_response_headers: Any = None

    async def call(self, weight: int = 1) -> str:
        async with self.session.get(self.url, params={"w": str(weight)}) as response:
            self.last_response_headers = response.headers
            response.raise_for_status()
            return await response.text()


def client_call(session: aiohttp.ClientSession, url: str) -> Any:
    return VenueClient(session, url).call


async def test_usage_header_resyncs_the_local_count_with_the_venue(venue: Venue) -> None:
    """Another program used 90 of the venue's 100: after one answer the limiter counts what
    the venue counts, and lets exactly the remaining weight out (no 429 at all)."""
    async with aiohttp.ClientSession() as session:
        client = VenueClient(session, venue.url)
        await client.call(90)  # outside the limiter (another process on the same key)
        limiter = ServiceRateLimiter("venue-a", "100/minute", max_wait=0.0)
        watched = limiter.watch(client.call, True, client)
        sent = refused = 0
        for _ in range(20):
            try:
                await limiter.acquire(1)
            except RateLimitExceeded:
                refused += 1
                continue
            await watched(1)
            sent += 1
        usage = await limiter.usage()
    assert venue.too_many == 0
    assert venue.used == 100 and sent == 10 and refused == 10
    assert usage["window_used"] == venue.used  # the local count is the venue's
    assert usage["resyncs"] >= 1


async def test_without_the_headers_the_venue_answers_429(venue: Venue) -> None:
    """The same traffic with the usage headers ignored: the venue refuses what the limiter
    let out (the case the feedback exists for)."""
    async with aiohttp.ClientSession() as session:
        call = client_call(session, venue.url)
        await call(90)
        limiter = ServiceRateLimiter(
            "venue-b", "100/minute", max_wait=0.0, used_header="", remaining_header=""
        )
        for _ in range(20):
            try:
                await limiter.acquire(1)
                await call(1)
            except (RateLimitExceeded, aiohttp.ClientResponseError):
                pass
    assert venue.too_many == 10


async def test_remaining_header_resyncs_too(venue: Venue) -> None:
    async with aiohttp.ClientSession() as session:
        client = VenueClient(session, venue.url)
        await client.call(50)
        limiter = ServiceRateLimiter("venue-r", "100/minute", max_wait=0.0, used_header="")
        await limiter.acquire(1)
        await limiter.watch(client.call, True, client)(1)
        assert (await limiter.usage())["window_used"] == 51 == venue.used


@pytest.mark.parametrize("status", [429, 418])
async def test_429_or_418_blocks_until_retry_after(venue: Venue, status: int) -> None:
    """A 429/418 with Retry-After: no call leaves before it; a call that may wait that long
    waits it out, one that may not is refused naming the venue's block."""
    venue.window, venue.limit = 60.0, 5
    if status == 418:
        venue.ban_for = 0.4
    async with aiohttp.ClientSession() as session:
        call = client_call(session, venue.url)
        if status == 429:
            await call(5)  # full: the venue answers 429 with Retry-After ≈ 60 s
        limiter = ServiceRateLimiter("venue-block", "100/minute", max_wait=0.0)
        watched = limiter.watch(call, True)
        await limiter.acquire(1)
        with pytest.raises(aiohttp.ClientResponseError) as info:
            await watched(1)
        assert info.value.status == status
        assert limiter.blocked_for > (30.0 if status == 429 else 0.2)
        with pytest.raises(RateLimitExceeded, match="blocked by the venue") as refused:
            await limiter.acquire(1)
        assert refused.value.retry_after > 0.2
        if status == 418:
            venue.ban_for = None
            limiter.max_wait = 2.0
            started = time.monotonic()
            await limiter.acquire(1)  # waits the rest of the 0.4 s ban out
            assert 0.2 < time.monotonic() - started < 1.5
            assert await watched(1) == "ok"
    assert venue.too_many == (1 if status == 429 else 0)


def test_sync_feedback_blocks_and_resyncs() -> None:
    limiter = ServiceRateLimiter("sync-fb", "100/minute", max_wait=0.0)
    limiter.acquire_sync(1)
    limiter.feedback({"X-MBX-USED-WEIGHT-1M": "99"})
    limiter.acquire_sync(1)
    with pytest.raises(RateLimitExceeded):
        limiter.acquire_sync(1)
    other = ServiceRateLimiter("sync-fb2", "100/minute", max_wait=0.0)
    other.feedback({"Retry-After": "30"}, status=429)
    assert 29 < other.blocked_for <= 30
    with pytest.raises(RateLimitExceeded, match="blocked by the venue"):
        other.acquire_sync(1)


@pytest.mark.redis
async def test_a_block_and_a_resync_are_shared_through_redis(redis_url: str) -> None:
    """One process learns of a 429 and of the venue's count: the others obey too."""
    prefix = f"test-{uuid.uuid4().hex}"
    opts: dict[str, Any] = {"max_wait": 0.0, "redis_url": redis_url, "key_prefix": prefix}
    a = ServiceRateLimiter("shared-fb", "100/minute", timeout=1.0, **opts)
    b = ServiceRateLimiter("shared-fb", "100/minute", timeout=1.0, **opts)
    c = ServiceRateLimiter("shared-fb2", "100/minute", timeout=1.0, **opts)
    d = ServiceRateLimiter("shared-fb2", "100/minute", timeout=1.0, **opts)
    try:
        await a.acquire(1)
        await a.afeedback({"X-MBX-USED-WEIGHT-1M": "97"})
        assert (await b.usage())["window_used"] == 97
        await b.acquire(3)
        with pytest.raises(RateLimitExceeded):
            await b.acquire(1)
        await c.acquire(1)
        await c.afeedback({"Retry-After": "5"}, status=429)
        with pytest.raises(RateLimitExceeded, match="blocked by the venue"):
            await d.acquire(1)
        assert 4 < d.blocked_for <= 5
        d.acquire_sync  # noqa: B018 - the sync path reads the same key
        with pytest.raises(RateLimitExceeded, match="blocked by the venue"):
            ServiceRateLimiter("shared-fb2", "100/minute", timeout=1.0, **opts).acquire_sync(1)
    finally:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        for limiter in (a, b, c, d):
            await limiter.aclose()


@settings(max_examples=60)
@given(
    amount=st.integers(1, 50),
    weights=st.lists(st.integers(0, 12), min_size=1, max_size=30),
)
def test_weights_are_counted_exactly(amount: int, weights: list[int]) -> None:
    """A call goes out exactly when its weight still fits the window (weight 0 is free)."""
    limiter = ServiceRateLimiter("weights", f"{amount}/minute", max_wait=0.0)
    used = 0
    for weight in weights:
        fits = used + weight <= amount
        if weight > amount:
            with pytest.raises(ValueError, match="can never fit"):
                limiter.acquire_sync(weight)
            continue
        if fits:
            limiter.acquire_sync(weight)
            used += weight
        else:
            with pytest.raises(RateLimitExceeded):
                limiter.acquire_sync(weight)
    stats = limiter._memory.get_window_stats(limiter.items[0], limiter.key)
    assert amount - stats.remaining == used


async def test_endpoint_limits_are_linked_to_the_service_limit() -> None:
    """An endpoint's own limit and the account-wide one are both taken; filling one endpoint
    leaves the others free, filling the account stops them all."""
    limiter = ServiceRateLimiter(
        "linked", "10/minute", max_wait=0.0, endpoints={"create_order": "2/minute"}
    )
    await limiter.acquire(1, "create_order")
    await limiter.acquire(1, "create_order")
    with pytest.raises(RateLimitExceeded):
        await limiter.acquire(1, "create_order")
    await limiter.acquire(7, "get_klines")  # the account has 8 left: 7 fit
    with pytest.raises(RateLimitExceeded):
        await limiter.acquire(2, "get_klines")
    assert (await limiter.usage())["window_used"] == 9


async def test_proxy_charges_method_weights_and_listens_to_429() -> None:
    """services.<name>.methods.<m>.weight is charged per call; a 429 with Retry-After from
    the SDK blocks the whole service until then."""
    from dataclasses import replace

    from resilient.config import current_config
    from resilient.integration import ResilienceFactory

    class TooMany(Exception):
        status_code = 429
        headers: ClassVar[dict[str, str]] = {"Retry-After": "20"}

    class Client:
        async def get_klines(self, symbol: str) -> list[int]:
            return [1]

        async def get_ticker(self, symbol: str) -> float:
            raise TooMany("slow down")

    config = current_config()
    services = {
        "wt": {
            "rate_limit": "100/minute",
            "rate_limit_max_wait": 0.0,
            "methods": {"get_klines": {"weight": 5}, "get_ticker": {"max_attempts": 1}},
        }
    }
    factory = ResilienceFactory(replace(config, extra={**config.extra, "services": services}))
    data = factory.create_resilient_market_data(Client(), "wt")
    await data.get_klines("BTCUSDT")
    await data.get_klines("BTCUSDT")
    limiter = factory.service("wt")._limiter
    assert (await limiter.usage())["window_used"] == 10
    with pytest.raises(TooMany):
        await data.get_ticker("BTCUSDT")
    assert limiter.blocked_for > 15
    with pytest.raises(RateLimitExceeded, match="blocked by the venue"):
        await data.get_klines("ETHUSDT")
    await factory.shutdown()


async def test_limit_accuracy_against_the_venue_count(venue: Venue) -> None:
    """Four workers send random weights as fast as the limit lets them for ~1.2 s against a
    venue counting the same limit in 1 s windows: it never answers 429 and counts exactly the
    weight the limiter let out."""
    import random

    venue.limit, venue.window = 60, 1.0
    rng = random.Random(7)
    limiter = ServiceRateLimiter("accuracy", "60/second", max_wait=2.0)
    sent_weight = 0
    stop = time.monotonic() + 1.2
    async with aiohttp.ClientSession() as session:
        client = VenueClient(session, venue.url)
        call = limiter.watch(client.call, True, client)

        async def worker() -> None:
            nonlocal sent_weight
            while time.monotonic() < stop:
                weight = rng.randint(1, 6)
                await limiter.acquire(weight)
                await call(weight)
                sent_weight += weight

        venue.started, venue.used = time.monotonic(), 0
        await asyncio.gather(*(worker() for _ in range(4)))
    assert venue.too_many == 0
    assert sent_weight > 60  # it did reach the limit
