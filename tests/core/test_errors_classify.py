"""Classification table per source library, with real exception classes."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Callable

import asyncpg
import asyncpg.exceptions as pg
import httpx
import pytest
import redis.exceptions as rx
import sqlalchemy.exc as sa

from resilient import CircuitOpenError, RiskLimitError, TimeoutError, TradingDisabledError
from resilient.errors import (
    ErrorCategory,
    classify,
    is_transient,
    proves_not_sent,
    register_classifier,
    retry_after,
)

C = ErrorCategory
_REQ = httpx.Request("GET", "https://api.example.test/v2/account")


def _http(code: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    response = httpx.Response(code, request=_REQ, headers=headers or {})
    return httpx.HTTPStatusError(f"HTTP {code}", request=_REQ, response=response)


Row = tuple[str, Callable[[], BaseException], ErrorCategory, bool, bool]

BUILTINS: list[Row] = [
    (
        "ConnectionRefusedError",
        lambda: ConnectionRefusedError(111, "refused"),
        C.NETWORK,
        True,
        True,
    ),
    ("ConnectionResetError", lambda: ConnectionResetError(104, "reset"), C.NETWORK, True, False),
    ("BrokenPipeError", lambda: BrokenPipeError(), C.NETWORK, True, False),
    (
        "socket.gaierror",
        lambda: socket.gaierror(-2, "Name or service not known"),
        C.NETWORK,
        True,
        True,
    ),
    ("ssl.SSLError", lambda: ssl.SSLError(), C.NETWORK, True, False),
    ("TimeoutError", lambda: builtins_timeout(), C.TIMEOUT, True, False),
    ("PermissionError", lambda: PermissionError("denied"), C.AUTHENTICATION, False, False),
    ("ValueError", lambda: ValueError("bad symbol"), C.VALIDATION, False, False),
    ("TypeError", lambda: TypeError("bad arg"), C.VALIDATION, False, False),
    ("JSONDecodeError", lambda: json.JSONDecodeError("x", "doc", 0), C.VALIDATION, False, False),
    ("RuntimeError", lambda: RuntimeError("bug"), C.INTERNAL, False, False),
    ("KeyError", lambda: KeyError("k"), C.INTERNAL, False, False),
]

ASYNCIO: list[Row] = [
    ("wait_for timeout", lambda: _wait_for_timeout(), C.TIMEOUT, True, False),
    ("IncompleteReadError", lambda: asyncio.IncompleteReadError(b"", 10), C.NETWORK, True, False),
]

ASYNCPG: list[Row] = [
    ("PostgresConnectionError", lambda: pg.PostgresConnectionError("x"), C.DATABASE, True, False),
    (
        "ConnectionDoesNotExistError",
        lambda: pg.ConnectionDoesNotExistError("x"),
        C.DATABASE,
        True,
        False,
    ),
    ("CannotConnectNowError", lambda: pg.CannotConnectNowError("x"), C.DATABASE, True, True),
    ("TooManyConnectionsError", lambda: pg.TooManyConnectionsError("x"), C.DATABASE, True, False),
    ("DeadlockDetectedError", lambda: pg.DeadlockDetectedError("x"), C.DATABASE, True, False),
    ("SerializationError", lambda: pg.SerializationError("x"), C.DATABASE, True, False),
    ("QueryCanceledError", lambda: pg.QueryCanceledError("x"), C.TIMEOUT, True, False),
    ("InvalidPasswordError", lambda: pg.InvalidPasswordError("x"), C.AUTHENTICATION, False, False),
    ("UniqueViolationError", lambda: pg.UniqueViolationError("x"), C.DATABASE, False, False),
    ("UndefinedTableError", lambda: pg.UndefinedTableError("x"), C.DATABASE, False, False),
    (
        "InvalidTextRepresentation",
        lambda: pg.InvalidTextRepresentationError("x"),
        C.DATABASE,
        False,
        False,
    ),
    ("asyncpg.InterfaceError", lambda: asyncpg.InterfaceError("x"), C.DATABASE, True, False),
]

SQLALCHEMY: list[Row] = [
    (
        "OperationalError(refused)",
        lambda: sa.OperationalError("SELECT 1", {}, ConnectionRefusedError()),
        C.DATABASE,
        True,
        True,  # the wrapped refused connect proves the statement never left
    ),
    (
        "DBAPIError(invalidated)",
        lambda: sa.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
        C.DATABASE,
        True,
        False,
    ),
    (
        "InterfaceError",
        lambda: sa.InterfaceError("SELECT 1", {}, Exception("closed")),
        C.DATABASE,
        True,
        False,
    ),
    (
        "IntegrityError",
        lambda: sa.IntegrityError("INSERT", {}, Exception("duplicate key")),
        C.DATABASE,
        False,
        False,
    ),
    (
        "ProgrammingError",
        lambda: sa.ProgrammingError("SELEC", {}, Exception("syntax")),
        C.DATABASE,
        False,
        False,
    ),
    (
        "DataError",
        lambda: sa.DataError("INSERT", {}, Exception("bad value")),
        C.DATABASE,
        False,
        False,
    ),
]

REDIS: list[Row] = [
    ("ConnectionError", lambda: rx.ConnectionError("Error 111 connecting"), C.NETWORK, True, False),
    ("TimeoutError", lambda: rx.TimeoutError("Timeout reading"), C.TIMEOUT, True, False),
    ("BusyLoadingError", lambda: rx.BusyLoadingError("loading"), C.NETWORK, True, False),
    ("NoPermissionError", lambda: rx.NoPermissionError("NOPERM"), C.AUTHENTICATION, False, False),
    ("ResponseError", lambda: rx.ResponseError("WRONGTYPE"), C.INTERNAL, False, False),
]

HTTPX: list[Row] = [
    ("ConnectError", lambda: httpx.ConnectError("refused", request=_REQ), C.NETWORK, True, True),
    ("ConnectTimeout", lambda: httpx.ConnectTimeout("slow", request=_REQ), C.TIMEOUT, True, True),
    ("ReadTimeout", lambda: httpx.ReadTimeout("slow", request=_REQ), C.TIMEOUT, True, False),
    ("PoolTimeout", lambda: httpx.PoolTimeout("pool", request=_REQ), C.TIMEOUT, True, False),
    ("ReadError", lambda: httpx.ReadError("eof", request=_REQ), C.NETWORK, True, False),
    (
        "RemoteProtocolError",
        lambda: httpx.RemoteProtocolError("bad", request=_REQ),
        C.NETWORK,
        True,
        False,
    ),
    ("InvalidURL", lambda: httpx.InvalidURL("bad url"), C.VALIDATION, False, False),
    ("HTTP 429", lambda: _http(429, {"Retry-After": "3"}), C.RATE_LIMIT, True, True),
    ("HTTP 401", lambda: _http(401), C.AUTHENTICATION, False, False),
    ("HTTP 403", lambda: _http(403), C.AUTHENTICATION, False, False),
    ("HTTP 400", lambda: _http(400), C.VALIDATION, False, False),
    ("HTTP 422", lambda: _http(422), C.VALIDATION, False, False),
    ("HTTP 404", lambda: _http(404), C.DATA_UNAVAILABLE, False, False),
    ("HTTP 500", lambda: _http(500), C.NETWORK, True, False),
    ("HTTP 502", lambda: _http(502), C.NETWORK, True, False),
    ("HTTP 503", lambda: _http(503), C.NETWORK, True, False),
    ("HTTP 504", lambda: _http(504), C.TIMEOUT, True, False),
]


class OrderRejected(Exception):
    """A broker SDK's rejection, recognised by its name."""


PACKAGE: list[Row] = [
    (
        "CircuitOpenError",
        lambda: CircuitOpenError("alpaca", "open", 3.0),
        C.CIRCUIT_OPEN,
        False,
        True,
    ),
    ("resilient.TimeoutError", lambda: TimeoutError(1.5, "alpaca"), C.TIMEOUT, True, False),
    (
        "RiskLimitError",
        lambda: RiskLimitError("trading.max_order_size", 10.0, 20.0),
        C.RISK_LIMIT,
        False,
        True,
    ),
    (
        "TradingDisabledError",
        lambda: TradingDisabledError("features.live_trading_enabled"),
        C.RISK_LIMIT,
        False,
        True,
    ),
    (
        "broker rejection by name",
        lambda: OrderRejected("insufficient buying power"),
        C.BROKER_REJECTION,
        False,
        False,
    ),
]


def _wait_for_timeout() -> BaseException:
    async def main() -> BaseException:
        try:
            await asyncio.wait_for(asyncio.Event().wait(), 0.001)
        except BaseException as exc:  # the real exception asyncio raises
            return exc
        raise AssertionError("wait_for did not time out")

    return asyncio.run(main())


def builtins_timeout() -> BaseException:
    import builtins

    return builtins.TimeoutError("timed out")


def _params(rows: list[Row]) -> list[object]:
    return [
        pytest.param(factory, cat, transient, not_sent, id=name)
        for name, factory, cat, transient, not_sent in rows
    ]


def _check(
    factory: Callable[[], BaseException], category: ErrorCategory, transient: bool, not_sent: bool
) -> None:
    exc = factory()
    assert classify(exc) is category
    assert is_transient(exc) is transient
    assert proves_not_sent(exc) is not_sent


@pytest.mark.parametrize(("factory", "category", "transient", "not_sent"), _params(BUILTINS))
def test_builtin_errors(
    factory: Callable[[], BaseException], category: ErrorCategory, transient: bool, not_sent: bool
) -> None:
    """Built-in network, timeout, permission and value errors have their categories."""
    _check(factory, category, transient, not_sent)


@pytest.mark.parametrize(("factory", "category", "transient", "not_sent"), _params(ASYNCIO))
def test_asyncio_errors(
    factory: Callable[[], BaseException], category: ErrorCategory, transient: bool, not_sent: bool
) -> None:
    """asyncio's timeout and stream errors are classified."""
    _check(factory, category, transient, not_sent)


@pytest.mark.parametrize(("factory", "category", "transient", "not_sent"), _params(ASYNCPG))
def test_asyncpg_errors(
    factory: Callable[[], BaseException], category: ErrorCategory, transient: bool, not_sent: bool
) -> None:
    """asyncpg: connection-level failures are transient database errors, data errors are not."""
    _check(factory, category, transient, not_sent)


@pytest.mark.parametrize(("factory", "category", "transient", "not_sent"), _params(SQLALCHEMY))
def test_sqlalchemy_errors(
    factory: Callable[[], BaseException], category: ErrorCategory, transient: bool, not_sent: bool
) -> None:
    """SQLAlchemy: operational/invalidated errors are transient, integrity errors are not."""
    _check(factory, category, transient, not_sent)


@pytest.mark.parametrize(("factory", "category", "transient", "not_sent"), _params(REDIS))
def test_redis_errors(
    factory: Callable[[], BaseException], category: ErrorCategory, transient: bool, not_sent: bool
) -> None:
    """redis-py: connection and timeout errors are transient, NOPERM is authentication."""
    _check(factory, category, transient, not_sent)


@pytest.mark.parametrize(("factory", "category", "transient", "not_sent"), _params(HTTPX))
def test_httpx_errors(
    factory: Callable[[], BaseException], category: ErrorCategory, transient: bool, not_sent: bool
) -> None:
    """httpx transport errors and HTTP statuses (429, 401/403, 400/422, 5xx) are classified."""
    _check(factory, category, transient, not_sent)


@pytest.mark.parametrize(("factory", "category", "transient", "not_sent"), _params(PACKAGE))
def test_package_errors(
    factory: Callable[[], BaseException], category: ErrorCategory, transient: bool, not_sent: bool
) -> None:
    """The package's own errors and name-recognised broker rejections."""
    _check(factory, category, transient, not_sent)


def test_redis_authentication_error_is_authentication() -> None:
    """A wrong Redis password is an authentication error and is never retried."""
    exc = rx.AuthenticationError("invalid password")
    assert classify(exc) is C.AUTHENTICATION
    assert not is_transient(exc)


def test_sqlalchemy_pool_timeout_is_transient() -> None:
    """An exhausted pool (QueuePool limit reached) is a transient timeout."""
    exc = sa.TimeoutError("QueuePool limit of size 5 overflow 10 reached")
    assert classify(exc) is C.TIMEOUT
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [rx.TryAgainError("TRYAGAIN"), rx.ClusterDownError("CLUSTERDOWN")])
def test_redis_cluster_transitions_are_transient(exc: BaseException) -> None:
    """Redis cluster failover answers are worth a retry."""
    assert is_transient(exc)


def test_retry_after_header_is_read_from_the_response() -> None:
    """A 429's Retry-After header gives the wait in seconds."""
    assert retry_after(_http(429, {"Retry-After": "7"})) == 7.0
    assert retry_after(_http(503)) is None


async def test_real_refused_connection_from_httpx_is_network_and_not_sent() -> None:
    """A real refused TCP connect through httpx proves the request never left."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.get(f"http://127.0.0.1:{port}/")
    assert classify(info.value) is C.NETWORK
    assert proves_not_sent(info.value)


def test_registered_classifier_wins_and_can_be_removed() -> None:
    """Users classify their SDK's exceptions; the rule is removable."""

    class SdkGlitch(Exception):
        pass

    assert classify(SdkGlitch()) is C.INTERNAL
    remove = register_classifier(SdkGlitch, "rate_limit", transient=True)
    try:
        assert classify(SdkGlitch()) is C.RATE_LIMIT
        assert is_transient(SdkGlitch())
    finally:
        remove()
    assert classify(SdkGlitch()) is C.INTERNAL


def test_sqlalchemy_programming_and_empty_results() -> None:
    """No row is missing data, a bad argument is a bug; a decoding failure is validation."""
    assert classify(sa.NoResultFound()) is C.DATA_UNAVAILABLE
    assert classify(sa.ArgumentError("bad")) is C.INTERNAL
    assert classify(httpx.DecodingError("garbled")) is C.VALIDATION
    assert not is_transient(sa.NoResultFound())


def test_fast_path_defers_to_instance_attributes_and_user_rules() -> None:
    """Plain built-ins are decided by type, but an attribute or a user rule still counts."""
    plain = ValueError("bad symbol")
    assert not is_transient(plain)
    upstream = ValueError("gateway")
    upstream.status_code = 503  # type: ignore[attr-defined]
    assert is_transient(upstream)
    throttled = ConnectionError("slow down")
    throttled.retry_after = 2  # type: ignore[attr-defined]
    assert retry_after(throttled) == 2.0
    remove = register_classifier(ConnectionResetError, "broker_rejection", transient=False)
    try:
        assert not is_transient(ConnectionResetError())
    finally:
        remove()
    assert is_transient(ConnectionResetError())


def test_is_transient_runs_a_user_predicate_once() -> None:
    """is_transient() consults a user rule's predicate once, and uses the rule's category
    when the rule does not say whether the failure is transient."""

    class SdkTimeout(Exception):
        pass

    calls: list[BaseException] = []

    def predicate(exc: BaseException) -> bool:
        calls.append(exc)
        return isinstance(exc, SdkTimeout)

    remove = register_classifier(predicate, "timeout")
    try:
        assert is_transient(SdkTimeout())
        assert len(calls) == 1
    finally:
        remove()


def test_wrapped_chains_with_cycles_terminate() -> None:
    """Walking orig/__cause__ stops at a link already seen; a wrapped refused connect still
    proves the request never left, a bare one only through its own type."""
    outer = RuntimeError("outer")
    inner = RuntimeError("inner")
    outer.__cause__ = inner
    inner.__cause__ = outer
    assert not proves_not_sent(outer)
    wrapper = RuntimeError("wrapper")
    wrapper.orig = ConnectionRefusedError()  # type: ignore[attr-defined]
    assert proves_not_sent(wrapper)
