"""@breaker: trip rules, half-open permits, exclusions, registry, switches, reload, shared seam."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _policy_support import MODES, Script, invoke, make

import resilient
from resilient import CircuitOpenError, FakeClock, breaker, breakers, get_breaker
from resilient._policies.breaker_storage import ORIGIN, CircuitRecord, set_shared_backend
from resilient.config import ConfigError, reload_config, switches


@pytest.fixture
def name() -> str:
    return f"cb-{uuid.uuid4().hex[:10]}"


@pytest.fixture(autouse=True)
def clock(fake_clock: FakeClock) -> FakeClock:
    return fake_clock


@pytest.fixture
def reload_with(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Reload configuration with extra AI_TRADER_* variables; restores it afterwards."""

    def apply(**env: str) -> None:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reload_config()

    yield apply
    monkeypatch.undo()
    reload_config()


@pytest.mark.parametrize("mode", MODES)
async def test_opens_after_consecutive_failures(mode: str, name: str, clock: FakeClock) -> None:
    """Three failures open the circuit; the tripping call raises its own error; then calls are
    rejected without running."""
    errors = [ConnectionError(f"down {i}") for i in range(3)]
    script = Script(*errors)
    fn = breaker(name, failure_threshold=3, reset_timeout=30)(make(mode, script))
    for err in errors:
        with pytest.raises(ConnectionError) as info:
            await invoke(fn)
        assert info.value is err
    with pytest.raises(CircuitOpenError) as rejected:
        await invoke(fn)
    assert script.calls == 3
    assert rejected.value.name == name
    assert rejected.value.state == "open"
    assert rejected.value.retry_after == pytest.approx(30.0)
    assert "open" in str(rejected.value)
    assert get_breaker(name).state == "open"


@pytest.mark.parametrize("mode", MODES)
async def test_success_resets_consecutive_failures(mode: str, name: str) -> None:
    """Failures must be consecutive: a success in between keeps the circuit closed."""
    err = ConnectionError("x")
    script = Script(err, err, "ok", err, err, "ok")
    fn = breaker(name, failure_threshold=3)(make(mode, script))
    for _ in range(6):
        with contextlib.suppress(ConnectionError):
            await invoke(fn)
    assert get_breaker(name).state == "closed"
    assert script.calls == 6


@pytest.mark.parametrize("mode", MODES)
async def test_recovers_through_half_open(mode: str, name: str, clock: FakeClock) -> None:
    """After reset_timeout one trial call runs; its success closes the circuit and the
    recovery time is recorded."""
    script = Script(ConnectionError("x"), "ok", "ok")
    fn = breaker(name, failure_threshold=1, reset_timeout=10)(make(mode, script))
    with pytest.raises(ConnectionError):
        await invoke(fn)
    clock.advance(4)
    with pytest.raises(CircuitOpenError) as info:
        await invoke(fn)
    assert info.value.retry_after == pytest.approx(6.0)
    clock.advance(6)
    assert await invoke(fn) == "ok"
    snap = get_breaker(name).snapshot()
    assert snap.state == "closed"
    assert snap.last_recovery_seconds == pytest.approx(10.0)
    assert snap.opened_at is None


@pytest.mark.parametrize("mode", MODES)
async def test_failed_trial_reopens(mode: str, name: str, clock: FakeClock) -> None:
    """A failing trial call opens the circuit again for a full reset_timeout."""
    script = Script(ConnectionError("a"), ConnectionError("b"))
    fn = breaker(name, failure_threshold=1, reset_timeout=5)(make(mode, script))
    with pytest.raises(ConnectionError):
        await invoke(fn)
    clock.advance(5)
    with pytest.raises(ConnectionError):
        await invoke(fn)
    assert get_breaker(name).state == "open"
    assert get_breaker(name).retry_after() == pytest.approx(5.0)
    with pytest.raises(CircuitOpenError):
        await invoke(fn)
    assert script.calls == 2


@pytest.mark.parametrize("mode", MODES)
async def test_success_threshold(mode: str, name: str, clock: FakeClock) -> None:
    """With success_threshold=2 the circuit stays half-open after one good trial."""
    script = Script(ConnectionError("x"))
    fn = breaker(name, failure_threshold=1, reset_timeout=1, success_threshold=2)(
        make(mode, script)
    )
    with pytest.raises(ConnectionError):
        await invoke(fn)
    clock.advance(1)
    await invoke(fn)
    assert get_breaker(name).state == "half-open"
    await invoke(fn)
    assert get_breaker(name).state == "closed"


async def test_async_failure_is_counted_after_the_await(name: str) -> None:
    """Unlike pybreaker's decorator, failures of an async function count (after its await)."""

    @breaker(name, failure_threshold=2)
    async def flaky() -> None:
        await asyncio.sleep(0)
        raise ConnectionError("late")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            await flaky()
    assert get_breaker(name).state == "open"
    assert get_breaker(name).snapshot().failure_count == 2


@pytest.mark.parametrize("permits", [1, 3])
async def test_half_open_admits_at_most_the_permits_async(
    permits: int, name: str, clock: FakeClock
) -> None:
    """50 concurrent calls on a half-open circuit reach the function at most
    half_open_max_calls times; the rest are rejected at once."""
    release = asyncio.Event()
    entered = 0

    @breaker(name, failure_threshold=1, reset_timeout=1, half_open_max_calls=permits)
    async def service(fail: bool = False) -> str:
        nonlocal entered
        if fail:
            raise ConnectionError("x")
        entered += 1
        await release.wait()
        return "ok"

    with pytest.raises(ConnectionError):
        await service(fail=True)
    clock.advance(1)
    tasks = [asyncio.create_task(service()) for _ in range(50)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert entered == permits
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(r == "ok" for r in results) == permits
    rejected = [r for r in results if isinstance(r, CircuitOpenError)]
    assert len(rejected) == 50 - permits
    assert all(r.state == "half-open" for r in rejected)
    assert get_breaker(name).state == "closed"


@pytest.mark.parametrize("permits", [1, 3])
def test_half_open_admits_at_most_the_permits_sync(
    permits: int, name: str, clock: FakeClock
) -> None:
    """The same with 50 threads calling a sync function."""
    release = threading.Event()
    lock = threading.Lock()
    entered = 0

    @breaker(name, failure_threshold=1, reset_timeout=1, half_open_max_calls=permits)
    def service(fail: bool = False) -> str:
        nonlocal entered
        if fail:
            raise ConnectionError("x")
        with lock:
            entered += 1
        release.wait(5)
        return "ok"

    with pytest.raises(ConnectionError):
        service(fail=True)
    clock.advance(1)

    def attempt() -> object:
        try:
            return service()
        except CircuitOpenError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(attempt) for _ in range(50)]
        waited = threading.Event()
        for _ in range(5000):  # until every caller without a permit has returned
            if sum(f.done() for f in futures) >= 50 - permits and entered >= permits:
                break
            waited.wait(0.001)
        assert entered == permits
        assert sum(f.done() for f in futures) == 50 - permits
        release.set()
        results = [f.result() for f in futures]
    rejected = [r for r in results if isinstance(r, CircuitOpenError)]
    assert len(rejected) == 50 - permits
    assert sum(r == "ok" for r in results) == permits
    assert get_breaker(name).state == "closed"


async def test_cancelled_trial_gives_its_permit_back(name: str, clock: FakeClock) -> None:
    """A trial call that is cancelled frees its permit without deciding the state."""
    gate = asyncio.Event()

    @breaker(name, failure_threshold=1, reset_timeout=1)
    async def service(fail: bool = False) -> str:
        if fail:
            raise ConnectionError("x")
        await gate.wait()
        return "ok"

    with pytest.raises(ConnectionError):
        await service(fail=True)
    clock.advance(1)
    trial = asyncio.create_task(service())
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        await service()
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert get_breaker(name).state == "half-open"
    gate.set()
    assert await service() == "ok"
    assert get_breaker(name).state == "closed"


class RejectedOrder(Exception):
    pass


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "exclude",
    [
        RejectedOrder,
        (KeyError, RejectedOrder),
        lambda exc: isinstance(exc, RejectedOrder),
        [KeyError, lambda exc: "rejected" in str(exc)],
    ],
    ids=["type", "tuple", "predicate", "mixed"],
)
async def test_excluded_errors_do_not_trip(mode: str, exclude: Any, name: str) -> None:
    """Business errors named by exclude= propagate but never open the circuit."""
    script = Script(*[RejectedOrder("rejected: no funds") for _ in range(5)])
    fn = breaker(name, failure_threshold=2, exclude=exclude)(make(mode, script))
    for _ in range(5):
        with pytest.raises(RejectedOrder):
            await invoke(fn)
    snap = get_breaker(name).snapshot()
    assert snap.state == "closed"
    assert snap.failure_count == 0
    assert snap.success_count == 5


async def test_one_breaker_per_name_is_shared(name: str) -> None:
    """Every function naming a breaker feeds and obeys the same circuit."""

    @breaker(name, failure_threshold=2)
    async def read() -> str:
        raise ConnectionError("x")

    @breaker(name)
    def write() -> str:
        return "written"

    for _ in range(2):
        with pytest.raises(ConnectionError):
            await read()
    with pytest.raises(CircuitOpenError):
        write()
    assert read.breaker is write.breaker is get_breaker(name)  # type: ignore[attr-defined]
    assert name in breakers.names()


def test_conflicting_options_for_one_name_are_an_error(name: str) -> None:
    """Two decorations cannot give the same breaker different explicit thresholds."""
    breaker(name, failure_threshold=3)
    breaker(name, failure_threshold=3, reset_timeout=5)  # adds an option: fine
    assert get_breaker(name).reset_timeout == 5
    with pytest.raises(ValueError, match="failure_threshold=3"):
        breaker(name, failure_threshold=4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"failure_threshold": 0}, "failure_threshold must be an integer"),
        ({"reset_timeout": -1}, "reset_timeout must be ≥ 0"),
        ({"failure_rate_threshold": 50}, "share of calls"),
        ({"window_type": "sliding"}, "window_type must be"),
        ({"exclude": ["not an exception"]}, "exclude takes exception types"),
        ({"slow_call_rate_threshold": 0.5}, "needs slow_call_duration"),
    ],
)
def test_invalid_options_fail_at_decoration(options: dict[str, Any], message: str) -> None:
    """Bad options are refused when decorating, naming what is wrong."""
    with pytest.raises((ValueError, TypeError), match=message):
        breaker(f"bad-{uuid.uuid4().hex[:6]}", **options)


def test_unknown_breaker_lookup_names_known_ones(name: str) -> None:
    """breakers.get of an unknown name says which names exist."""
    breaker(name)
    with pytest.raises(KeyError, match=name):
        breakers.get("no-such-breaker")


@pytest.mark.parametrize("mode", MODES)
async def test_operator_actions(mode: str, name: str, clock: FakeClock) -> None:
    """force_open rejects even after the timeout; reset closes; disable lets everything
    through uncounted; enable restores."""
    script = Script()
    fn = breaker(name, reset_timeout=1)(make(mode, script))
    breakers.force_open(name)
    clock.advance(100)
    with pytest.raises(CircuitOpenError):
        await invoke(fn)
    snap = get_breaker(name).snapshot()
    assert snap.forced_open and snap.state == "open" and snap.rejected_calls == 1
    breakers.reset(name)
    assert await invoke(fn) == "ok"
    assert get_breaker(name).snapshot().rejected_calls == 0
    breakers.force_open(name)
    breakers.disable(name)
    assert await invoke(fn) == "ok"
    assert get_breaker(name).snapshot().total_calls == 1
    breakers.enable(name)
    with pytest.raises(CircuitOpenError):
        await invoke(fn)
    assert script.calls == 2


async def test_snapshot_statistics(name: str, clock: FakeClock) -> None:
    """The snapshot reports counts, success rate, category, wall-clock opening time."""
    script = Script("ok", "ok", "ok", ConnectionRefusedError("refused"))
    fn = breaker(name, failure_threshold=1, reset_timeout=7)(make("async", script))
    for _ in range(3):
        await invoke(fn)
    with pytest.raises(ConnectionRefusedError):
        await invoke(fn)
    with pytest.raises(CircuitOpenError):
        await invoke(fn)
    snap = get_breaker(name).snapshot()
    assert (snap.total_calls, snap.success_count, snap.failure_count) == (4, 3, 1)
    assert snap.success_rate == pytest.approx(0.75)
    assert snap.rejected_calls == 1
    assert snap.last_failure_category == "network"
    assert snap.opened_at == pytest.approx(clock.time())
    assert snap.retry_after == pytest.approx(7.0)
    data = snap.to_dict()
    assert data["state"] == "open" and data["name"] == name
    assert [s.name for s in breakers.snapshots()] == breakers.names()


@pytest.mark.parametrize("mode", MODES)
async def test_switch_turns_breakers_into_pass_through(mode: str, name: str) -> None:
    """resilience.circuit_breaker_enabled off: even an open breaker lets calls through."""
    script = Script()
    fn = breaker(name)(make(mode, script))
    breakers.force_open(name)
    switches.breaker_enabled = False
    try:
        assert await invoke(fn) == "ok"
    finally:
        switches.breaker_enabled = True
    with pytest.raises(CircuitOpenError):
        await invoke(fn)


async def test_reload_changes_thresholds_of_running_breakers(
    name: str, reload_with: Callable[..., None]
) -> None:
    """Thresholds from settings follow a reload; explicit ones stay."""
    from_settings = Script(*[ConnectionError("x")] * 10)
    explicit = Script(*[ConnectionError("x")] * 10)
    fn = breaker(name)(make("sync", from_settings))
    fixed = breaker(name + "-fixed", failure_threshold=4)(make("sync", explicit))
    reload_with(AI_TRADER_RESILIENCE__CIRCUIT_BREAKER_FAILURE_THRESHOLD="2")
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await invoke(fn)
    assert get_breaker(name).state == "open"
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await invoke(fixed)
    assert get_breaker(name + "-fixed").state == "closed"
    assert get_breaker(name).snapshot().failure_threshold == 2


@pytest.mark.parametrize("mode", MODES)
async def test_failure_rate_window(mode: str, name: str) -> None:
    """Half the last 10 calls failing opens the circuit although failures never were
    consecutive."""
    script = Script(*[ConnectionError("x") if i % 2 else "ok" for i in range(20)])
    fn = breaker(
        name, failure_threshold=100, failure_rate_threshold=0.5, window_size=10, minimum_calls=10
    )(make(mode, script))
    for _ in range(9):
        with contextlib.suppress(ConnectionError):
            await invoke(fn)
    assert get_breaker(name).state == "closed"
    with pytest.raises(ConnectionError):
        await invoke(fn)  # the 10th call: 5 of 10 failed
    assert get_breaker(name).state == "open"


async def test_time_window_forgets_old_failures(name: str, clock: FakeClock) -> None:
    """A time-based window only counts the last window_size seconds."""
    script = Script(*[ConnectionError("x")] * 20)
    fn = breaker(
        name,
        failure_threshold=100,
        failure_rate_threshold=0.5,
        window_type="time",
        window_size=10,
        minimum_calls=3,
    )(make("sync", script))
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await invoke(fn)
        clock.advance(11)
    assert get_breaker(name).state == "closed"
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await invoke(fn)
    assert get_breaker(name).state == "open"


@pytest.mark.parametrize("mode", MODES)
async def test_slow_calls_open_the_circuit(mode: str, name: str, clock: FakeClock) -> None:
    """Successful but slow calls open the circuit once their share reaches the threshold."""

    def slow() -> str:
        clock.advance(2.0)
        return "late"

    fn = breaker(
        name, slow_call_duration=1.0, slow_call_rate_threshold=0.5, window_size=4, minimum_calls=4
    )(make(mode, slow))
    for _ in range(4):
        assert await invoke(fn) == "late"
    assert get_breaker(name).state == "open"


def test_shared_without_redis_url_is_a_config_error(name: str) -> None:
    """shared=True needs redis.url: a configuration error, not a silent local fallback."""
    with pytest.raises(ConfigError, match=r"redis\.url"):
        breaker(name, shared=True)


class MemoryBackend:
    """An in-memory SharedStateBackend standing in for the Redis one."""

    def __init__(self) -> None:
        self.published: list[tuple[str, CircuitRecord]] = []
        self.watchers: dict[str, Callable[[CircuitRecord], None]] = {}
        self.grant: bool | None = True
        self.released = 0

    def publish(self, name: str, record: CircuitRecord) -> None:
        self.published.append((name, record))

    async def acquire_permit(self, name: str, limit: int, ttl: float) -> bool | None:
        return self.grant

    def acquire_permit_sync(self, name: str, limit: int, ttl: float) -> bool | None:
        return self.grant

    def release_permit(self, name: str) -> None:
        self.released += 1

    def watch(self, name: str, callback: Callable[[CircuitRecord], None]) -> None:
        self.watchers[name] = callback


@pytest.mark.parametrize("mode", MODES)
async def test_shared_state_seam(
    mode: str, name: str, clock: FakeClock, reload_with: Callable[..., None]
) -> None:
    """A shared breaker publishes its transitions, applies newer remote ones, and takes
    half-open permits cluster-wide."""
    reload_with(AI_TRADER_REDIS__URL="redis://127.0.0.1:6379/15")
    backend = MemoryBackend()
    previous = set_shared_backend(backend)
    try:
        script = Script(ConnectionError("x"))
        fn = breaker(name, shared=True, failure_threshold=1, reset_timeout=5)(make(mode, script))
        assert name in backend.watchers
        with pytest.raises(ConnectionError):
            await invoke(fn)
        assert [r.state for _, r in backend.published] == ["open"]
        assert backend.published[0][1].origin == ORIGIN
        # another process closed it
        backend.watchers[name](CircuitRecord("closed", None, 10**18, "other"))
        assert get_breaker(name).state == "closed"
        # a stale record and our own records are ignored
        backend.watchers[name](CircuitRecord("open", clock.time(), 5, "other"))
        backend.watchers[name](CircuitRecord("open", clock.time(), 10**20, ORIGIN))
        assert get_breaker(name).state == "closed"
        # another process opened it 3 s ago: open here too, 2 s left
        backend.watchers[name](CircuitRecord("open", clock.time() - 3, 10**18 + 1, "other"))
        with pytest.raises(CircuitOpenError) as info:
            await invoke(fn)
        assert info.value.retry_after == pytest.approx(2.0, abs=0.01)
        clock.advance(2)
        backend.grant = False  # every cluster-wide permit is taken
        with pytest.raises(CircuitOpenError):
            await invoke(fn)
        assert script.calls == 1
        assert backend.released == 0  # a refused caller frees nobody's permit
        backend.grant = None  # store unreachable: the local permit decides
        assert await invoke(fn) == "ok"
        assert get_breaker(name).state == "closed"
        assert backend.released == 0  # nothing was granted, nothing goes back
        # a granted cluster permit is given back when the trial ends
        backend.watchers[name](CircuitRecord("half-open", None, 10**18 + 5, "other"))
        backend.grant = True
        assert await invoke(fn) == "ok"
        assert backend.released == 1
        # an operator forced it open elsewhere: it stays open past the timeout here
        backend.watchers[name](CircuitRecord("open", clock.time(), 10**19, "other", True))
        clock.advance(100)
        with pytest.raises(CircuitOpenError):
            await invoke(fn)
        assert get_breaker(name).snapshot().forced_open
        backend.watchers[name](CircuitRecord("half-open", None, 10**19 + 1, "other"))
        assert get_breaker(name).state == "half-open"
        breakers.reset(name)
        assert backend.published[-1][1].state == "closed"
    finally:
        set_shared_backend(previous)


async def test_failing_shared_store_degrades_to_local_state(
    name: str, reload_with: Callable[..., None]
) -> None:
    """A backend whose publish raises never breaks the breaker."""
    reload_with(AI_TRADER_REDIS__URL="redis://127.0.0.1:6379/15")

    class Broken(MemoryBackend):
        def publish(self, name: str, record: CircuitRecord) -> None:
            raise ConnectionError("redis down")

    previous = set_shared_backend(Broken())
    try:
        fn = breaker(name, shared=True, failure_threshold=1)(make("sync", Script(OSError("x"))))
        with pytest.raises(OSError):
            await invoke(fn)
        assert get_breaker(name).state == "open"
        breakers.force_open(name)
        assert get_breaker(name).snapshot().forced_open
    finally:
        set_shared_backend(previous)
    with pytest.raises(TypeError, match="SharedStateBackend"):
        set_shared_backend(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
async def test_failing_permit_store_gives_the_local_permit_back(
    mode: str, name: str, clock: FakeClock, reload_with: Callable[..., None]
) -> None:
    """A cluster-wide permit request that raises frees the local half-open permit: a later
    trial call is still admitted."""
    reload_with(AI_TRADER_REDIS__URL="redis://127.0.0.1:6379/15")

    class Flaky(MemoryBackend):
        broken = True

        async def acquire_permit(self, name: str, limit: int, ttl: float) -> bool | None:
            if self.broken:
                raise ConnectionError("redis down")
            return self.grant

        def acquire_permit_sync(self, name: str, limit: int, ttl: float) -> bool | None:
            if self.broken:
                raise ConnectionError("redis down")
            return self.grant

    backend = Flaky()
    previous = set_shared_backend(backend)
    try:
        script = Script(OSError("x"))
        fn = breaker(
            name, shared=True, failure_threshold=1, reset_timeout=5, half_open_max_calls=1
        )(make(mode, script))
        with pytest.raises(OSError):
            await invoke(fn)
        assert get_breaker(name).state == "open"
        clock.advance(5)
        with pytest.raises(ConnectionError, match="redis down"):
            await invoke(fn)
        assert script.calls == 1
        backend.broken = False
        assert await invoke(fn) == "ok"
        assert script.calls == 2
        assert get_breaker(name).state == "closed"
    finally:
        set_shared_backend(previous)


@pytest.mark.parametrize("mode", MODES)
async def test_pybreaker_call_api(mode: str, name: str) -> None:
    """The pybreaker entry points call/call_async/calling use the same correct path."""
    cb = get_breaker(name, failure_threshold=2)
    if mode == "sync":
        assert cb.call(lambda x: x * 2, 21) == 42
        with pytest.raises(ConnectionError), cb.calling():
            raise ConnectionError("x")
    else:

        async def boom() -> None:
            await asyncio.sleep(0)
            raise ConnectionError("x")

        with pytest.raises(ConnectionError):
            await cb.call_async(boom)
    with pytest.raises(ConnectionError), cb.calling():
        raise ConnectionError("y")
    assert cb.state == "open"


def test_rejections_do_not_accumulate_memory(name: str) -> None:
    """Rejected calls leave nothing behind (no shared exception with a growing traceback)."""
    fn = breaker(name)(lambda: None)
    breakers.force_open(name)
    for _ in range(1000):
        with contextlib.suppress(CircuitOpenError):
            fn()
    # Only what the breaker's and this test's code allocate counts: other threads of the
    # process (a health monitor, a Redis worker left by another test) allocate meanwhile.
    ours = [
        tracemalloc.Filter(True, str(Path(resilient.__file__).parent / "*")),
        tracemalloc.Filter(True, __file__),
    ]
    tracemalloc.start(5)
    gc.collect()  # cycles not yet collected are garbage, not growth
    before = tracemalloc.take_snapshot().filter_traces(ours)
    for _ in range(20_000):
        with contextlib.suppress(CircuitOpenError):
            fn()
    gc.collect()
    after = tracemalloc.take_snapshot().filter_traces(ours)
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 64 * 1024
    assert get_breaker(name).snapshot().rejected_calls == 21_000


def test_public_names_are_exported() -> None:
    """The package exposes the breaker API at the top level."""
    for public in ("breaker", "breakers", "get_breaker", "Breaker", "BreakerSnapshot"):
        assert hasattr(resilient, public)


def test_rejection_error_pickles_as_the_public_class(name: str) -> None:
    """A rejection shows and pickles as CircuitOpenError with its attributes."""
    import pickle

    fn = breaker(name, reset_timeout=9)(lambda: None)
    breakers.force_open(name)
    with pytest.raises(CircuitOpenError) as info:
        fn()
    assert repr(info.value).startswith("CircuitOpenError(")
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is CircuitOpenError
    assert (copy.name, copy.state, copy.retry_after) == (name, "open", 9.0)


@pytest.mark.parametrize("mode", MODES)
async def test_pybreaker_listeners_and_exclusions_still_apply(mode: str, name: str) -> None:
    """A pybreaker listener added to the breaker sees every failure, and pybreaker's own
    excluded exceptions do not count."""
    import pybreaker

    class Seen(pybreaker.CircuitBreakerListener):
        def __init__(self) -> None:
            self.failures: list[BaseException] = []

        def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
            self.failures.append(exc)

    script = Script(KeyError("business"), ConnectionError("a"), ConnectionError("b"))
    fn = breaker(name, failure_threshold=2)(make(mode, script))
    cb = get_breaker(name)
    seen = Seen()
    cb.add_listener(seen)
    cb.add_excluded_exception(KeyError)
    with pytest.raises(KeyError):
        await invoke(fn)
    assert cb.state == "closed" and seen.failures == []
    with pytest.raises(ConnectionError):
        await invoke(fn)
    assert cb.state == "closed"
    with pytest.raises(ConnectionError):
        await invoke(fn)
    assert cb.state == "open"
    assert [str(e) for e in seen.failures] == ["a", "b"]


# --- manual use, health text, backend registration ----------------------------------------------


def test_manual_use_admits_records_and_probes(name: str, clock: FakeClock) -> None:
    """try_acquire / record_*: a caller that runs the call itself gets the same rules."""
    cb = get_breaker(name, failure_threshold=2, reset_timeout=1.0)
    assert cb.try_acquire() == 0 and cb.can_admit()
    cb.record_failure(OSError("down"))
    cb.record_failure(OSError("down"))
    assert cb.state == "open"
    assert not cb.can_admit() and cb.try_acquire() is None
    clock.advance(1.0)
    assert cb.can_admit()
    probe = cb.try_acquire()
    assert probe and cb.state == "half-open"
    assert not cb.can_admit() and cb.try_acquire() is None  # one trial at a time
    cb.record_success(probe)
    assert cb.state == "closed" and cb.snapshot().rejected_calls == 2


def test_snapshot_health_text(name: str, clock: FakeClock) -> None:
    """One place says how a breaker reads as a health component."""
    cb = get_breaker(name, reset_timeout=5.0)
    assert cb.snapshot().health() == ("healthy", "")
    cb.open()
    clock.advance(2.0)
    assert cb.snapshot().health() == ("unhealthy", "circuit open; next trial in 3.0s")
    cb.half_open()
    assert cb.snapshot().health() == ("degraded", "circuit half-open; trial calls in progress")
    cb.disable()
    assert cb.snapshot().health() == ("degraded", "circuit breaker disabled")


def test_the_state_lives_in_the_storage(name: str) -> None:
    """pybreaker's storage seam is the one source of the state: what it holds is what the
    breaker reports and decides on."""
    cb = get_breaker(name, failure_threshold=3)
    storage = cb._state_storage  # pybreaker's attribute for the storage given to it
    with pytest.raises(OSError):
        cb.call(Script(OSError("x")))
    assert storage.counter == cb.fail_counter == 1
    cb.open()
    assert storage.state == cb.state == cb.current_state == "open"
    assert storage.opened_at is not None
    with pytest.raises(ValueError, match="unknown circuit state"):
        cb.state = "ajar"


def test_shared_backend_comes_from_the_registered_installer(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The breaker never imports a backend: it asks the installer a backend registered."""
    from resilient._policies import breaker_storage as storage

    made: list[str | None] = []

    class Backend:
        def publish(self, name: str, record: CircuitRecord) -> None: ...
        async def acquire_permit(self, name: str, limit: int, ttl: float) -> bool | None: ...
        def acquire_permit_sync(self, name: str, limit: int, ttl: float) -> bool | None: ...
        def release_permit(self, name: str) -> None: ...
        def watch(self, name: str, callback: Callable[[CircuitRecord], None]) -> None: ...

    backend = Backend()

    def install(url: str | None) -> Any:
        made.append(url)
        set_shared_backend(backend)
        return backend

    previous = storage.get_shared_backend()
    set_shared_backend(None)
    monkeypatch.setattr(storage, "_installer", install)
    monkeypatch.setenv("AI_TRADER_REDIS__URL", "redis://127.0.0.1:6379/0")
    try:
        reload_config()
        cb = breaker(name, shared=True)(lambda: 1)
        assert cb() == 1
        assert made == ["redis://127.0.0.1:6379/0"] and get_breaker(name)._backend is backend
        monkeypatch.setattr(storage, "_installer", None)
        set_shared_backend(None)
        with pytest.raises(RuntimeError, match="needs a backend"):
            storage.install_shared_backend("redis://x")
    finally:
        set_shared_backend(previous)
        breakers.remove(name)
        monkeypatch.delenv("AI_TRADER_REDIS__URL")
        reload_config()
