"""Data-layer figures: db-layer overhead per query, Redis cache reads, Redis round trips of a
shared breaker, and recovery time after a PostgreSQL restart.

Usage: ``python bench/data.py [--quick]`` (``nox -s bench``). Needs the PostgreSQL server at
127.0.0.1:5432 (database ``test``) and Redis at 127.0.0.1:6379 (DB 15, keys under a unique
prefix, deleted afterwards); the restart figure starts a throwaway PostgreSQL cluster. A part
whose server is missing is reported as skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import time
import uuid

os.environ.setdefault("AI_TRADER_ENV", "testing")

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from resilient import breaker, breakers
from resilient._backends.redis import RedisCache, close_workers
from resilient._backends.shared_state import RedisSharedState
from resilient.config import reload_config
from resilient.db import Database

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/15"


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def db_overhead(n: int, rounds: int) -> dict[str, float]:
    """µs per ``SELECT 1`` (best of ``rounds`` interleaved runs, robust to a loaded machine):
    raw SQLAlchemy on its own engine, raw on the layer's engine (with its query-timing
    events), and ``Database.scalar``."""
    db = Database.from_config(url=PG_URL, application_name="bench-data")
    await db.start(register_health=False)
    raw_engine = create_async_engine(PG_URL, **db.engine_options())
    stmt = text("SELECT 1")

    async def raw() -> None:
        async with raw_engine.connect() as conn:
            await conn.scalar(stmt)

    async def same() -> None:
        async with db.engine.connect() as conn:
            await conn.scalar(stmt)

    async def layer() -> None:
        await db.scalar(stmt)

    cases = {"raw": raw, "same": same, "layer": layer}
    for fn in cases.values():  # warm the pools
        for _ in range(50):
            await fn()
    results: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(rounds):
        for label, fn in cases.items():
            started = time.perf_counter()
            for _ in range(n):
                await fn()
            results[label].append((time.perf_counter() - started) / n * 1e6)
    await raw_engine.dispose()
    await db.close()
    best = {label: min(values) for label, values in results.items()}
    return {
        "raw_us": best["raw"],
        "same_us": best["same"],
        "layer_us": best["layer"],
        "overhead_us": best["layer"] - best["raw"],
    }


async def cache_reads(n: int) -> dict[str, float]:
    """Latency of ``RedisCache.get`` served from Redis (a fresh process's view)."""
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    writer = RedisCache(REDIS_URL, prefix=prefix)
    reader = RedisCache(REDIS_URL, prefix=prefix)
    await writer.set("quote:AAPL", {"price": 187.25, "ts": time.time()}, 60.0)
    assert writer.worker is not None
    await writer.worker.drain()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        entry = await reader.entry("quote:AAPL")
        samples.append(time.perf_counter() - started)
        assert entry is not None and entry.source == "redis"
    await writer.delete("quote:AAPL")
    return {"p50_us": pct(samples, 0.5) * 1e6, "p99_us": pct(samples, 0.99) * 1e6}


async def shared_round_trips(n: int) -> dict[str, float]:
    """Redis round trips per call of a closed shared breaker (steady state)."""
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    os.environ["AI_TRADER_REDIS__URL"] = REDIS_URL
    os.environ["AI_TRADER_REDIS__KEY_PREFIX"] = prefix
    reload_config()
    from resilient._policies.breaker_storage import set_shared_backend

    state = RedisSharedState(REDIS_URL, prefix=prefix)
    previous = set_shared_backend(state)
    name = f"bench-shared-{uuid.uuid4().hex[:6]}"

    @breaker(name, shared=True)
    async def call() -> int:
        return 1

    try:
        await call()
        for _ in range(200):
            if state.healthy:
                break
            await asyncio.sleep(0.01)
        before, started = state.worker.round_trips, time.perf_counter()
        for _ in range(n):
            await call()
        elapsed = time.perf_counter() - started
        trips = state.worker.round_trips - before
    finally:
        breakers.remove(name)
        set_shared_backend(previous)
        await state.reset(name)  # leaves one key; removed below
        client = state.worker
        await client.call(
            lambda r: r.delete(f"{prefix}:breaker:{name}", f"{prefix}:breaker:{name}:permits")
        )
        state.close()
        del os.environ["AI_TRADER_REDIS__URL"], os.environ["AI_TRADER_REDIS__KEY_PREFIX"]
        reload_config()
    return {
        "calls": n,
        "round_trips": trips,
        "per_call": trips / n,
        "calls_per_s": n / elapsed,
        "us_per_call": elapsed / n * 1e6,
    }


async def pg_recovery(repeats: int) -> dict[str, float]:
    """Seconds from a PostgreSQL restart (server back) to the first successful query, and from
    the stop to that query, through a warm pool."""
    from resilient.testing.servers import postgres_server

    back_to_ok, stop_to_ok = [], []
    with postgres_server() as pg:
        db = Database.from_config(url=pg.url, application_name="bench-restart")
        await db.start(register_health=False)
        await asyncio.gather(*(db.scalar("SELECT 1") for _ in range(5)))
        for _ in range(repeats):
            stopped = time.perf_counter()
            await pg.astop("fast")
            await pg.astart()
            back = time.perf_counter()
            while True:
                try:
                    await db.scalar("SELECT 1")
                    break
                except Exception:
                    await asyncio.sleep(0.005)
            ok = time.perf_counter()
            back_to_ok.append(ok - back)
            stop_to_ok.append(ok - stopped)
        await db.close()
    return {
        "back_to_first_ok_ms": statistics.median(back_to_ok) * 1000,
        "stop_to_first_ok_ms": statistics.median(stop_to_ok) * 1000,
    }


async def main(quick: bool) -> None:
    n = 300 if quick else 2000
    print("resilient data layer" + (" (quick)" if quick else ""))
    print("-" * 72)
    if reachable(5432):
        r = await db_overhead(n // 4, 3 if quick else 7)
        print(
            f"db query SELECT 1        raw SQLAlchemy {r['raw_us']:8.1f} µs   "
            f"(same engine {r['same_us']:.1f} µs)   resilient.db {r['layer_us']:8.1f} µs   "
            f"overhead {r['overhead_us']:+7.1f} µs"
        )
        rec = await pg_recovery(2 if quick else 5)
        print(
            f"PostgreSQL restart       first query OK {rec['back_to_first_ok_ms']:6.1f} ms "
            f"after the server is back ({rec['stop_to_first_ok_ms']:.0f} ms after the stop)"
        )
    else:
        print("db: skipped (PostgreSQL not reachable at 127.0.0.1:5432)")
    if reachable(6379):
        c = await cache_reads(n)
        print(f"cache get from Redis     p50 {c['p50_us']:7.1f} µs   p99 {c['p99_us']:7.1f} µs")
        s = await shared_round_trips(n * 10)
        print(
            f"shared breaker (closed)  {s['per_call']:.5f} Redis round trips/call "
            f"({s['round_trips']} for {s['calls']} calls, {s['us_per_call']:.2f} µs/call)"
        )
    else:
        print("redis: skipped (Redis not reachable at 127.0.0.1:6379)")
    close_workers()


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args, _ = parser.parse_known_args(argv)
    asyncio.run(main(args.quick))


if __name__ == "__main__":
    cli()
