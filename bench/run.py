"""Per-call cost of resilient's decorators next to the peer libraries, measured in one run.

Usage: ``python bench/run.py [--quick] [--samples N] [--only SCENARIO]`` (``nox -s bench``).

Every case is timed as a loop of N calls, repeated for several samples; the table shows the
median per call and, for the success and rejection paths, the nanoseconds added over the raw
baseline measured in the same run (a plain call / await, or a plain raise+except). The
fails-twice rows are whole calls (two failures, then success, zero wait), with the cost added
over a hand-written three-attempt loop. Memory growth is the resident-set growth over
1,000,000 rejected calls (100,000 with ``--quick``).

The package's default hooks stay installed (the log hook, and the error tracker, metrics and
component statistics that ``import resilient`` subscribes), as a user gets them; the
fails-twice path is also shown with no hooks, and with a user hook that takes retry events
(each retry then builds an event). ``--match TEXT`` keeps only the fails-twice cases whose name
contains TEXT; their "x" column is the median of case / hand loop over the samples.
Decorators measured on the fails-twice path use ``budget=False``: a call that always needs two
retries is far beyond any retry budget.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

import circuitbreaker
import pybreaker
import stamina
import tenacity

import resilient
from resilient import breakers
from resilient._core import events as _hooks

stamina.instrumentation.set_on_retry_hooks([])  # stamina logs each retry otherwise


class Bench:
    """Times loops of calls; a case with a baseline alternates baseline and case samples so
    that load from elsewhere on the machine shifts both alike."""

    def __init__(self, calls: int, samples: int) -> None:
        self.calls = calls
        self.samples = samples
        self.rows: list[tuple[str, str, str, float, float | None]] = []
        self.ratios: dict[tuple[str, str, str], float] = {}
        """Median of case / baseline over the samples, for the cases with a baseline."""
        self._ratio: float | None = None
        self.match = ""
        """Only the fails-twice cases whose name contains this (the hand loop always runs)."""
        self.runner = asyncio.Runner()

    def close(self) -> None:
        self.runner.close()

    @staticmethod
    def _sync_loop(
        fn: Callable[[], Any], catch: type[BaseException] | None
    ) -> Callable[[int], int]:
        def run(n: int) -> int:
            start = time.perf_counter_ns()
            if catch is None:
                for _ in range(n):
                    fn()
            else:
                for _ in range(n):
                    try:  # noqa: SIM105 - contextlib.suppress would be timed too
                        fn()
                    except catch:
                        pass
            return time.perf_counter_ns() - start

        return run

    def _async_loop(
        self, fn: Callable[[], Awaitable[Any]], catch: type[BaseException] | None
    ) -> Callable[[int], int]:
        async def loop(n: int) -> int:
            start = time.perf_counter_ns()
            if catch is None:
                for _ in range(n):
                    await fn()
            else:
                for _ in range(n):
                    try:  # noqa: SIM105 - contextlib.suppress would be timed too
                        await fn()
                    except catch:
                        pass
            return time.perf_counter_ns() - start

        return lambda n: self.runner.run(loop(n))

    def _measure(
        self, run: Callable[[int], int], base: Callable[[int], int] | None
    ) -> tuple[float, float | None]:
        warm = max(1, self.calls // 20)
        run(warm)
        if base is not None:
            base(warm)
        cases: list[float] = []
        added: list[float] = []
        ratios: list[float] = []
        for _ in range(self.samples):
            gc.collect()
            gc.disable()
            try:
                b = base(self.calls) / self.calls if base is not None else 0.0
                c = run(self.calls) / self.calls
            finally:
                gc.enable()
            cases.append(c)
            added.append(c - b)
            if b:
                ratios.append(c / b)
        self._ratio = statistics.median(ratios) if ratios else None
        return statistics.median(cases), statistics.median(added) if base is not None else None

    def sync(
        self,
        fn: Callable[[], Any],
        catch: type[BaseException] | None = None,
        base: Callable[[], Any] | None = None,
    ) -> tuple[float, float | None]:
        """(median ns per call, median ns added over ``base``)."""
        catch = Exception if catch else None  # the same except clause for case and baseline
        return self._measure(
            self._sync_loop(fn, catch), self._sync_loop(base, catch) if base else None
        )

    def aio(
        self,
        fn: Callable[[], Awaitable[Any]],
        catch: type[BaseException] | None = None,
        base: Callable[[], Awaitable[Any]] | None = None,
    ) -> tuple[float, float | None]:
        """The same for coroutine functions, on one event loop."""
        catch = Exception if catch else None
        return self._measure(
            self._async_loop(fn, catch), self._async_loop(base, catch) if base else None
        )

    def add(
        self, scenario: str, mode: str, name: str, measured: tuple[float, float | None]
    ) -> None:
        ns, added = measured
        self.rows.append((scenario, mode, name, ns, added))
        shown = "" if added is None else f"{added:+,.0f}"
        ratio, self._ratio = self._ratio, None
        times = ""
        if ratio is not None and added is not None:
            self.ratios[(scenario, mode, name)] = ratio
            times = f" {ratio:>6.2f}x" if scenario == "fails-twice" else ""
        print(f"  {scenario:<12} {mode:<5} {name:<44} {ns:>10,.0f} {shown:>10}{times}", flush=True)


def counter_fails_twice(exc: type[Exception] = ConnectionError) -> Callable[[], int]:
    n = 0

    def body() -> int:
        nonlocal n
        n += 1
        if n % 3:
            raise exc("down")
        return n

    return body


def success_path(b: Bench) -> None:
    print("success path: ns per call, ns added over the raw call")

    def raw() -> int:
        return 1

    async def araw() -> int:
        return 1

    b.add("success", "sync", "raw call", b.sync(raw))
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("tenacity @retry", tenacity.retry(stop=tenacity.stop_after_attempt(3))(raw)),
        ("stamina @retry", stamina.retry(on=ConnectionError, attempts=3)(raw)),
        ("circuitbreaker @circuit", circuitbreaker.circuit(failure_threshold=5)(raw)),
        ("pybreaker", pybreaker.CircuitBreaker(fail_max=5)(raw)),
        (
            "naive stack (tenacity ∘ pybreaker)",
            tenacity.retry(stop=tenacity.stop_after_attempt(3))(
                pybreaker.CircuitBreaker(fail_max=5)(raw)
            ),
        ),
        ("resilient @breaker", resilient.breaker("bench-s-b")(raw)),
        ("resilient @retry", resilient.retry(name="bench-s-r")(raw)),
        ("resilient @fallback", resilient.fallback(value=0)(raw)),
        ("resilient retry ∘ breaker", resilient.retry()(resilient.breaker("bench-s-rb")(raw))),
        (
            "resilient @resilient (fb ∘ retry ∘ breaker)",
            resilient.resilient("bench-s-full", value=0)(raw),
        ),
        ("resilient @timeout (worker thread)", resilient.timeout(5)(raw)),
        ("resilient @bulkhead", resilient.bulkhead("bench-s-bh", max_concurrent=8)(raw)),
    ]
    for name, fn in cases:
        b.add("success", "sync", name, b.sync(fn, base=raw))

    b.add("success", "async", "raw await", b.aio(araw))
    apb = pybreaker.CircuitBreaker(fail_max=5)

    async def pybreaker_async() -> int:
        with apb.calling():
            return await araw()

    npb = pybreaker.CircuitBreaker(fail_max=5)

    @tenacity.retry(stop=tenacity.stop_after_attempt(3))
    async def naive_async() -> int:
        with npb.calling():
            return await araw()

    acases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("tenacity @retry", tenacity.retry(stop=tenacity.stop_after_attempt(3))(araw)),
        ("stamina @retry", stamina.retry(on=ConnectionError, attempts=3)(araw)),
        ("circuitbreaker @circuit", circuitbreaker.circuit(failure_threshold=5)(araw)),
        ("pybreaker (with calling())", pybreaker_async),
        ("naive stack (tenacity ∘ pybreaker)", naive_async),
        ("resilient @breaker", resilient.breaker("bench-a-b")(araw)),
        ("resilient @retry", resilient.retry(name="bench-a-r")(araw)),
        ("resilient @fallback", resilient.fallback(value=0)(araw)),
        ("resilient @timeout", resilient.timeout(5)(araw)),
        ("resilient @bulkhead", resilient.bulkhead("bench-a-bh", max_concurrent=8)(araw)),
        ("resilient retry ∘ breaker", resilient.retry()(resilient.breaker("bench-a-rb")(araw))),
        (
            "resilient @resilient (fb ∘ retry ∘ breaker)",
            resilient.resilient("bench-a-full", value=0)(araw),
        ),
        (
            "resilient @resilient + timeout",
            resilient.resilient("bench-a-fullt", value=0, timeout=5)(araw),
        ),
    ]
    for name, afn in acases:
        b.add("success", "async", name, b.aio(afn, base=araw))


ACCOUNT = {
    "id": "A-1",
    "cash": 1000.0,
    "equity": 2500.5,
    "positions": [
        {"symbol": "AAPL", "qty": 10, "price": 190.1},
        {"symbol": "MSFT", "qty": 5, "price": 410.0},
    ],
    "status": "ACTIVE",
}


def cache_path(b: Bench) -> None:
    print("fallback(cache=True) success path: ns per call, ns added over the raw call")

    def price(symbol: str) -> float:
        return 101.25

    def account(account_id: str) -> dict[str, Any]:
        return ACCOUNT

    async def aprice(symbol: str) -> float:
        return 101.25

    async def aaccount(account_id: str) -> dict[str, Any]:
        return ACCOUNT

    cached_price = resilient.fallback(cache=True, name="bench-c-p")(price)
    cached_account = resilient.fallback(cache=True, name="bench-c-a")(account)
    b.add(
        "cache",
        "sync",
        "@fallback(cache=True) float result",
        b.sync(lambda: cached_price("AAPL"), base=lambda: price("AAPL")),
    )
    b.add(
        "cache",
        "sync",
        "@fallback(cache=True) account dict (copied)",
        b.sync(lambda: cached_account("A-1"), base=lambda: account("A-1")),
    )
    acached_price = resilient.fallback(cache=True, name="bench-c-ap")(aprice)
    acached_account = resilient.fallback(cache=True, name="bench-c-aa")(aaccount)
    b.add(
        "cache",
        "async",
        "@fallback(cache=True) float result",
        b.aio(lambda: acached_price("AAPL"), base=lambda: aprice("AAPL")),
    )
    b.add(
        "cache",
        "async",
        "@fallback(cache=True) account dict (copied)",
        b.aio(lambda: acached_account("A-1"), base=lambda: aaccount("A-1")),
    )


def rejection_path(b: Bench) -> None:
    print("open-circuit rejection: ns per call, ns added over a plain raise + except")

    def raises() -> None:
        raise RuntimeError("down")

    async def araises() -> None:
        raise RuntimeError("down")

    def ok() -> int:
        return 1

    async def aok() -> int:
        return 1

    b.add("rejection", "sync", "raise + except (undecorated function)", b.sync(raises, Exception))
    pb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=3600)
    pb.open()
    cb = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=3600, name="s")
    cb._state = circuitbreaker.STATE_OPEN
    cb._opened = time.monotonic()
    for name in ("bench-r-s", "bench-r-ss"):
        resilient.breaker(name)
        breakers.force_open(name)
    cases: list[tuple[str, Callable[[], Any], type[BaseException]]] = [
        ("pybreaker", pb(ok), pybreaker.CircuitBreakerError),
        ("circuitbreaker", cb(ok), circuitbreaker.CircuitBreakerError),
        ("resilient @breaker", resilient.breaker("bench-r-s")(ok), resilient.CircuitOpenError),
        (
            "resilient retry ∘ breaker",
            resilient.retry()(resilient.breaker("bench-r-ss")(ok)),
            resilient.CircuitOpenError,
        ),
    ]
    for name, fn, exc in cases:
        b.add("rejection", "sync", name, b.sync(fn, exc, base=raises))

    b.add("rejection", "async", "raise + except (undecorated coroutine)", b.aio(araises, Exception))
    apb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=3600)
    apb.open()

    async def pybreaker_async() -> int:
        with apb.calling():
            return await aok()

    acb = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=3600, name="a")
    acb._state = circuitbreaker.STATE_OPEN
    acb._opened = time.monotonic()
    for name in ("bench-r-a", "bench-r-aa"):
        resilient.breaker(name)
        breakers.force_open(name)
    acases: list[tuple[str, Callable[[], Awaitable[Any]], type[BaseException]]] = [
        ("pybreaker (with calling())", pybreaker_async, pybreaker.CircuitBreakerError),
        ("circuitbreaker", acb(aok), circuitbreaker.CircuitBreakerError),
        ("resilient @breaker", resilient.breaker("bench-r-a")(aok), resilient.CircuitOpenError),
        (
            "resilient retry ∘ breaker",
            resilient.retry()(resilient.breaker("bench-r-aa")(aok)),
            resilient.CircuitOpenError,
        ),
    ]
    for name, afn, exc in acases:
        b.add("rejection", "async", name, b.aio(afn, exc, base=araises))


def fails_twice(b: Bench) -> None:
    print(
        "fails twice, then succeeds (zero wait): ns per whole call, ns added over a hand loop,"
        " times the hand loop's cost"
    )
    zero = {"initial_delay": 0, "max_delay": 0, "budget": False}

    def hand_loop(body: Callable[[], int]) -> Callable[[], int]:
        def call() -> int:
            for attempt in range(3):
                try:
                    return body()
                except ConnectionError:
                    if attempt == 2:
                        raise
            raise AssertionError

        return call

    def ahand_loop(body: Callable[[], int]) -> Callable[[], Awaitable[int]]:
        async def inner() -> int:
            return body()

        async def call() -> int:
            for attempt in range(3):
                try:
                    return await inner()
                except ConnectionError:
                    if attempt == 2:
                        raise
            raise AssertionError

        return call

    def as_async(body: Callable[[], int]) -> Callable[[], Awaitable[int]]:
        async def fn() -> int:
            return body()

        return fn

    def tenacity_retry(fn: Any) -> Any:
        return tenacity.retry(
            stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none(), reraise=True
        )(fn)

    def stamina_retry(fn: Any) -> Any:
        return stamina.retry(
            on=ConnectionError, attempts=3, wait_initial=0, wait_max=0, wait_jitter=0
        )(fn)

    def naive(body: Callable[[], int]) -> Callable[[], int]:
        return tenacity_retry(pybreaker.CircuitBreaker(fail_max=100)(body))

    def anaive(body: Callable[[], int]) -> Callable[[], Awaitable[int]]:
        cb = pybreaker.CircuitBreaker(fail_max=100)

        async def guarded() -> int:
            with cb.calling():
                return body()

        return tenacity_retry(guarded)  # type: ignore[no-any-return]

    def plain_retry(f: Any) -> Any:
        return resilient.retry(max_attempts=3, **zero)(f)

    # hooks: "default" (as installed), "none" (suspended), "retry hook" (a user hook that
    # asks for retry events, so each retry builds a PolicyEvent)
    builders: list[tuple[str, Callable[[Callable[[], int]], Callable[[], Any]], str]] = [
        ("hand-written 3-attempt loop", hand_loop, "default"),
        ("tenacity @retry", tenacity_retry, "default"),
        ("stamina @retry", stamina_retry, "default"),
        ("naive stack (tenacity ∘ pybreaker)", naive, "default"),
        ("resilient @retry", plain_retry, "default"),
        ("resilient @retry, no hooks", plain_retry, "none"),
        ("resilient @retry, a user hook on retries", plain_retry, "retry hook"),
        (
            "resilient @retry(retry_on=type)",
            lambda f: resilient.retry(max_attempts=3, retry_on=ConnectionError, **zero)(f),
            "default",
        ),
        (
            "resilient @resilient (fb ∘ retry ∘ breaker)",
            lambda f: resilient.resilient(
                f"bench-f2-{id(f)}", value=0, max_attempts=3, failure_threshold=100, **zero
            )(f),
            "default",
        ),
    ]

    def hooks_as(mode: str) -> contextlib.AbstractContextManager[Any]:
        if mode == "none":
            return _hooks.suspended()
        if mode == "retry hook":
            stack = contextlib.ExitStack()
            stack.callback(_hooks.add_hook(lambda event: None, kinds=["retry"]))
            return stack
        return contextlib.nullcontext()

    builders = [row for row in builders if row[1] is hand_loop or b.match in row[0]]
    # Every row but the hand-written loop alternates its samples with that loop's, so the
    # "added" column (cost over a hand-written loop) holds even when the machine is noisy.
    for name, build, with_hooks in builders:
        fn = build(counter_fails_twice())
        base = None if build is hand_loop else hand_loop(counter_fails_twice())
        with hooks_as(with_hooks):
            b.add("fails-twice", "sync", name, b.sync(fn, base=base))
    for name, build, with_hooks in builders:
        body = counter_fails_twice()
        if build is hand_loop:
            afn = ahand_loop(body)
        elif build is naive:
            afn = anaive(body)
        else:
            afn = build(as_async(body))
        abase = None if build is hand_loop else ahand_loop(counter_fails_twice())
        with hooks_as(with_hooks):
            b.add("fails-twice", "async", name, b.aio(afn, base=abase))


def otel_overhead(b: Bench) -> None:
    """The full stack's success and fails-twice paths with OpenTelemetry installed and not,
    and the cost of the opt-in spans."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from resilient import otel

    print("OpenTelemetry: ns per call, ns added over the raw call (success) / hand loop (fails)")

    async def araw() -> int:
        return 1

    stack = resilient.resilient("bench-otel", value=0)(araw)
    zero = {"initial_delay": 0, "max_delay": 0, "budget": False}
    failing = resilient.retry(max_attempts=3, **zero)(
        resilient.breaker("bench-otel-f", failure_threshold=10**9)(_as_async(counter_fails_twice()))
    )
    spans = otel.instrument("bench-otel-s", value=0)(araw)

    def install() -> None:
        otel.install(MeterProvider(metric_readers=[InMemoryMetricReader()]), TracerProvider())

    for label, on in (("otel off", False), ("otel installed", True)):
        if on:
            install()
        b.add("otel", "async", f"@resilient success, {label}", b.aio(stack, base=araw))
        b.add("otel", "async", f"retry ∘ breaker fails twice, {label}", b.aio(failing))
        if on:
            b.add("otel", "async", "otel.instrument (2 spans per call)", b.aio(spans, base=araw))
            otel.uninstall()


def _as_async(body: Callable[[], int]) -> Callable[[], Awaitable[int]]:
    async def fn() -> int:
        return body()

    return fn


async def _local_server(handler: Callable[..., Awaitable[Any]]) -> tuple[Any, str]:
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/"


async def _bulkhead_orders(priorities: bool) -> list[float]:
    name = f"bench-burst-{priorities}"
    resilient.get_bulkhead(
        name, max_concurrent=4, max_queue=400, queue_timeout=10.0, priorities=priorities
    )
    stop = False

    @resilient.bulkhead(name, priority="read")
    async def read() -> None:
        await asyncio.sleep(0.01)

    @resilient.bulkhead(name, priority="order")
    async def order() -> None:
        await asyncio.sleep(0.001)

    async def reader() -> None:
        while not stop:
            await read()

    workers = [asyncio.ensure_future(reader()) for _ in range(100)]
    await asyncio.sleep(0.05)
    latencies = []
    for _ in range(20):
        started = time.perf_counter()
        await order()
        latencies.append(time.perf_counter() - started)
    stop = True
    await asyncio.gather(*workers)
    return latencies


async def _rate_limit_run(feedback: str, neighbour: int, seconds: float = 3.0) -> dict[str, Any]:
    """Four workers with weights 1..6 under "60/second" against a venue counting 60 per 1 s
    window, while a neighbour (another program on the key) spends ``neighbour`` at the start
    of each window. ``feedback``: "none", "429" (block on 429 only) or "429+usage"."""
    import random

    import aiohttp
    from aiohttp import web

    from resilient.trading import RateLimitExceeded, ServiceRateLimiter

    venue = {"start": time.monotonic(), "used": 0, "peak": 0, "too_many": 0, "counted": 0}

    async def handle(request: web.Request) -> web.Response:
        now = time.monotonic()
        if now - venue["start"] >= 1.0:
            venue["start"] += 1.0 * int((now - venue["start"]) // 1.0)
            venue["used"] = 0
        weight = int(request.query.get("w", "1"))
        reset = 1.0 - (now - venue["start"])
        if venue["used"] + weight > 60:
            venue["too_many"] += 1
            return web.Response(status=429, headers={"Retry-After": f"{reset:.3f}"})
        venue["used"] += weight
        venue["peak"] = max(venue["peak"], venue["used"])
        if request.query.get("mine"):
            venue["counted"] += weight
        return web.Response(text="ok", headers={"X-MBX-USED-WEIGHT-1M": str(venue["used"])})

    runner, url = await _local_server(handle)
    rng = random.Random(3)
    limiter = ServiceRateLimiter(
        f"bench-rl-{feedback}-{neighbour}",
        "60/second",
        max_wait=2.0,
        used_header="X-MBX-USED-WEIGHT-1M" if feedback == "429+usage" else "",
        remaining_header="",
    )
    sent = {"weight": 0, "refused": 0}
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:

        class Client:
            last_response_headers: Any = None

            async def call(self, weight: int) -> None:
                params = {"w": str(weight), "mine": "1"}
                async with session.get(url, params=params) as response:
                    self.last_response_headers = response.headers
                    response.raise_for_status()

        client = Client()
        call = client.call if feedback == "none" else limiter.watch(client.call, True, client)

        async def worker() -> None:
            while time.monotonic() < stop:
                weight = rng.randint(1, 6)
                try:
                    await limiter.acquire(weight)
                    await call(weight)
                    sent["weight"] += weight
                except (RateLimitExceeded, aiohttp.ClientResponseError):
                    sent["refused"] += 1

        async def other() -> None:
            while neighbour and time.monotonic() < stop:
                async with session.get(url, params={"w": str(neighbour)}):
                    pass
                next_window = venue["start"] + 1.0 + 0.005
                await asyncio.sleep(max(0.0, next_window - time.monotonic()))

        await asyncio.gather(*(worker() for _ in range(4)), other())
    await runner.cleanup()
    return {**venue, "sent": sent["weight"], "limit_per_window": 60}


async def _hedge_run(hedged: bool, calls: int = 400) -> tuple[float, float, float]:
    import random

    import aiohttp
    from aiohttp import web

    rng = random.Random(17)
    served = [0]

    async def handle(request: web.Request) -> web.Response:
        served[0] += 1
        await asyncio.sleep(0.2 if rng.random() < 0.05 else 0.002)
        return web.Response(text="ok")

    runner, url = await _local_server(handle)
    async with aiohttp.ClientSession() as session:

        async def get_quote() -> str:
            async with session.get(url) as response:
                return await response.text()

        name = f"bench-hedge-{hedged}-{time.monotonic()}"
        fn = resilient.hedge("p95", name=name)(get_quote) if hedged else get_quote
        from resilient._policies.retry import get_retry_budget

        get_retry_budget(name).min_per_second = 1000.0
        latencies: list[float] = []

        async def worker(n: int) -> None:
            for _ in range(n):
                started = time.perf_counter()
                await fn()
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker(calls // 4) for _ in range(4)))
        await asyncio.sleep(0.3)
    await runner.cleanup()
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return p50, p99, served[0] / calls


def load_control() -> None:
    """Priorities under a read burst, rate-limit accuracy and hedging, on local sockets."""
    print("load control (real sockets on 127.0.0.1)")
    for priorities in (False, True):
        lat = asyncio.run(_bulkhead_orders(priorities))
        print(
            f"  bulkhead   order latency under 100 readers, 4 slots, priorities={priorities!s:<5}"
            f" p50 {statistics.median(lat) * 1000:7.1f} ms  max {max(lat) * 1000:7.1f} ms"
        )
    for feedback, neighbour in (("429+usage", 0), ("none", 30), ("429", 30), ("429+usage", 30)):
        r = asyncio.run(_rate_limit_run(feedback, neighbour))
        print(
            f"  ratelimit  feedback={feedback:<9} neighbour={neighbour:>2}/window: limiter let "
            f"out {r['sent']} weight, venue counted {r['counted']} of it; venue 429s "
            f"{r['too_many']}; busiest window {r['peak']}/{r['limit_per_window']}"
        )
    for hedged in (False, True):
        p50, p99, load = asyncio.run(_hedge_run(hedged))
        print(
            f"  hedging    hedged={hedged!s:<5} (p95 delay) p50 {p50 * 1000:6.1f} ms  p99 "
            f"{p99 * 1000:6.1f} ms  requests per call {load:.3f}"
        )


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_growth(calls: int) -> float:
    print(f"memory: resident-set growth over {calls:,} rejected calls")

    def ok() -> int:
        return 1

    fn = resilient.breaker("bench-mem")(ok)
    breakers.force_open("bench-mem")
    for _ in range(10_000):
        try:  # noqa: SIM105 - contextlib.suppress would be timed too
            fn()
        except resilient.CircuitOpenError:
            pass
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    for _ in range(calls):
        try:  # noqa: SIM105 - contextlib.suppress would be timed too
            fn()
        except resilient.CircuitOpenError:
            pass
    gc.collect()
    grown = rss_bytes() - before
    took = time.perf_counter() - start
    rejected = breakers.get("bench-mem").snapshot().rejected_calls
    print(
        f"  rejected {rejected:,} calls in {took:.2f}s; RSS grew {grown / 2**20:.2f} MiB "
        f"(target < 5 MiB)"
    )
    return grown / 2**20


TARGETS = [
    (
        "full async stack, added",
        "success",
        "async",
        "resilient @resilient (fb ∘ retry ∘ breaker)",
        800.0,
        True,
    ),
    ("sync retry ∘ breaker, added", "success", "sync", "resilient retry ∘ breaker", 600.0, True),
    (
        "open-circuit rejection (sync), added",
        "rejection",
        "sync",
        "resilient @breaker",
        500.0,
        True,
    ),
    (
        "open-circuit rejection (async), added",
        "rejection",
        "async",
        "resilient @breaker",
        500.0,
        True,
    ),
    ("fails twice async, whole call", "fails-twice", "async", "resilient @retry", 4000.0, False),
]


RATIO_TARGETS = [
    ("fails twice async, x hand loop", "fails-twice", "async", "resilient @retry", 2.5),
]


def summary(
    rows: list[tuple[str, str, str, float, float | None]],
    ratios: dict[tuple[str, str, str], float],
    grown_mib: float,
    calls: int,
) -> None:
    """The targets next to what this run measured."""
    print("targets")
    found = {(s, m, n): (ns, added) for s, m, n, ns, added in rows}
    for label, scenario, mode, name, target, use_added in TARGETS:
        ns, added = found[(scenario, mode, name)]
        value = added if use_added and added is not None else ns
        verdict = "met" if value <= target else "MISSED"
        print(f"  {label:<44} {value:>10,.0f} ns  (≤ {target:,.0f})  {verdict}")
    for label, scenario, mode, name, bound in RATIO_TARGETS:
        ratio = ratios[(scenario, mode, name)]
        verdict = "met" if ratio <= bound else "MISSED"
        print(f"  {label:<44} {ratio:>10.2f} x   (≤ {bound})  {verdict}")
    verdict = "met" if grown_mib < 5 else "MISSED"
    print(
        f"  {'memory growth, ' + format(calls, ',') + ' rejections':<44} "
        f"{grown_mib:>10.2f} MiB (< 5)  {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (fewer calls/samples)")
    parser.add_argument("--samples", type=int, default=None, help="samples per case")
    parser.add_argument(
        "--only",
        choices=("success", "rejection", "cache", "fails-twice", "memory", "otel", "load"),
        help="run one scenario (no target summary)",
    )
    parser.add_argument(
        "--match", default="", help="fails-twice: only the cases whose name contains this"
    )
    args = parser.parse_args(argv)
    calls, samples, mem_calls = (20_000, 5, 100_000) if args.quick else (100_000, 11, 1_000_000)
    if args.samples:
        samples = args.samples
    b = Bench(calls, samples)
    b.match = args.match
    print(
        f"python {sys.version.split()[0]}, resilient {resilient.__version__}, "
        + ", ".join(
            f"{m} {version(m)}" for m in ("tenacity", "pybreaker", "stamina", "circuitbreaker")
        )
        + f"; {calls:,} calls x {samples} samples (median)"
    )
    print(f"  {'scenario':<12} {'mode':<5} {'case':<44} {'ns/call':>10} {'added':>10}")
    if args.only:
        if args.only == "success":
            success_path(b)
        elif args.only == "rejection":
            rejection_path(b)
        elif args.only == "cache":
            cache_path(b)
        elif args.only == "fails-twice":
            b.calls = max(2_000, calls // 5)
            fails_twice(b)
        elif args.only == "otel":
            b.calls = max(2_000, calls // 5)
            otel_overhead(b)
        elif args.only == "load":
            load_control()
        else:
            memory_growth(mem_calls)
        b.close()
        return 0
    success_path(b)
    rejection_path(b)
    cache_path(b)
    b_fail = Bench(max(2_000, calls // 5), samples)
    b_fail.match = args.match
    fails_twice(b_fail)
    otel_overhead(b_fail)
    b_fail.close()
    b.close()
    b.rows.extend(b_fail.rows)
    b.ratios.update(b_fail.ratios)
    grown = memory_growth(mem_calls)
    load_control()
    summary(b.rows, b.ratios, grown, mem_calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
