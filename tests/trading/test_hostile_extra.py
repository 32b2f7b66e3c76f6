"""Hostile inputs beyond the first examples: other members of the same classes."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pybreaker
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient import (
    Breaker,
    ConfigError,
    FakeClock,
    RiskLimitError,
    breaker,
    disable_logging,
    enable_logging,
    fallback,
    get_breaker,
    resilient,
    retry,
    sanitize,
    timeout,
    use_clock,
)
from resilient._core import sanitize as _sanitize
from resilient._core.classify import http_status
from resilient._core.sanitize import register_secret
from resilient.config import ConfigManager, current_config
from resilient.errors import (
    ErrorCategory,
    classify,
    is_transient,
    proves_not_sent,
    record_error,
    register_classifier,
    retry_after,
    tracker,
)
from resilient.health import HealthRegistry, HealthStatus
from resilient.trading import OrderIntent, RiskChecker
from resilient.trading._orders import prepare_order_call


def _stop_iteration() -> bool:
    raise StopIteration


def _system_exit() -> bool:
    raise SystemExit(3)


def _keyboard_interrupt() -> bool:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("check", "name"),
    [
        (_stop_iteration, "StopIteration"),
        (_system_exit, "SystemExit"),
        (_keyboard_interrupt, "KeyboardInterrupt"),
    ],
)
async def test_sync_check_raising_a_special_exception_is_unhealthy_at_once(
    check: Callable[[], bool], name: str
) -> None:
    """A sync check runs in a thread: what it raises there (StopIteration, which a future
    refuses; SystemExit or KeyboardInterrupt, which end only that thread) is its result,
    reported by name and at once: never a false timeout, never the host's exit."""
    reg = HealthRegistry()
    reg.register("odd", check, timeout=2.0)
    started = time.perf_counter()
    report = await reg.check_all()
    elapsed = time.perf_counter() - started
    component = report.components["odd"]
    assert component.status is HealthStatus.UNHEALTHY
    assert component.detail.startswith(name), component.detail
    assert "timed out" not in component.detail
    assert elapsed < 1.0
    # the registry keeps working
    report = await reg.check_all()
    assert report.components["odd"].status is HealthStatus.UNHEALTHY


async def test_async_check_raising_its_own_cancelled_error_is_reported() -> None:
    async def check() -> bool:
        raise asyncio.CancelledError

    reg = HealthRegistry()
    reg.register("self_cancel", check, timeout=1.0)
    report = await reg.check_all()
    assert report.components["self_cancel"].status is HealthStatus.UNHEALTHY


class Unprintable(Exception):
    """An exception whose ``str()`` and ``repr()`` raise."""

    def __str__(self) -> str:
        raise RuntimeError("str of an unprintable exception")

    def __repr__(self) -> str:
        raise RuntimeError("repr of an unprintable exception")


def _raises_unprintable(exc: BaseException) -> bool:
    raise Unprintable


def _fresh_predicate() -> Callable[[BaseException], bool]:
    # each policy logs a failing callback once per callback: a new one per case
    return lambda exc: _raises_unprintable(exc)


def _breaker_exclude() -> Callable[[], object]:
    @breaker("hostile_extra_unprintable", failure_threshold=1, exclude=_fresh_predicate())
    def call() -> object:
        raise ConnectionError("refused")

    return call


def _retry_on() -> Callable[[], object]:
    @retry(max_attempts=2, initial_delay=0, retry_on=_fresh_predicate())
    def call() -> object:
        raise ConnectionError("refused")

    return call


def _retry_idempotent() -> Callable[[], object]:
    @retry(max_attempts=2, initial_delay=0, idempotent=_fresh_predicate())
    def call() -> object:
        raise ConnectionError("refused")

    return call


def _fallback_on() -> Callable[[], object]:
    @fallback(value="served", on=_fresh_predicate())
    def call() -> object:
        raise ConnectionError("refused")

    return call


@pytest.mark.parametrize("make", [_breaker_exclude, _retry_on, _retry_idempotent, _fallback_on])
def test_callback_raising_an_unprintable_exception_keeps_the_callers_error(
    make: Callable[[], Callable[[], object]],
) -> None:
    """The one-time log line of a failing callback cannot itself fail: the caller still gets
    its own error (the callback counts as no match)."""
    call = make()
    with pytest.raises(ConnectionError, match="refused"):
        call()


def test_sanitize_of_an_unprintable_object_names_its_type() -> None:
    text = sanitize(Unprintable())
    assert "Unprintable" in text


async def test_check_raising_an_unprintable_exception_is_unhealthy() -> None:
    async def async_check() -> bool:
        raise Unprintable

    def sync_check() -> bool:
        raise Unprintable

    reg = HealthRegistry()
    reg.register("async_unprintable", async_check, timeout=1.0)
    reg.register("sync_unprintable", sync_check, timeout=1.0)
    report = await reg.check_all()
    for name in ("async_unprintable", "sync_unprintable"):
        component = report.components[name]
        assert component.status is HealthStatus.UNHEALTHY
        assert component.detail.startswith("Unprintable"), component.detail


async def test_listener_and_provider_raising_unprintable_exceptions_keep_the_report() -> None:
    """The log line of a failing report listener or provider cannot break check_all()."""
    lines: list[str] = []
    enable_logging("DEBUG", json_lines=False, sink=lines.append)
    try:

        def listener(report: object) -> None:
            raise Unprintable

        def provider() -> dict[str, object]:
            raise Unprintable

        reg = HealthRegistry()
        reg.register("ok", lambda: True, timeout=1.0)
        reg.on_report(listener)
        reg.add_provider(provider)  # type: ignore[arg-type]
        report = await reg.check_all()
    finally:
        disable_logging()
    assert report.components["ok"].status is HealthStatus.HEALTHY
    assert any("health report listener failed: Unprintable" in line for line in lines), lines
    assert any("health provider failed" in line for line in lines), lines


_DECORATORS: dict[str, Callable[[Any], Any]] = {
    "@breaker": lambda fn: breaker(fn),
    "@breaker(name)": lambda fn: breaker("hostile_extra_descriptor")(fn),
    "@retry": lambda fn: retry(fn),
    "@retry()": lambda fn: retry()(fn),
    "@fallback(value=)": lambda fn: fallback(value=0)(fn),
    "@timeout(1)": lambda fn: timeout(1)(fn),
    "@resilient()": lambda fn: resilient("hostile_extra_composed", value=0)(fn),
}


@pytest.mark.parametrize("wrapper", [classmethod, staticmethod, property])
@pytest.mark.parametrize("decorator", sorted(_DECORATORS))
def test_decorator_above_a_descriptor_fails_at_decoration_with_the_right_order(
    decorator: str, wrapper: Callable[[Any], Any]
) -> None:
    """``@breaker`` written above ``@classmethod`` (or staticmethod, property) would wrap the
    descriptor: every call then fails (and a fallback hides it for ever), or the property
    turns into a method. Refused at decoration, with the order that works."""

    def method(*args: Any) -> int:
        return 1

    with pytest.raises(TypeError) as info:
        _DECORATORS[decorator](wrapper(method))
    message = str(info.value)
    assert f"@{wrapper.__name__}" in message
    assert "above" in message


_READ_ATTRIBUTES = [
    "status_code",
    "status",
    "http_status",
    "code",
    "response",
    "headers",
    "retry_after",
    "request_sent",
    "connection_invalidated",
    "sqlstate",
    "orig",
    "__resilient_error_recorded__",
]
_ATTRIBUTE_ERRORS = [RuntimeError, KeyError, AttributeError, TypeError, ValueError, Unprintable]


def _hostile(base: type[Exception], raising: frozenset[str], error: type[Exception]) -> Exception:
    """An exception of ``base`` whose attributes in ``raising`` raise ``error`` when read
    (as a lazy HTTP response or a broken driver error may)."""

    def __getattribute__(self: Exception, attr: str) -> object:
        if attr in raising:
            raise error(attr)
        return Exception.__getattribute__(self, attr)

    cls = type("Hostile" + base.__name__, (base,), {"__getattribute__": __getattribute__})
    return cls("hostile attribute")


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from([ConnectionError, TimeoutError, ValueError, OSError, Exception]),
    raising=st.frozensets(st.sampled_from(_READ_ATTRIBUTES), min_size=1),
    error=st.sampled_from(_ATTRIBUTE_ERRORS),
)
def test_classification_and_accounting_survive_attributes_that_raise(
    base: type[Exception], raising: frozenset[str], error: type[Exception]
) -> None:
    """classify(), is_transient(), proves_not_sent(), retry_after(), http_status() answer, and
    record_error() counts and returns its record, whatever attribute of the exception raises
    when read."""
    exc = _hostile(base, raising, error)
    assert isinstance(classify(exc), ErrorCategory)
    assert isinstance(is_transient(exc), bool)
    assert isinstance(proves_not_sent(exc), bool)
    wait = retry_after(exc)
    assert wait is None or wait >= 0
    status = http_status(exc)
    assert status is None or 100 <= status <= 599
    before = tracker.total_errors
    record = record_error(exc)
    assert record is not None
    assert record.error_type == type(exc).__name__
    assert tracker.total_errors == before + 1
    assert record_error(exc) is None  # counted once
    assert tracker.total_errors == before + 1


@dataclasses.dataclass(frozen=True)
class FrozenError(Exception):
    """An exception that refuses new attributes (setting one raises FrozenInstanceError)."""

    code: str


def test_exceptions_refusing_attributes_are_each_counted_once() -> None:
    """Exceptions that cannot carry the counted mark were remembered by id, and a freed one's
    id is reused by the next: 99 of 100 such errors went uncounted."""
    before = tracker.total_errors
    recorded = again = 0
    for _ in range(100):
        exc = FrozenError("E1")  # each freed before the next is made: ids are reused
        recorded += record_error(exc) is not None
        again += record_error(exc) is not None  # the same object: once
        del exc
    assert (recorded, again) == (100, 0)
    assert tracker.total_errors == before + 100


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("reset_timeout", math.inf),
        ("reset_timeout", math.nan),
        ("reset_timeout", -1),
        ("reset_timeout", 0),
        ("reset_timeout", 1e308),
        ("fail_max", 0),
        ("fail_max", -1),
        ("fail_max", math.inf),
        ("fail_max", True),
        ("success_threshold", 0),
        ("success_threshold", 2.5),
    ],
)
def test_pybreaker_setters_refuse_what_the_decorator_refuses(attribute: str, value: object) -> None:
    """``cb.reset_timeout = inf`` kept the circuit open for ever, ``-1`` or NaN never kept it
    open: the pybreaker setters check what the options check."""
    cb = get_breaker("hostile_extra_setters")
    before = getattr(cb, attribute)
    with pytest.raises(ValueError, match="hostile_extra_setters"):
        setattr(cb, attribute, value)
    assert getattr(cb, attribute) == before


def test_pybreaker_setters_keep_their_value_across_a_settings_reload() -> None:
    cb = get_breaker("hostile_extra_setters_kept")
    cb.fail_max = 7
    cb.reset_timeout = timedelta(seconds=12)
    cb.success_threshold = 3
    cb._apply_settings()  # what a configuration reload does
    assert (cb.fail_max, cb.reset_timeout, cb.success_threshold) == (7, 12.0, 3)


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e400", "-1e400"])
def test_a_non_finite_number_is_named_as_such(text: str, tmp_path: Path) -> None:
    """``1e400`` or ``nan`` for a duration: the error says the value is not finite and shows
    it (it said "must be a number (got float)", which a float is)."""
    environ = {"AI_TRADER_TRADING__DEFAULT_ORDER_TIMEOUT": text}
    with pytest.raises(ConfigError) as info:
        ConfigManager(cwd=tmp_path, environ=environ).load_config()
    message = str(info.value)
    assert "trading.default_order_timeout" in message
    assert "finite" in message
    assert "(got float)" not in message
    assert "a plain a" not in message


_PASSWORD_CHARS = st.sampled_from("abcXYZ019@/:%!+ ?#&=$'\"é")


@settings(max_examples=200, deadline=None)
@given(password=st.text(_PASSWORD_CHARS, min_size=6, max_size=24).map(lambda s: f"Qz{s}@9"))
def test_percent_encoded_forms_of_a_secret_are_masked(password: str) -> None:
    """A registered secret is masked in the forms a URL or form encoder gives it
    (``p%40ss%2Fw0rd``), as written in an error message or a log line."""
    saved = (set(_sanitize._secrets), _sanitize._secret_re)
    try:
        register_secret(password)
        for encoded in {quote(password, safe=""), quote(password), quote_plus(password)}:
            shown = sanitize(f"request failed for {encoded} (retrying)")
            assert encoded not in shown, (encoded, shown)
            assert shown == "request failed for *** (retrying)", (encoded, shown)
    finally:  # the registry is process-wide: leave no random value in it
        with _sanitize._lock:
            _sanitize._secrets.clear()
            _sanitize._secrets.update(saved[0])
            _sanitize._secret_re = saved[1]


class _StopRequested(BaseException):
    """A BaseException of the application's own (not an Exception)."""


class _RaisingBeforeCall(pybreaker.CircuitBreakerListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.armed = True

    def before_call(self, cb: object, func: object, *args: object, **kwargs: object) -> None:
        if self.armed:
            raise _StopRequested


def _entry_sync(cb: Breaker, fn: Callable[[], str]) -> str:
    return cb.call(fn)


def _entry_calling(cb: Breaker, fn: Callable[[], str]) -> str:
    with cb.calling():
        return fn()


def _entry_decorated(cb: Breaker, fn: Callable[[], str]) -> str:
    return breaker(cb.name)(fn)()


def _entry_async(cb: Breaker, fn: Callable[[], str]) -> str:
    async def afn() -> str:
        return fn()

    return asyncio.run(cb.call_async(afn))


@pytest.mark.parametrize("entry", [_entry_sync, _entry_calling, _entry_decorated, _entry_async])
def test_before_call_listener_raising_a_base_exception_gives_the_trial_permit_back(
    entry: Callable[[Breaker, Callable[[], str]], str],
) -> None:
    """A ``before_call`` listener raising a BaseException in half-open kept the trial permit:
    the circuit then rejected every call for ever, healthy service or not."""
    with use_clock(FakeClock()) as clock:
        cb = get_breaker(f"hostile_extra_before_call_{entry.__name__}", failure_threshold=1)
        listener = _RaisingBeforeCall()
        listener.armed = False
        cb.add_listener(listener)

        def down() -> str:
            raise ConnectionError("refused")

        with pytest.raises(ConnectionError):
            entry(cb, down)
        clock.advance(cb.reset_timeout + 1)
        listener.armed = True
        with pytest.raises(_StopRequested):
            entry(cb, lambda: "ok")  # the half-open trial: its listener raises
        listener.armed = False
        assert entry(cb, lambda: "ok") == "ok"
        assert cb.current_state == "closed"


@pytest.mark.parametrize(
    "ttl",
    [math.inf, 1e308, timedelta.max, timedelta(days=31), 10**400, -1.0, math.nan],
    ids=["inf", "1e308", "timedelta.max", "31 days", "10**400", "-1", "nan"],
)
def test_fallback_cache_ttl_is_bounded_at_decoration(ttl: object) -> None:
    """``cache_ttl`` has the bound of ``resilience.fallback_cache_ttl`` (30 days), checked
    when decorating as every other duration argument is."""
    with pytest.raises(ValueError, match="cache_ttl"):
        fallback(cache=True, cache_ttl=ttl)  # type: ignore[arg-type]


def test_a_boolean_is_not_a_window_size() -> None:
    with pytest.raises(ValueError, match="window_size"):
        breaker(
            "hostile_extra_bool_window",
            window_size=True,
            window_type="time",
            failure_rate_threshold=0.5,
        )


_HUGE = 10**400  # an int beyond float range


@pytest.mark.parametrize(
    "decorate",
    [
        lambda: retry(initial_delay=_HUGE),
        lambda: retry(max_delay=_HUGE),
        lambda: retry(deadline=_HUGE),
        lambda: timeout(_HUGE),
        lambda: breaker("hostile_extra_huge", reset_timeout=_HUGE),
        lambda: fallback(cache=True, cache_ttl=-_HUGE),
    ],
    ids=["initial_delay", "max_delay", "deadline", "timeout", "reset_timeout", "-cache_ttl"],
)
def test_an_int_beyond_float_range_is_a_clear_value_error(decorate: Callable[[], object]) -> None:
    """``10**400`` seconds raised OverflowError from the duration conversion; it is refused
    with the argument's name as any other out-of-range value."""
    with pytest.raises(ValueError, match="must be"):
        decorate()


_ENDLESS_WAITS = [math.inf, 1e308, 3600.5]


@pytest.mark.parametrize("wait", _ENDLESS_WAITS, ids=["inf", "1e308", "3600.5"])
def test_a_wait_strategy_asking_for_an_endless_wait_gives_up_with_the_error(
    wait: float,
) -> None:
    """A ``wait=`` strategy answering ``inf`` raised OverflowError (sync) or slept for ever
    (async). A wait beyond the bound of waits (3600 s) is never started: the original error
    is raised at once, as for an over-long Retry-After."""
    attempts = 0

    @retry(max_attempts=3, wait=lambda state: wait)
    def call() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("refused")

    started = time.perf_counter()
    with pytest.raises(ConnectionError, match="refused"):
        call()
    assert attempts == 1
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("wait", _ENDLESS_WAITS, ids=["inf", "1e308", "3600.5"])
async def test_an_async_wait_strategy_asking_for_an_endless_wait_gives_up(wait: float) -> None:
    @retry(max_attempts=3, wait=lambda state: wait)
    async def call() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError, match="refused"):
        await asyncio.wait_for(call(), 2.0)


def _risk_checker() -> RiskChecker:
    config = current_config()
    trading = dataclasses.replace(
        config.trading,
        risk_check_enabled=True,
        max_order_size=10_000.0,
        max_position_size=100_000.0,
    )
    return RiskChecker(trading, dataclasses.replace(config.features, risk_limits_enforced=True))


def _place_order(
    symbol: str, qty: object, side: str, limit_price: object = None, client_order_id: object = None
) -> None:
    """A broker method taking the order's fields as arguments."""


def _intent(qty: object, limit_price: object = None) -> OrderIntent:
    call = prepare_order_call(
        inspect.signature(_place_order), ("AAPL", qty, "buy"), {"limit_price": limit_price}
    )
    return call.intent


@pytest.mark.parametrize(
    ("qty", "price"),
    [
        (Decimal("1000"), Decimal("100")),
        (Fraction(1000), Fraction(100)),
        (Decimal("1000"), 100.0),
        (1000, Decimal("100")),
    ],
    ids=["Decimal", "Fraction", "Decimal qty", "Decimal price"],
)
def test_decimal_quantities_and_prices_given_as_arguments_are_checked(
    qty: object, price: object
) -> None:
    """A Decimal (or any other number type) passed as the quantity or price argument was not
    read at all: the order went out with no risk check. 1,000 × 100 is above the 10,000
    limit."""
    intent = _intent(qty, price)
    assert intent.quantity == 1000.0
    assert intent.price == 100.0
    with pytest.raises(RiskLimitError, match="max_order_size"):
        _risk_checker().check(intent, market_price=None, position=0.0)


@pytest.mark.parametrize(
    "qty",
    [math.nan, "NaN", "abc", Decimal("NaN"), Decimal("sNaN"), [1000], complex(1000, 0)],
    ids=["nan", "'NaN'", "'abc'", "Decimal NaN", "Decimal sNaN", "list", "complex"],
)
def test_an_unreadable_quantity_refuses_the_order(qty: object) -> None:
    """A quantity that is given but is no number cannot be valued: refused (it used to skip
    every risk check)."""
    intent = _intent(qty, 100.0)
    assert intent.quantity is None
    with pytest.raises(RiskLimitError, match=r"the quantity .* is not a (finite )?number"):
        _risk_checker().check(intent, market_price=100.0, position=0.0)


def test_an_int_quantity_beyond_float_range_is_refused_not_an_overflow() -> None:
    intent = _intent(10**400, 100.0)
    with pytest.raises(RiskLimitError, match="cannot be valued") as info:
        _risk_checker().check(intent, market_price=None, position=0.0)
    assert info.value.rule == "trading.max_order_size"


@pytest.mark.parametrize("market", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_a_market_price_that_values_nothing_refuses_the_order(market: float) -> None:
    """A market order valued at a 0, negative or NaN tick had a notional of 0 (or NaN) and
    passed every limit, whatever its size; such a price is no price."""
    intent = _intent(1_000_000)
    with pytest.raises(RiskLimitError, match="cannot value AAPL"):
        _risk_checker().check(intent, market_price=market, position=0.0)


_ENDLESS = [math.inf, 1e308, 10**400, 86_400.5]
_ENDLESS_IDS = ["inf", "1e308", "10**400", "one day + 0.5 s"]


@pytest.mark.parametrize("limit", _ENDLESS, ids=_ENDLESS_IDS)
def test_a_health_check_timeout_is_bounded(limit: float) -> None:
    """``timeout=inf`` let a hanging check hold check_all() (and /health) for ever; 10**400
    broke the run with OverflowError. Refused at registration, as every duration is."""
    reg = HealthRegistry()
    with pytest.raises(ValueError, match="timeout for health check 'x'"):
        reg.register("x", lambda: True, timeout=limit)
    assert "x" not in reg.names()


@pytest.mark.parametrize("interval", _ENDLESS, ids=_ENDLESS_IDS)
async def test_the_health_monitor_interval_is_bounded(interval: float) -> None:
    """An endless interval never ran a second cycle (10**400 killed the monitor task)."""
    reg = HealthRegistry()
    with pytest.raises(ValueError, match="health monitor interval"):
        reg.start_monitor(interval=interval)
    assert not reg.monitoring


@pytest.mark.parametrize(
    "make",
    [
        lambda: {"positions": [], "cash": 0},
        lambda: [{"symbol": "AAPL"}],
        lambda: {("AAPL", "buy")},
        lambda: bytearray(b"quote"),
    ],
    ids=["dict", "list", "set", "bytearray"],
)
def test_a_mutable_fallback_value_is_served_as_a_fresh_copy(make: Callable[[], Any]) -> None:
    """``fallback(value={"positions": []})`` served one shared object: a caller adding to it
    changed what every later fallback returned (the mutable default argument trap)."""

    @fallback(value=make())
    def read() -> Any:
        raise ConnectionError("down")

    first = read()
    assert first == make()
    if isinstance(first, dict):
        first["positions"].append("AAPL")
    elif isinstance(first, list):
        first.append({"symbol": "MSFT"})
    elif isinstance(first, set):
        first.add(("MSFT", "sell"))
    else:
        first.extend(b" changed")
    assert read() == make()


async def test_a_mutable_fallback_value_is_a_fresh_copy_for_async_functions() -> None:
    @fallback(value={"positions": []})
    async def read() -> dict[str, list[str]]:
        raise ConnectionError("down")

    (await read())["positions"].append("AAPL")
    assert await read() == {"positions": []}


def test_a_sentinel_fallback_value_keeps_its_identity() -> None:
    missing = object()

    @fallback(value=missing)
    def read() -> object:
        raise ConnectionError("down")

    assert read() is missing


class _ClassifiedLater(Exception):
    """An error type no built-in rule knows, so the user rules are asked."""


@pytest.mark.parametrize("entry", [_entry_sync, _entry_calling, _entry_decorated, _entry_async])
def test_classifier_rule_raising_a_base_exception_gives_the_trial_permit_back(
    entry: Callable[[Breaker, Callable[[], str]], str],
) -> None:
    """A ``register_classifier`` predicate raising a BaseException while a half-open trial
    failed kept the trial permit: the circuit stayed half-open, rejecting every call."""
    armed = False

    def rule(exc: BaseException) -> bool:
        if armed:
            raise _StopRequested
        return False

    remove = register_classifier(rule, ErrorCategory.NETWORK)
    try:
        with use_clock(FakeClock()) as clock:
            cb = get_breaker(f"hostile_extra_rule_{entry.__name__}", failure_threshold=1)

            def down() -> str:
                raise _ClassifiedLater("refused")

            with pytest.raises(_ClassifiedLater):
                entry(cb, down)
            clock.advance(cb.reset_timeout + 1)
            armed = True
            with pytest.raises(_StopRequested):
                entry(cb, down)  # the half-open trial fails; classifying it raises
            armed = False
            clock.advance(cb.reset_timeout + 1)
            assert entry(cb, lambda: "ok") == "ok"
            assert cb.current_state == "closed"
    finally:
        remove()


@pytest.mark.parametrize("section", ["SERVICES", "ALERTS"])
@pytest.mark.parametrize("value", ["abc", "@json [1]", "@json 5", "true"])
def test_an_open_section_that_is_not_a_table_is_an_error(
    section: str, value: str, tmp_path: Path
) -> None:
    """``AI_TRADER_SERVICES=abc`` replaced the whole section and every service's settings were
    silently dropped (validation and the factory both said "valid")."""
    with pytest.raises(ConfigError) as info:
        ConfigManager(cwd=tmp_path, environ={f"AI_TRADER_{section}": value}).load_config()
    assert f"{section.lower()} — must be a table of settings" in str(info.value)
