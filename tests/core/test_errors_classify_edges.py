"""Classification at its edges: status bounds, each status and name rule, the order of the
rules, chain walking, database transience, "never sent" proofs and Retry-After parsing."""

from __future__ import annotations

import itertools
import math
import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import pytest

from resilient import CircuitOpenError, FakeClock, RiskLimitError
from resilient._core.classify import MAX_CHAIN, _chain, http_status, plain_category
from resilient.errors import (
    ErrorCategory,
    classify,
    is_transient,
    proves_not_sent,
    register_classifier,
    retry_after,
)

C = ErrorCategory


@pytest.fixture(autouse=True)
def clock(fake_clock: FakeClock) -> FakeClock:
    return fake_clock


class Status(Exception):
    def __init__(self, **attrs: Any) -> None:
        super().__init__("status")
        for key, value in attrs.items():
            setattr(self, key, value)


class Holder:
    def __init__(self, **attrs: Any) -> None:
        for key, value in attrs.items():
            setattr(self, key, value)


def named(name: str, module: str = "vendor.sdk", base: type[Exception] = Exception) -> type:
    return type(name, (base,), {"__module__": module})


# --- http_status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (Status(status_code=503), 503),
        (Status(status=429), 429),
        (Status(http_status=401), 401),
        (Status(response=Holder(status_code=404)), 404),
        (Status(response=Holder(code=502)), 502),
        (Status(response=Holder(code=99)), None),
        (Status(status_code=100), 100),
        (Status(status_code=99), None),
        (Status(status_code=599), 599),
        (Status(status_code=600), None),
        (Status(status_code=True), None),
        (Status(status_code="503"), None),
        (Status(code=400), 400),
        (Status(code=399), None),
        (Status(code=599), 599),
        (Status(code=600), None),
        (Status(code=True), None),
        (Status(status_code=None, status=418), 418),
        (Status(), None),
    ],
)
def test_http_status_bounds(exc: Exception, expected: int | None) -> None:
    """Statuses are read from the exception or its response within 100..599 (a bare ``code``
    only within 400..599); booleans and strings are not statuses."""
    assert http_status(exc) == expected


@pytest.mark.parametrize(
    ("status", "category"),
    [
        (429, C.RATE_LIMIT),
        (401, C.AUTHENTICATION),
        (403, C.AUTHENTICATION),
        (407, C.AUTHENTICATION),
        (400, C.VALIDATION),
        (409, C.VALIDATION),
        (412, C.VALIDATION),
        (413, C.VALIDATION),
        (415, C.VALIDATION),
        (422, C.VALIDATION),
        (404, C.DATA_UNAVAILABLE),
        (410, C.DATA_UNAVAILABLE),
        (408, C.TIMEOUT),
        (504, C.TIMEOUT),
        (500, C.NETWORK),
        (503, C.NETWORK),
        (505, C.NETWORK),
        (599, C.NETWORK),
        (402, C.INTERNAL),
        (405, C.INTERNAL),
        (406, C.INTERNAL),
        (411, C.INTERNAL),
        (414, C.INTERNAL),
        (416, C.INTERNAL),
        (421, C.INTERNAL),
        (423, C.INTERNAL),
        (428, C.INTERNAL),
        (430, C.INTERNAL),
        (499, C.INTERNAL),
        (302, C.INTERNAL),
    ],
)
def test_each_status_has_its_category(status: int, category: ErrorCategory) -> None:
    """Every status rule, and its neighbours that fall through to the type."""
    assert classify(Status(status_code=status)) is category


# --- type rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "category"),
    [
        (named("AuthenticationError", "redis.exceptions", ConnectionError), C.AUTHENTICATION),
        (named("NoPermissionError", "redis.exceptions"), C.AUTHENTICATION),
        (named("TimeoutError", "redis.exceptions"), C.TIMEOUT),
        (named("BusyLoadingError", "redis.exceptions"), C.NETWORK),
        (named("ResponseError", "redis.exceptions"), C.INTERNAL),
        (named("QueryCanceledError", "asyncpg.exceptions"), C.TIMEOUT),
        (named("TimeoutError", "sqlalchemy.exc"), C.TIMEOUT),
        (named("InvalidPasswordError", "asyncpg.exceptions"), C.AUTHENTICATION),
        (named("InvalidAuthorizationSpecificationError", "psycopg.errors"), C.AUTHENTICATION),
        (named("NoResultFound", "sqlalchemy.exc"), C.DATA_UNAVAILABLE),
        (named("ArgumentError", "sqlalchemy.exc"), C.INTERNAL),
        (named("CompileError", "sqlalchemy.exc"), C.INTERNAL),
        (named("OperationalError", "aiosqlite.core"), C.DATABASE),
        (named("OperationalError", "sqlite3"), C.DATABASE),
        (named("IntegrityError", "psycopg.errors"), C.DATABASE),
        (named("ConnectTimeoutValueError", "vendor", ValueError), C.TIMEOUT),
        (named("NetworkValueError", "vendor", ValueError), C.NETWORK),
        (named("ConnectValueError", "vendor", ValueError), C.NETWORK),
        (named("PlainValueError", "vendor", ValueError), C.VALIDATION),
        (named("ReadTimeout"), C.TIMEOUT),
        (named("RateLimitExceeded"), C.RATE_LIMIT),
        (named("TooManyRequests"), C.RATE_LIMIT),
        (named("Throttled"), C.RATE_LIMIT),
        (named("OrderRejected"), C.BROKER_REJECTION),
        (named("InsufficientFunds"), C.BROKER_REJECTION),
        (named("Unauthorized"), C.AUTHENTICATION),
        (named("Forbidden"), C.AUTHENTICATION),
        (named("AuthenticationFailed"), C.AUTHENTICATION),
        (named("ConnectFailed"), C.NETWORK),
        (named("NetworkDown"), C.NETWORK),
        (named("TransportClosed"), C.NETWORK),
        (named("SymbolNotFound"), C.DATA_UNAVAILABLE),
        (named("NoDataForDay"), C.DATA_UNAVAILABLE),
        (named("QuoteUnavailable"), C.DATA_UNAVAILABLE),
        (named("SchemaValidation"), C.VALIDATION),
        (named("InvalidSymbol"), C.VALIDATION),
        (named("DecodingFailed"), C.VALIDATION),
        (named("Mystery"), C.INTERNAL),
        (EOFError, C.NETWORK),
        (socket.gaierror, C.NETWORK),
    ],
)
def test_type_rules(cls: type[Exception], category: ErrorCategory) -> None:
    """Each library and name rule gives its category."""
    assert classify(cls("x")) is category


# --- the order of the rules ---------------------------------------------------------------


def test_rule_order() -> None:
    """User rules beat everything; own errors beat statuses; a status beats Retry-After and
    the type; Retry-After marks a rate limit."""
    assert classify(CircuitOpenError("n")) is C.CIRCUIT_OPEN
    assert classify(RiskLimitError("r")) is C.RISK_LIMIT
    assert classify(Status(status_code=503, retry_after=3)) is C.NETWORK
    assert classify(Status(retry_after=3)) is C.RATE_LIMIT
    assert classify(Status(status_code=302, retry_after=3)) is C.RATE_LIMIT
    remove = register_classifier(lambda e: isinstance(e, Status), "broker_rejection")
    try:
        assert classify(Status(status_code=503)) is C.BROKER_REJECTION
        assert classify(ConnectionError("plain")) is C.NETWORK
    finally:
        remove()
    assert classify(ConnectionError("plain")) is C.NETWORK


def test_later_rules_win_and_unregistering_twice_is_harmless() -> None:
    """The newest matching rule decides; removing a rule twice does nothing."""
    first = register_classifier(KeyError, "validation")
    second = register_classifier(KeyError, "data_unavailable")
    try:
        assert classify(KeyError("k")) is C.DATA_UNAVAILABLE
        second()
        second()
        assert classify(KeyError("k")) is C.VALIDATION
    finally:
        first()
    assert classify(KeyError("k")) is C.INTERNAL


def test_wrapper_takes_the_first_known_category_in_its_chain() -> None:
    """An unknown wrapper around a ConnectionError is network; around unknowns it stays
    internal; a link with a status or a Retry-After decides too."""
    wrapper = RuntimeError("wrapper")
    middle = RuntimeError("middle")
    wrapper.__cause__ = middle
    middle.__cause__ = ConnectionError("refused")
    assert classify(wrapper) is C.NETWORK
    assert is_transient(wrapper)
    lone = RuntimeError("alone")
    lone.__cause__ = RuntimeError("also unknown")
    assert classify(lone) is C.INTERNAL
    via_status = RuntimeError("w")
    via_status.__cause__ = Status(status_code=429)
    assert classify(via_status) is C.RATE_LIMIT
    via_retry_after = RuntimeError("w")
    via_retry_after.__cause__ = Status(retry_after=1)
    assert classify(via_retry_after) is C.RATE_LIMIT
    remove = register_classifier(KeyError, "broker_rejection")
    try:
        via_rule = RuntimeError("w")
        via_rule.__cause__ = KeyError("k")
        assert classify(via_rule) is C.BROKER_REJECTION
    finally:
        remove()
    known = ValueError("bad")
    known.__cause__ = ConnectionError("x")
    assert classify(known) is C.VALIDATION  # a known category is not overridden


def test_chain_walks_orig_before_cause_and_stops_at_max() -> None:
    """``orig`` is followed before ``__cause__``; the walk ends after MAX_CHAIN links."""
    top = RuntimeError("top")
    top.orig = ConnectionRefusedError("orig")  # type: ignore[attr-defined]
    top.__cause__ = TimeoutError("cause")
    assert [type(e) for e in _chain(top)] == [RuntimeError, ConnectionRefusedError]
    links = [RuntimeError(str(i)) for i in range(MAX_CHAIN + 5)]
    for a, b in itertools.pairwise(links):
        a.__cause__ = b
    walked = list(_chain(links[0]))
    assert walked == links[:MAX_CHAIN]
    short = links[MAX_CHAIN - 1 :]
    assert list(_chain(short[0])) == short
    assert MAX_CHAIN == 32


# --- database transience ---------------------------------------------------------------------


DB = named("DatabaseError", "sqlalchemy.exc")


@pytest.mark.parametrize(
    ("attrs", "cause", "transient"),
    [
        ({"connection_invalidated": True}, None, True),
        ({"connection_invalidated": False}, None, False),
        ({"sqlstate": "08006"}, None, True),
        ({"sqlstate": "53300"}, None, True),
        ({"sqlstate": "57P01"}, None, True),
        ({"sqlstate": "40001"}, None, True),
        ({"sqlstate": "23505"}, None, False),
        ({"sqlstate": "0"}, None, False),
        ({"sqlstate": 8006}, None, False),
        ({}, OSError("reset"), True),
        ({}, TimeoutError("slow"), True),
        ({}, named("DeadlockDetectedError", "asyncpg.exceptions")("d"), True),
        ({}, ValueError("bad"), False),
        ({}, None, False),
    ],
)
def test_database_transience(
    attrs: dict[str, Any], cause: Exception | None, transient: bool
) -> None:
    """Database errors are transient only for lost connections, the retryable SQLSTATE
    classes (08, 53, 57, 40), known transient classes or an OS/timeout error in the chain."""
    exc = DB("db")
    for key, value in attrs.items():
        setattr(exc, key, value)
    exc.orig = cause
    assert classify(exc) is C.DATABASE
    assert is_transient(exc) is transient


# --- plain built-ins and user rules in is_transient --------------------------------------------


def test_plain_category_is_only_for_plain_builtins() -> None:
    """A subclass, an instance with attributes, or an installed rule leaves the fast path."""
    assert plain_category(ConnectionError("x")) is C.NETWORK
    assert plain_category(named("Sub", "vendor", ConnectionError)("x")) is None
    with_attr = ConnectionError("x")
    with_attr.status_code = 503  # type: ignore[attr-defined]
    assert plain_category(with_attr) is None
    remove = register_classifier(KeyError, "validation")
    try:
        assert plain_category(ConnectionError("x")) is None
    finally:
        remove()


def test_is_transient_follows_user_rules() -> None:
    """A rule's ``transient`` overrides its category; without it the category decides."""
    remove2 = register_classifier(LookupError, "timeout")
    remove = register_classifier(KeyError, "network", transient=False)
    try:
        assert is_transient(KeyError("k")) is False
        assert is_transient(IndexError("i")) is True
        assert is_transient(ValueError("v")) is False
    finally:
        remove()
        remove2()
    assert is_transient(ConnectionError("x")) is True
    assert is_transient(ValueError("v")) is False
    assert is_transient(Status(status_code=401)) is False


# --- proves_not_sent ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (Status(request_sent=False), True),
        (Status(request_sent=True), False),
        (Status(request_sent="no"), False),
        (ConnectionRefusedError("x"), True),
        (socket.gaierror("x"), True),
        (CircuitOpenError("n"), True),
        (RiskLimitError("r"), True),
        (Status(status_code=429), True),
        (Status(status_code=503), False),
        (ConnectionResetError("x"), False),
        (TimeoutError("read"), False),
        (named("ConnectError")("x"), True),
        (named("NameResolutionError")("x"), True),
        (named("ReadTimeout")("x"), False),
    ],
)
def test_proves_not_sent(exc: Exception, expected: bool) -> None:
    """Only failures that show the request never left prove it."""
    assert proves_not_sent(exc) is expected


def test_wrapped_refusal_proves_not_sent_but_request_sent_wins() -> None:
    """A refused connect wrapped by a library (cause or orig) proves it; an explicit
    request_sent=True overrides; an implicit context never counts."""
    wrapper = RuntimeError("pool")
    wrapper.__cause__ = ConnectionRefusedError("refused")
    assert proves_not_sent(wrapper)
    via_orig = RuntimeError("sa")
    via_orig.orig = socket.gaierror("dns")  # type: ignore[attr-defined]
    assert proves_not_sent(via_orig)
    sent = Status(request_sent=True)
    sent.__cause__ = ConnectionRefusedError("refused")
    assert not proves_not_sent(sent)
    late = TimeoutError("second server read timeout")
    late.__context__ = ConnectionRefusedError("first server")  # handled, then a new failure
    assert not proves_not_sent(late)


def test_rules_decide_not_sent() -> None:
    """A rule's proves_not_sent overrides; a rule without it leaves the built-in answer."""
    remove3 = register_classifier(LookupError, "network")
    remove = register_classifier(ConnectionRefusedError, "network", proves_not_sent=False)
    remove2 = register_classifier(KeyError, "network", proves_not_sent=True)
    try:
        assert proves_not_sent(ConnectionRefusedError("x")) is False
        assert proves_not_sent(KeyError("k")) is True
        assert proves_not_sent(IndexError("i")) is False  # the rule has no say: built-ins
        assert proves_not_sent(socket.gaierror("dns")) is True  # no rule matches
    finally:
        remove()
        remove2()
        remove3()


# --- Retry-After ---------------------------------------------------------------------------


class Headers:
    def __init__(self, value: object) -> None:
        self.value = value

    def get(self, name: str) -> object:
        return self.value if name == "Retry-After" else None


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (Status(retry_after=7), 7.0),
        (Status(retry_after=7.5), 7.5),
        (Status(retry_after=-3), 0.0),
        (Status(retry_after=0), 0.0),
        (Status(retry_after=True), None),
        (Status(retry_after=timedelta(seconds=90)), 90.0),
        (Status(retry_after=b" 12 "), 12.0),
        (Status(retry_after=" 4.25 "), 4.25),
        (Status(retry_after="soon"), None),
        (Status(retry_after=Decimal("2.5")), 2.5),
        (Status(retry_after=Decimal("NaN")), None),
        (Status(retry_after=float("nan")), None),
        (Status(retry_after=10**400), math.inf),
        (Status(retry_after=-(10**400)), 0.0),
        (Status(retry_after=[1]), None),
        (Status(response=Holder(headers={"Retry-After": "5"})), 5.0),
        (Status(response=Holder(headers={"retry-after": "6"})), 6.0),
        (Status(response=Holder(headers={"RETRY-AFTER": "8"})), 8.0),
        (Status(headers={"Retry-After": "9"}), 9.0),
        (Status(response=Holder(headers=Headers("3"))), 3.0),
        (Status(response=Holder(headers=Headers(None))), None),
        (Status(response=Holder(headers=None)), None),
        (Status(response=Holder(headers=42)), None),
        (Status(response=Holder(headers={"Other": "1"})), None),
        (Status(), None),
        (ConnectionError("plain"), None),
    ],
)
def test_retry_after_values(exc: Exception, expected: float | None) -> None:
    """Attribute and header forms, in seconds; negatives are 0; non-durations None."""
    assert retry_after(exc) == expected


def test_retry_after_http_date(clock: FakeClock) -> None:
    """An HTTP date is the seconds from the current (fake) wall clock; a past date is 0."""
    ahead = datetime.fromtimestamp(clock.time() + 42, UTC)
    exc = Status(headers={"Retry-After": format_datetime(ahead, usegmt=True)})
    assert retry_after(exc) == pytest.approx(42, abs=1)
    past = datetime.fromtimestamp(clock.time() - 42, UTC)
    assert retry_after(Status(headers={"Retry-After": format_datetime(past, usegmt=True)})) == 0
    assert retry_after(Status(headers={"Retry-After": "Mon, 99 Foo 2024 25:61:00 GMT"})) is None


def test_wrapped_package_errors_keep_their_category() -> None:
    """An unknown wrapper around an open circuit or a risk refusal is classified as those."""
    for inner, category in (
        (CircuitOpenError("n"), C.CIRCUIT_OPEN),
        (RiskLimitError("r"), C.RISK_LIMIT),
    ):
        wrapper = RuntimeError("wrapper")
        wrapper.__cause__ = inner
        assert classify(wrapper) is category


def test_newest_of_three_rules_wins() -> None:
    """With several rules installed, the newest matching one decides."""
    removes = [
        register_classifier(KeyError, "validation"),
        register_classifier(KeyError, "data_unavailable"),
        register_classifier(KeyError, "broker_rejection"),
    ]
    try:
        assert classify(KeyError("k")) is C.BROKER_REJECTION
    finally:
        for remove in removes:
            remove()
