"""Scale-out figures on throwaway servers (2 cores: process counts scaled, ratios reported).

Usage: ``python bench/scale.py [--quick] [--only NAME] [--breakdown] [--processes N ...]``
(``nox -s bench``); NAME is one of ``propagation``, ``idle``, ``budget``, ``blackhole``.

- propagation: N processes share one breaker (a call every 5 ms each); one trips it. Trip
  propagation p50/p99 (first rejection in each peer after the trip) and the number of trial
  calls in the half-open window across all processes (target: exactly the permits, 1), and
  the CPU each process used around the trip. ``--breakdown`` adds when the trip reached Redis,
  each peer's listener and each peer's breaker, next to plain redis-py pub/sub delivery to as
  many processes on the same machine (what scheduling alone costs).
- idle: processes watching 10, 1,000 and 10,000 breaker names sit idle: CPU per process, Redis
  commands per second (a private server: its count is theirs alone), share of health samples
  that say healthy.
- budget: workers under a total outage (every call fails, 3 attempts, no wait), the retry
  budget cluster-wide vs per process: attempts per request.
- blackhole: time from a black-holed PostgreSQL (``command_timeout = 1``) to an open breaker
  (``failure_threshold = 3``) against its bound, 3 × ``DB_BUDGET_FACTOR`` × 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import queue
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("AI_TRADER_ENV", "testing")

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "faults")]  # this checkout's package first


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _spawn(target: Any, args_of: Any, count: int, timeout: float = 120.0) -> tuple[Any, Any]:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=args_of(i, ctx), daemon=True) for i in range(count)]
    for p in procs:
        p.start()
    return ctx, procs


def _join(procs: list[Any]) -> None:
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()


def _wait_ready(ready: Any, procs: list[Any], count: int, limit: float = 180.0) -> None:
    deadline = time.monotonic() + limit
    got = 0
    while got < count:
        try:
            ready.get(timeout=0.5)
            got += 1
        except queue.Empty:
            dead = [i for i, p in enumerate(procs) if not p.is_alive()]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start (dead: {dead})") from None


# -- propagation and half-open trials ---------------------------------------------------------


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a child process (Linux ``/proc``)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def propagation(url: str, workers: int, breakdown: bool = False) -> dict[str, float]:
    from _shared_worker import RESET, run_worker

    if breakdown:  # the workers trace deliveries and transitions; the scripts log publishes
        os.environ["RESILIENT_TRACE"] = "1"
    ctx = multiprocessing.get_context("spawn")
    mode, stop = ctx.Value("i", 0), ctx.Event()
    ready, out = ctx.Queue(), ctx.Queue()
    name, prefix = f"prop-{uuid.uuid4().hex[:6]}", f"bs-{uuid.uuid4().hex[:6]}"
    procs = [
        ctx.Process(
            target=run_worker,
            args=(i, url, prefix, name, mode, stop, ready, out),
            daemon=True,
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    gathered: dict[int, Any] = {}
    try:
        _wait_ready(ready, procs, workers)
        time.sleep(0.2)
        cpu0, wall0 = [_cpu_seconds(p.pid) for p in procs], time.monotonic()
        mode.value = 1  # worker 0's dependency fails: it trips the shared breaker
        time.sleep(0.4)
        cpu1, wall1 = [_cpu_seconds(p.pid) for p in procs], time.monotonic()
        mode.value = 2  # down for everyone: the half-open trial fails
        time.sleep(RESET + 0.3)
        mode.value = 0
        time.sleep(RESET + 0.4)
        stop.set()
        for _ in range(workers):
            idx, events, invoked, _trips, trace = out.get(timeout=60)
            gathered[idx] = (events, invoked, trace)
    finally:
        stop.set()
        _join(procs)
        os.environ.pop("RESILIENT_TRACE", None)
    events0 = gathered[0][0]
    first_reject = next(i for i, (_, what) in enumerate(events0) if what == "rejected")
    tripped = max(t for t, what in events0[:first_reject] if what == "fail")
    lags = []
    for i in range(1, workers):
        rejected = [t for t, what in gathered[i][0] if what == "rejected" and t > tripped]
        if rejected:
            lags.append(min(rejected) - tripped)
    trials = [
        t
        for _, invoked, _ in gathered.values()
        for t in invoked
        if tripped + RESET - 0.05 < t < tripped + RESET + 0.6  # the half-open window
    ]
    found = {
        "p50_ms": pct(lags, 0.5) * 1000,
        "p99_ms": pct(lags, 0.99) * 1000,
        "trials": float(len(trials)),
        "peers": float(len(lags)),
    }
    cpu = [(b - a) / (wall1 - wall0) * 100 for a, b in zip(cpu0, cpu1, strict=True) if a and b]
    found["cpu_pct"] = statistics.mean(cpu) if cpu else float("nan")
    if breakdown:
        found.update(_stages(url, gathered, tripped, workers))
    return found


def _stages(url: str, gathered: dict[int, Any], tripped: float, workers: int) -> dict[str, float]:
    """When the trip reached Redis (its clock), each peer's listener, each peer's breaker."""
    import redis as redis_sync

    client = redis_sync.Redis.from_url(url, decode_responses=True)
    try:
        logs = [str(x) for x in client.lrange("tracelog", 0, -1)]
        client.delete("tracelog")
    finally:
        client.close()
    published = float("nan")
    for line in logs:  # "<worker> <seconds>.<microseconds> publish open v<version>"
        idx, stamp, *what = line.split()
        if idx == "0" and what[:2] == ["publish", "open"]:
            secs, micros = stamp.split(".")
            published = (int(secs) + int(micros) / 1e6 - tripped) * 1000
            break
    delivered, opened = [], []
    for i in range(1, workers):
        trace = gathered[i][2]
        got = [t for t, what in trace if what.startswith("deliver open") and t > tripped]
        went = [t for t, what in trace if what == "closed->open" and t > tripped]
        if got:
            delivered.append((min(got) - tripped) * 1000)
        if went:
            opened.append((min(went) - tripped) * 1000)
    nan = float("nan")
    return {
        "published_ms": published,
        "delivered_p50_ms": pct(delivered, 0.5) if delivered else nan,
        "delivered_p99_ms": pct(delivered, 0.99) if delivered else nan,
        "opened_p50_ms": pct(opened, 0.5) if opened else nan,
        "opened_p99_ms": pct(opened, 0.99) if opened else nan,
    }


def _baseline_child(port: int, ready: Any, out: Any, stop: Any) -> None:
    """A plain redis-py subscriber on a second thread's loop, a 5 ms loop on the main one."""
    import threading

    import redis.asyncio as redis_async

    lags: list[float] = []

    async def listen() -> None:
        client = redis_async.Redis(port=port)
        pubsub = client.pubsub()
        await pubsub.subscribe("baseline")
        ready.put(1)
        while not stop.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None and message["type"] == "message":
                lags.append(time.time() - float(message["data"]))
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()

    async def calls() -> None:  # a wake-up every 5 ms, as the workers' calls
        ticks = 0
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    thread = threading.Thread(target=lambda: asyncio.run(listen()), daemon=True)
    thread.start()
    asyncio.run(calls())
    thread.join(2)
    out.put(lags)
    out.close()
    out.join_thread()
    os._exit(0)


def pubsub_baseline(port: int, workers: int, messages: int = 20) -> dict[str, float]:
    """Plain redis-py pub/sub delivery p50/p99 to ``workers`` processes (no resilient code)."""
    import redis as redis_sync

    ctx = multiprocessing.get_context("spawn")
    ready, out, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_baseline_child, args=(port, ready, out, stop), daemon=True)
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    client = redis_sync.Redis(port=port)
    try:
        _wait_ready(ready, procs, workers)
        time.sleep(0.5)
        for _ in range(messages):
            client.publish("baseline", repr(time.time()))
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        lags = [lag for _ in range(workers) for lag in out.get(timeout=60)]
    finally:
        stop.set()
        _join(procs)
        client.close()
    return {"p50_ms": pct(lags, 0.5) * 1000, "p99_ms": pct(lags, 0.99) * 1000}


# -- idle cost ---------------------------------------------------------------------------------


def idle_worker(url: str, prefix: str, names: int, seconds: float, ready: Any, out: Any) -> None:
    async def main() -> None:
        from resilient._backends.shared_state import RedisSharedState

        state = RedisSharedState(url, prefix=prefix)
        for i in range(names):
            state.watch(f"b{i}", lambda r: None)
        for _ in range(3000):
            if state.healthy and state.records_read >= names:
                break
            await asyncio.sleep(0.01)
        ready.put(1)
        await asyncio.sleep(0.5)
        cpu0, healthy, samples = time.process_time(), 0, 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(0.05)
            samples += 1
            healthy += state.health()["status"] == "healthy"
        out.put((time.process_time() - cpu0, healthy, samples))
        state.close()

    try:
        asyncio.run(main())
    except BaseException:
        import traceback

        traceback.print_exc()
        raise
    finally:
        from resilient._backends.redis import close_workers

        close_workers()
        out.close()
        out.join_thread()
        os._exit(0)


def idle(url: str, port: int, names: int, workers: int, seconds: float) -> dict[str, float]:
    import redis as redis_sync

    prefix = f"idle-{names}-{uuid.uuid4().hex[:4]}"
    client = redis_sync.Redis(port=port)
    pipe = client.pipeline(transaction=False)
    from resilient._backends.shared_state import RedisSharedState

    keys = RedisSharedState.__new__(RedisSharedState)
    keys.prefix = prefix
    now = int(time.time() * 1000)
    for i in range(names):
        pipe.hset(keys._key(f"b{i}"), mapping={"state": "closed", "version": 1, "name": f"b{i}"})
        pipe.zadd(f"{prefix}:breakers:index", {f"b{i}": now})
    pipe.execute()
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=idle_worker, args=(url, prefix, names, seconds, ready, out), daemon=True)
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        _wait_ready(ready, procs, workers)
        time.sleep(0.5)
        before = int(client.info("stats")["total_commands_processed"])
        t0 = time.monotonic()
        results = [out.get(timeout=seconds + 60) for _ in range(workers)]
        elapsed = time.monotonic() - t0
        after = int(client.info("stats")["total_commands_processed"])
    finally:
        _join(procs)
        client.close()
    cpu = [c for c, _, _ in results]
    healthy = sum(h for _, h, _ in results) / max(1, sum(s for _, _, s in results))
    return {
        "cpu_pct": statistics.mean(cpu) / seconds * 100,
        "commands_per_s": (after - before - 1) / elapsed / workers,
        "healthy": healthy * 100,
    }


# -- retry budget under a total outage ---------------------------------------------------------


def budget_worker(
    url: str, prefix: str, name: str, shared: bool, rate: float, seconds: float, go: Any, out: Any
) -> None:
    os.environ["AI_TRADER_REDIS__URL"] = url
    os.environ["AI_TRADER_REDIS__KEY_PREFIX"] = prefix

    async def main() -> None:
        import tenacity

        from resilient import retry
        from resilient._backends.shared_counts import share_budget
        from resilient._backends.shared_state import install_shared_backend

        state = install_shared_backend()
        if shared:
            share_budget(name)
        attempts = {"n": 0}

        @retry(max_attempts=3, wait=tenacity.wait_none(), name=name)
        async def down() -> None:
            attempts["n"] += 1
            raise ConnectionError("down")

        out.put("ready")
        await asyncio.to_thread(go.wait)
        started, requests = time.monotonic(), 0
        while time.monotonic() - started < seconds:
            with contextlib.suppress(ConnectionError):
                await down()
            requests += 1
            await asyncio.sleep(max(0.0, started + requests / rate - time.monotonic()))
        out.put((requests, attempts["n"], state.worker.round_trips))
        state.close()

    try:
        asyncio.run(main())
    except BaseException:
        import traceback

        traceback.print_exc()
        raise
    finally:
        from resilient._backends.redis import close_workers

        close_workers()
        out.close()
        out.join_thread()
        os._exit(0)


def budget(url: str, workers: int, rate: float, seconds: float, shared: bool) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    name, prefix = f"bud-{uuid.uuid4().hex[:6]}", f"bb-{uuid.uuid4().hex[:6]}"
    procs = [
        ctx.Process(
            target=budget_worker,
            args=(url, prefix, name, shared, rate, seconds, go, out),
            daemon=True,
        )
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        _wait_ready(out, procs, workers)
        go.set()
        results = [out.get(timeout=seconds + 60) for _ in range(workers)]
    finally:
        _join(procs)
    requests = sum(r for r, _, _ in results)
    attempts = sum(a for _, a, _ in results)
    trips = sum(t for _, _, t in results)
    return {
        "per_request": attempts / requests,
        "requests": requests,
        "rt_per_call": trips / attempts,
    }


# -- PostgreSQL black hole ---------------------------------------------------------------------


async def blackhole() -> dict[str, float]:
    import dataclasses

    from resilient import breaker, breakers
    from resilient.config import current_config
    from resilient.db import DB_BUDGET_FACTOR, Database
    from resilient.testing.faults import FaultProxy
    from resilient.testing.servers import postgres_server

    with postgres_server() as pg:
        async with FaultProxy("127.0.0.1", pg.port) as proxy:
            base = current_config()
            cfg = dataclasses.replace(
                base,
                database=dataclasses.replace(
                    base.database, command_timeout=1.0, connect_timeout=10.0, pool_timeout=30.0
                ),
                resilience=dataclasses.replace(
                    base.resilience, retry_max_attempts=3, retry_initial_delay=0.1
                ),
            )
            url = pg.url.replace(f":{pg.port}/", f":{proxy.port}/")
            db = Database.from_config(cfg, url=url, application_name="bench-blackhole")
            await db.start(register_health=False)
            name = f"bh-{uuid.uuid4().hex[:6]}"

            @breaker(name, failure_threshold=3, reset_timeout=60.0)
            async def read() -> int:
                return int(await db.scalar("SELECT 1"))

            try:
                await asyncio.gather(*(read() for _ in range(4)))
                proxy.blackhole = True
                started = time.perf_counter()
                while breakers.get(name).state != "open":
                    with contextlib.suppress(Exception):
                        await read()
                opened = time.perf_counter() - started
            finally:
                breakers.remove(name)
                proxy.heal()
                proxy.reset_all()
                await db.close()
    return {"seconds": opened, "bound": 3 * DB_BUDGET_FACTOR * 1.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer processes, shorter runs")
    parser.add_argument("--only", choices=["propagation", "idle", "budget", "blackhole"])
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="propagation: also when the trip reached Redis, each peer's listener and breaker, "
        "and plain redis-py pub/sub to as many processes (what the machine allows)",
    )
    parser.add_argument(
        "--processes", type=int, nargs="+", help="propagation: these process counts instead"
    )
    args, _ = parser.parse_known_args(argv)
    quick, only = args.quick, args.only
    from resilient.testing.servers import redis_server

    print("resilient scale-out (throwaway servers, 2 cores)" + (" (quick)" if quick else ""))
    print("-" * 78)
    with redis_server() as rs:
        if only in (None, "propagation"):
            for n in args.processes or ((4, 8) if quick else (8, 32)):
                r = propagation(rs.url, n, args.breakdown)
                print(
                    f"trip propagation, {n:2d} processes   p50 {r['p50_ms']:6.1f} ms   "
                    f"p99 {r['p99_ms']:6.1f} ms   half-open trials {r['trials']:.0f} "
                    f"(permits 1; {r['peers']:.0f} peers)   CPU {r['cpu_pct']:.1f} % / process"
                )
                if args.breakdown:
                    b = pubsub_baseline(rs.port, n)
                    print(
                        f"  trip in Redis {r['published_ms']:5.1f} ms; listener p50 "
                        f"{r['delivered_p50_ms']:5.1f} p99 {r['delivered_p99_ms']:5.1f} ms; "
                        f"breaker open p50 {r['opened_p50_ms']:5.1f} p99 "
                        f"{r['opened_p99_ms']:5.1f} ms; plain redis-py pub/sub to {n} "
                        f"processes p50 {b['p50_ms']:5.1f} p99 {b['p99_ms']:5.1f} ms; "
                        f"load average {os.getloadavg()[0]:.0f}"
                    )
        if only in (None, "idle"):
            seconds = 2.0 if quick else 5.0
            for names in (10, 1000, 10000):
                workers = 8 if names == 10000 else 1
                r = idle(rs.url, rs.port, names, workers, seconds)
                print(
                    f"idle, {names:6d} names × {workers} proc   "
                    f"CPU {r['cpu_pct']:5.2f} % / process   "
                    f"Redis {r['commands_per_s']:6.1f} commands/s / process   "
                    f"healthy {r['healthy']:5.1f} % of samples"
                )
        if only in (None, "budget"):
            seconds = 4.0 if quick else 12.0
            plans = ((1, 20.0), (8, 10.0)) if quick else ((1, 20.0), (8, 10.0), (32, 5.0))
            for workers, rate in plans:
                shared = budget(rs.url, workers, rate, seconds, True)
                local = budget(rs.url, workers, rate, seconds, False)
                print(
                    f"total outage, {workers:2d} workers × {rate:4.0f} req/s   attempts/request "
                    f"cluster-wide {shared['per_request']:.2f}   per process "
                    f"{local['per_request']:.2f}   ({shared['rt_per_call']:.4f} Redis round "
                    "trips/call)"
                )
    if only in (None, "blackhole"):
        r = asyncio.run(blackhole())
        print(
            f"PostgreSQL black hole → breaker open in {r['seconds']:.2f} s "
            f"(bound 3 × {r['bound'] / 3:.0f} s = {r['bound']:.0f} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
