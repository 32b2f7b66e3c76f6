"""Error categories: what kind of failure an exception is, whether it is transient, whether it
proves that a request never reached the other side, and how long the server asked us to wait.

The rules know the built-in network/timeout errors, asyncio, asyncpg, SQLAlchemy, redis-py,
httpx/aiohttp/requests-style HTTP errors (by status code) and the package's own errors, without
importing any of those libraries. Users add their SDK's exceptions with
:func:`register_classifier`.
"""

from __future__ import annotations

import asyncio
import math
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parsedate_to_datetime
from enum import StrEnum
from fractions import Fraction

from resilient._core import clock as _clock
from resilient._core.exceptions import BulkheadFullError, CircuitOpenError, RiskLimitError
from resilient._core.exceptions import TimeoutError as ResilientTimeoutError

__all__ = [
    "ErrorCategory",
    "broker_refused",
    "classify",
    "http_status",
    "is_transient",
    "plain_category",
    "proves_not_sent",
    "register_classifier",
    "retry_after",
    "unregister_classifier",
]


class ErrorCategory(StrEnum):
    """The kind of a failure; its value is the name used in health and metrics."""

    NETWORK = "network"
    TIMEOUT = "timeout"
    RATE_LIMIT = "rate_limit"
    AUTHENTICATION = "authentication"
    VALIDATION = "validation"
    BROKER_REJECTION = "broker_rejection"
    DATA_UNAVAILABLE = "data_unavailable"
    DATABASE = "database"
    CIRCUIT_OPEN = "circuit_open"
    RISK_LIMIT = "risk_limit"
    BULKHEAD_FULL = "bulkhead_full"
    INTERNAL = "internal"

    def __str__(self) -> str:
        return self.value


_TRANSIENT = frozenset({ErrorCategory.NETWORK, ErrorCategory.TIMEOUT, ErrorCategory.RATE_LIMIT})

# asyncpg / SQLAlchemy / redis-py classes that mean "the connection failed, try again".
_TRANSIENT_DB_NAMES = frozenset(
    {
        "ConnectionDoesNotExistError",
        "InterfaceError",
        "CannotConnectNowError",
        "QueryCanceledError",
        "PostgresConnectionError",
        "ConnectionFailureError",
        "ClientCannotConnectError",
        "TooManyConnectionsError",
        "AdminShutdownError",
        "CrashShutdownError",
        "SerializationError",
        "DeadlockDetectedError",
        "OperationalError",
        "DisconnectionError",
    }
)
# ConnectionError covers reset/refused; the others are cluster fail-over and start-up answers.
_REDIS_TRANSIENT_NAMES = frozenset(
    {
        "ConnectionError",
        "BusyLoadingError",
        "TryAgainError",
        "ClusterDownError",
        "MasterDownError",
        "ReadOnlyError",
        "AskError",
        "MovedError",
    }
)
_NOT_SENT_NAMES = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ClientConnectorError",
        "ClientConnectorDNSError",
        "CannotConnectNowError",
        "ClientCannotConnectError",
        "NewConnectionError",
        "NameResolutionError",
        "RateLimitExceeded",  # ccxt: the exchange refused the request before acting on it
    }
)


@dataclass(frozen=True, slots=True)
class _Rule:
    match: Callable[[BaseException], bool]
    category: ErrorCategory
    transient: bool | None
    not_sent: bool | None


_rules: list[_Rule] = []
_rules_lock = threading.Lock()
_type_cache: dict[type[BaseException], ErrorCategory] = {}


def register_classifier(
    match: type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool],
    category: ErrorCategory | str,
    *,
    transient: bool | None = None,
    proves_not_sent: bool | None = None,
) -> Callable[[], None]:
    """Classify exceptions matching ``match`` (types or a predicate) as ``category``.

    Args:
        match: an exception type, a tuple of types, or ``predicate(exc) -> bool``.
        category: an :class:`ErrorCategory` or its value (``"broker_rejection"``).
        transient: override whether retries may retry it (default: from the category).
        proves_not_sent: whether such a failure proves the request never left.

    Returns:
        A function that removes the rule again. Later registrations win over earlier ones.
    """
    cat = ErrorCategory(category)
    predicate: Callable[[BaseException], bool]
    if isinstance(match, type | tuple):
        types = match
        predicate = lambda exc: isinstance(exc, types)  # noqa: E731
    else:
        predicate = match
    rule = _Rule(predicate, cat, transient, proves_not_sent)
    with _rules_lock:
        _rules.insert(0, rule)

    def remove() -> None:
        unregister_classifier(rule)

    return remove


def unregister_classifier(rule: _Rule) -> None:
    """Remove a rule added by :func:`register_classifier` (the returned function does this)."""
    with _rules_lock:
        if rule in _rules:
            _rules.remove(rule)


def _user_rule(exc: BaseException) -> _Rule | None:
    for rule in _rules:
        try:
            if rule.match(exc):
                return rule
        except Exception:  # a broken predicate must not break error handling
            continue
    return None


def _read(obj: object, name: str, default: object = None) -> object:
    """``getattr(obj, name, default)``, with ``default`` also when reading it raises (a lazy
    response or a broken driver error must not turn its classification into a new error)."""
    try:
        return getattr(obj, name, default)
    except Exception:
        return default


def _get(obj: object, name: str) -> object:
    """``getattr(obj, name, None)`` that survives SDK properties raising (alpaca-py's
    ``APIError.code`` parses its body as JSON on every read)."""
    return _read(obj, name)


def _attr(obj: object, *names: str) -> object:
    for name in names:
        value = _read(obj, name)
        if value is not None:
            return value
    return None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (``status_code``/``status``/``code`` or on
    ``.response``), or ``None``."""
    for holder in (exc, _read(exc, "response")):
        if holder is None:
            continue
        value = _attr(holder, "status_code", "status", "http_status")
        if value is None and holder is not exc:
            value = _read(holder, "code")
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    code = _read(exc, "code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return None


# What a 403 (or 422) body says when the broker refused the *order*, not the credentials:
# alpaca-py ("insufficient buying power", "market is closed", "asset ... is not tradable"),
# IBKR, Coinbase ("INSUFFICIENT_FUND"), Binance ("Account has insufficient balance"), Kraken
# ("EOrder:Insufficient funds").
_REJECTION_WORDS = (
    "insufficient",
    "buying power",
    "market is closed",
    "market closed",
    "not tradable",
    "not tradeable",
    "not shortable",
    "cannot be sold short",
    "pattern day",
    "day trading",
    "trading halted",
    "trading is halted",
    "order rejected",
    "order was rejected",
    "trade denied",
    "not allowed to short",
    "not enough",
    "wash trade",
    "position limit",
    "max order",
    "eorder:",
    "etrade:",
    "potential wash",
    "fractional",
)


def _body_text(exc: BaseException) -> str:
    """The error text of ``exc`` and its response (first 2,000 characters), lower-case."""
    parts = [str(exc)]
    for name in ("message", "body", "text", "detail", "reason"):
        value = _get(exc, name)
        if isinstance(value, str | bytes):
            parts.append(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
    response = _get(exc, "response")
    if response is not None:
        text = _get(response, "text")
        if isinstance(text, str):
            parts.append(text)
    return " ".join(parts)[:2000].lower()


def broker_refused(exc: BaseException) -> bool:
    """Whether the error's text says the broker refused the order on its merits (insufficient
    funds, market closed, not tradable...), as opposed to a credential problem."""
    text = _body_text(exc)
    return any(word in text for word in _REJECTION_WORDS)


_DUPLICATE_WORDS = (
    "client_order_id must be unique",  # Alpaca (422)
    "duplicate",  # Binance "Duplicate order sent.", IB "Duplicate order id", Coinbase
    "already exists",
    "already used",
    "not unique",
    "must be unique",
)


def duplicate_order(exc: BaseException) -> bool:
    """Whether ``exc`` rejects an order because its client order id was used already, i.e.
    the broker holds an order under that id (ccxt ``DuplicateOrderId``, Alpaca's 422
    "client_order_id must be unique", Binance's "Duplicate order sent.")."""
    if any("Duplicate" in c.__name__ for c in type(exc).__mro__):
        return True
    text = _body_text(exc)
    return any(word in text for word in _DUPLICATE_WORDS)


def _by_status(status: int) -> ErrorCategory | None:
    if status == 429:
        return ErrorCategory.RATE_LIMIT
    if status in (401, 403, 407):
        return ErrorCategory.AUTHENTICATION
    if status in (400, 409, 412, 413, 415, 422):
        return ErrorCategory.VALIDATION
    if status in (404, 410):
        return ErrorCategory.DATA_UNAVAILABLE
    if status == 408 or status == 504:
        return ErrorCategory.TIMEOUT
    if status >= 500:
        return ErrorCategory.NETWORK
    return None


def _module_of(cls: type) -> str:
    return getattr(cls, "__module__", "") or ""


def _by_type(cls: type[BaseException]) -> ErrorCategory:
    cached = _type_cache.get(cls)
    if cached is not None:
        return cached
    category = _compute_by_type(cls)
    _type_cache[cls] = category
    return category


# ccxt's exception tree (ccxt/base/errors.py), most specific first.
_CCXT: tuple[tuple[str, ErrorCategory], ...] = (
    ("RateLimitExceeded", ErrorCategory.RATE_LIMIT),
    ("DDoSProtection", ErrorCategory.RATE_LIMIT),
    ("RequestTimeout", ErrorCategory.TIMEOUT),
    ("OrderNotFound", ErrorCategory.DATA_UNAVAILABLE),
    ("InsufficientFunds", ErrorCategory.BROKER_REJECTION),
    ("InvalidOrder", ErrorCategory.BROKER_REJECTION),  # DuplicateOrderId, OrderNotFillable...
    ("OperationRejected", ErrorCategory.BROKER_REJECTION),  # MarketClosed...
    ("BadSymbol", ErrorCategory.VALIDATION),
    ("BadRequest", ErrorCategory.VALIDATION),
    ("ArgumentsRequired", ErrorCategory.VALIDATION),
    ("NotSupported", ErrorCategory.VALIDATION),
    ("AuthenticationError", ErrorCategory.AUTHENTICATION),  # PermissionDenied, suspended
    ("NetworkError", ErrorCategory.NETWORK),  # ExchangeNotAvailable, OnMaintenance, nonce
    ("BadResponse", ErrorCategory.NETWORK),
    ("ExchangeError", ErrorCategory.BROKER_REJECTION),  # the exchange said no
)


def _ccxt_category(names: set[str]) -> ErrorCategory:
    for name, category in _CCXT:
        if name in names:
            return category
    return ErrorCategory.INTERNAL


def _compute_by_type(cls: type[BaseException]) -> ErrorCategory:
    if issubclass(cls, CircuitOpenError):
        return ErrorCategory.CIRCUIT_OPEN
    if issubclass(cls, RiskLimitError):
        return ErrorCategory.RISK_LIMIT
    if issubclass(cls, BulkheadFullError):
        return ErrorCategory.BULKHEAD_FULL
    if issubclass(cls, ResilientTimeoutError | TimeoutError | asyncio.TimeoutError):
        return ErrorCategory.TIMEOUT
    names = {c.__name__ for c in cls.__mro__}
    modules = " ".join(_module_of(c) for c in cls.__mro__)
    lowered = " ".join(names).lower()
    if "redis" in modules:
        # AuthenticationError subclasses ConnectionError in redis-py: test it first.
        if "AuthenticationError" in names or "NoPermissionError" in names:
            return ErrorCategory.AUTHENTICATION
        if "Timeout" in " ".join(names):
            return ErrorCategory.TIMEOUT
        if names & _REDIS_TRANSIENT_NAMES:
            return ErrorCategory.NETWORK
        return ErrorCategory.INTERNAL
    if (
        "asyncpg" in modules
        or "sqlalchemy" in modules
        or "psycopg" in modules
        or "aiosqlite" in modules
        or "sqlite3" in modules
    ):
        if "TimeoutError" in names or "QueryCanceledError" in names:
            return ErrorCategory.TIMEOUT
        if "InvalidPasswordError" in names or "InvalidAuthorizationSpecificationError" in names:
            return ErrorCategory.AUTHENTICATION
        if "NoResultFound" in names:
            return ErrorCategory.DATA_UNAVAILABLE
        if "ArgumentError" in names or "CompileError" in names:
            return ErrorCategory.INTERNAL  # a programming error, not an outage
        return ErrorCategory.DATABASE
    if "ccxt" in modules:
        return _ccxt_category(names)
    if issubclass(cls, PermissionError):
        return ErrorCategory.AUTHENTICATION
    if issubclass(cls, ConnectionError | OSError | EOFError | socket.gaierror):
        return ErrorCategory.NETWORK
    if issubclass(cls, ValueError | TypeError) and not any(
        word in lowered for word in ("connect", "timeout", "network")
    ):
        # JSON decode errors and the like are validation of data we received or sent.
        return ErrorCategory.VALIDATION
    if "timeout" in lowered:
        return ErrorCategory.TIMEOUT
    if "ratelimit" in lowered or "toomanyrequests" in lowered or "throttl" in lowered:
        return ErrorCategory.RATE_LIMIT
    if "reject" in lowered or "insufficient" in lowered:
        return ErrorCategory.BROKER_REJECTION
    if "unauthori" in lowered or "forbidden" in lowered or "authentication" in lowered:
        return ErrorCategory.AUTHENTICATION
    if "connect" in lowered or "network" in lowered or "transport" in lowered:
        return ErrorCategory.NETWORK
    if "notfound" in lowered or "nodata" in lowered or "unavailable" in lowered:
        return ErrorCategory.DATA_UNAVAILABLE
    if "validation" in lowered or "invalid" in lowered or "decod" in lowered:
        return ErrorCategory.VALIDATION
    return ErrorCategory.INTERNAL


def classify(exc: BaseException) -> ErrorCategory:
    """The :class:`ErrorCategory` of ``exc``.

    Order: user rules, the package's own errors, an HTTP status carried by the exception,
    the exception's type (with knowledge of the database, Redis and HTTP client libraries),
    then the cause of an otherwise unknown wrapper exception.
    """
    category = _classify_link(exc)
    if category is ErrorCategory.INTERNAL:
        # An unknown wrapper: the first wrapped exception with a known category decides
        # (walked iteratively, so a cyclic or very deep chain cannot recurse).
        for inner in _chain(exc):
            if inner is not exc:
                inner_category = _classify_link(inner)
                if inner_category is not ErrorCategory.INTERNAL:
                    return inner_category
    return category


def _classify_link(exc: BaseException) -> ErrorCategory:
    """:func:`classify` of one exception, without following its chain."""
    plain = plain_category(exc)
    if plain is not None:
        return plain
    if _rules:
        rule = _user_rule(exc)
        if rule is not None:
            return rule.category
    if isinstance(exc, CircuitOpenError):  # it carries a retry_after of its own
        return ErrorCategory.CIRCUIT_OPEN
    if isinstance(exc, RiskLimitError):
        return ErrorCategory.RISK_LIMIT
    status = http_status(exc)
    if status is not None:
        if status == 403 and broker_refused(exc):
            return ErrorCategory.BROKER_REJECTION
        by_status = _by_status(status)
        if by_status is not None:
            return by_status
    if _read(exc, "retry_after") is not None:
        return ErrorCategory.RATE_LIMIT
    return _by_type(type(exc))


MAX_CHAIN = 32
"""Links of a cause chain looked at, at most (real chains are a handful deep)."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then each wrapped exception: ``orig`` (SQLAlchemy) when it is an exception,
    else ``__cause__``; stops at the end of the chain, at a link already seen (a cycle) or
    after :data:`MAX_CHAIN` links. An ``orig`` attribute that raises ends the walk.

    The implicit ``__context__`` is never followed: an error raised while handling another
    (a timeout on a second server after a refused first one) does not share its meaning,
    and reading "never sent" from it could duplicate an order."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < MAX_CHAIN:
        seen.add(id(current))
        yield current
        try:
            orig = getattr(current, "orig", None)
        except Exception:
            return
        current = orig if isinstance(orig, BaseException) else current.__cause__


def _database_transient(exc: BaseException) -> bool:
    if _read(exc, "connection_invalidated", False):
        return True
    for current in _chain(exc):
        if any(c.__name__ in _TRANSIENT_DB_NAMES for c in type(current).__mro__):
            return True
        if isinstance(current, OSError | TimeoutError):
            return True
        sqlstate = _read(current, "sqlstate")
        if isinstance(sqlstate, str) and sqlstate[:2] in ("08", "53", "57", "40"):
            return True
    return False


# Plain built-in exceptions decide by type alone; an instance carrying attributes (a status
# code, a Retry-After) takes the full path. This keeps a retry's classification well under 1 µs.
_PLAIN: dict[type[BaseException], ErrorCategory] = {
    cls: _compute_by_type(cls)
    for cls in (
        ConnectionError,
        ConnectionRefusedError,
        ConnectionResetError,
        ConnectionAbortedError,
        BrokenPipeError,
        TimeoutError,
        ValueError,
        TypeError,
        PermissionError,
    )
}


def plain_category(exc: BaseException) -> ErrorCategory | None:
    """The category of a plain built-in exception (a common one, carrying no attribute of its
    own, with no user rule installed), decided by its type alone; ``None`` for any other.

    Such an exception has no HTTP status, Retry-After or cause to consult, so
    :func:`classify`, :func:`is_transient` and :func:`retry_after` answer it from this."""
    category = _PLAIN.get(exc.__class__)
    if category is None or _rules or exc.__dict__:
        return None
    return category


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` may succeed: network, timeout, rate limit, server 5xx and
    connection-level database failures. Never an open circuit, validation, authentication,
    broker rejection or risk-limit error."""
    plain = plain_category(exc)
    if plain is not None:
        return plain in _TRANSIENT
    rule = _user_rule(exc) if _rules else None
    if rule is not None:
        if rule.transient is not None:
            return rule.transient
        category = rule.category
    else:
        category = classify(exc)
    if category in _TRANSIENT:
        return True
    if category is ErrorCategory.DATABASE:
        return _database_transient(exc)
    return False


def proves_not_sent(exc: BaseException) -> bool:
    """Whether ``exc`` proves the request never reached the server, so even a
    non-idempotent operation (an order) may be retried.

    True for refused connections, failed name resolution, connect timeouts, an open circuit,
    a 429 answer, and exceptions with ``request_sent = False``. A read timeout or a reset
    connection is *not* proof: the server may have acted on the request.
    """
    if _rules:
        rule = _user_rule(exc)
        if rule is not None and rule.not_sent is not None:
            return rule.not_sent
    flag = _read(exc, "request_sent")
    if isinstance(flag, bool):
        return not flag
    if isinstance(exc, ConnectionRefusedError | socket.gaierror | CircuitOpenError):
        return True
    if isinstance(exc, RiskLimitError):
        return True
    if http_status(exc) == 429:
        return True
    # redis-py, SQLAlchemy and others wrap the refused connect in their own errors.
    for current in _chain(exc):
        if current is not exc and isinstance(current, ConnectionRefusedError | socket.gaierror):
            return True
        if {c.__name__ for c in type(current).__mro__} & _NOT_SENT_NAMES:
            return True
    return False


def _header(headers: object, name: str) -> object:
    if headers is None:
        return None
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    value = getter(name)
    if value is None and isinstance(headers, Mapping):
        lowered = name.lower()
        for key, item in headers.items():
            if str(key).lower() == lowered:
                return item
    return value


def _seconds(value: object) -> float | None:
    """A Retry-After value in seconds: ``None`` when it is not one, ``inf`` when it is too
    large to represent; never raises, never NaN or negative."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        if hasattr(value, "total_seconds"):
            value = value.total_seconds()
        if isinstance(value, bytes):
            value = value.decode("latin-1", "replace")
        if isinstance(value, str):
            text = value.strip()
            try:
                number = float(text)  # "1e10", "inf", 5,000 digits: no overflow for str
            except ValueError:
                return _http_date(text)
        elif isinstance(value, int | float | Decimal | Fraction):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond float range
                number = math.inf if value > 0 else 0.0
        else:
            return None
    except Exception:  # a hostile value (a total_seconds that raises...)
        return None
    if math.isnan(number):
        return None
    return max(0.0, number)


def _http_date(text: str) -> float | None:
    try:
        when = parsedate_to_datetime(text)
        return max(0.0, when.timestamp() - _clock._current.time())
    except Exception:  # not a date, or one out of datetime's range
        return None


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait: the exception's ``retry_after`` attribute, or a
    ``Retry-After`` header (seconds or an HTTP date) on ``exc.response`` / ``exc.headers``.

    Never raises: a value that is not a duration is ``None``; one too large for a float is
    ``inf`` (the retry then gives up at once, see ``resilience.retry_max_retry_after``)."""
    if plain_category(exc) is not None:
        return None  # a plain built-in exception carries no Retry-After
    try:
        value: object = getattr(exc, "retry_after", None)
        if value is None:
            for holder in (getattr(exc, "response", None), exc):
                value = _header(getattr(holder, "headers", None), "Retry-After")
                if value is not None:
                    break
    except Exception:  # an attribute or a headers object that raises
        return None
    return _seconds(value)
