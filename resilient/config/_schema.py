"""The validated configuration: one frozen dataclass per section, rules in field metadata."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, get_type_hints

from resilient._core.exceptions import ConfigError, ConfigProblem
from resilient._core.redis_url import FORMS, parse_redis_url
from resilient._core.sanitize import MASK, is_secret_key, mask_url, sanitize, url_secret_parts
from resilient.config._bounds import (
    ATTEMPTS,
    COUNT,
    DELAY,
    DURATION,
    NOTIONAL,
    POOL,
    RATE,
    TTL,
    Bound,
)
from resilient.config._price_age import PriceAgeLimits

__all__ = [
    "ENVIRONMENTS",
    "OPEN_BOOLEANS",
    "OPEN_SECTIONS",
    "SECTIONS",
    "TOP_LEVEL_KEYS",
    "Config",
    "DatabaseSettings",
    "FeatureSettings",
    "RedisSettings",
    "ResilienceSettings",
    "TradingSettings",
    "declared_sections",
    "validate",
]

ENV_PREFIX = "AI_TRADER_"
ENVIRONMENTS = ("development", "testing", "staging", "production")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
STRONG_SSL_MODES = ("require", "verify-ca", "verify-full")
TRADING_STATES = ("active", "reducing", "halted")
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def _rule(
    *,
    bound: Bound | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
    nonempty: bool = False,
    secret: bool = False,
    doc: str = "",
    default: Any = MISSING,
) -> Any:
    if bound is not None:  # a shared range from _bounds (lower and upper limit)
        ge, gt = (None, bound.low) if bound.low_open else (bound.low, None)
        le = bound.high
    meta = {
        "ge": ge,
        "gt": gt,
        "le": le,
        "choices": choices,
        "nonempty": nonempty,
        "secret": secret,
        "doc": doc,
    }
    if default is MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class ResilienceSettings:
    """``resilience.*``: breaker, retry and health-check defaults."""

    circuit_breaker_enabled: bool = _rule(doc="Enable circuit breaker protection")
    circuit_breaker_failure_threshold: int = _rule(
        bound=COUNT, doc="Failures before opening circuit"
    )
    circuit_breaker_timeout: float = _rule(bound=DURATION, doc="Seconds before attempting recovery")
    circuit_breaker_half_open_max_calls: int = _rule(
        bound=COUNT, doc="Trial calls let through half-open"
    )
    circuit_breaker_success_threshold: int = _rule(bound=COUNT, doc="Trial successes that close it")
    circuit_breaker_shared: bool = _rule(doc="Keep every breaker's state in Redis")
    retry_enabled: bool = _rule(doc="Enable automatic retries")
    retry_max_attempts: int = _rule(bound=ATTEMPTS, doc="Maximum attempts, the first included")
    retry_initial_delay: float = _rule(bound=DELAY, doc="Initial retry delay (seconds)")
    retry_max_delay: float = _rule(bound=DELAY, doc="Longest wait between attempts (seconds)")
    retry_max_retry_after: float = _rule(
        bound=DURATION, doc="Longest server-requested wait (Retry-After) honoured (seconds)"
    )
    retry_budget_ratio: float = _rule(ge=0, le=1, doc="Share of calls that may be retries")
    retry_budget_min_per_second: float = _rule(
        bound=RATE, doc="Floor for sparse calls: retries a second beyond the ratio, none in outages"
    )
    fallback_cache_ttl: float = _rule(bound=TTL, doc="Seconds a cached fallback stays servable")
    health_check_enabled: bool = _rule(doc="Enable health monitoring")
    health_check_interval: float = _rule(bound=DURATION, doc="Health check frequency (seconds)")
    health_check_timeout: float = _rule(bound=DURATION, doc="Per-check timeout (seconds)")
    enable_query_logging: bool = _rule(doc="Log every SQL statement (no parameter values)")
    # -- load control: bulkheads and hedged reads (defaults here too: older files lack them)
    bulkhead_max_concurrent: int = _rule(
        bound=COUNT, doc="Calls of one bulkhead at once", default=25
    )
    bulkhead_max_queue: int = _rule(
        ge=0, le=1_000_000, doc="Calls waiting for a bulkhead slot", default=100
    )
    bulkhead_queue_timeout: float = _rule(
        bound=DELAY, doc="Longest wait for a slot (s)", default=5.0
    )
    bulkhead_priorities: bool = _rule(doc="Serve the queue cancel>order>read", default=True)
    hedge_max_hedges: int = _rule(ge=1, le=5, doc="Extra requests per hedged read", default=1)
    hedge_min_delay: float = _rule(
        bound=DELAY, doc="Shortest hedge delay (s) for p95", default=0.005
    )


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """``database.*``: PostgreSQL connection and pool (SQLite when ``host`` is empty)."""

    host: str = _rule(doc="PostgreSQL host; empty means the embedded SQLite database")
    port: int = _rule(ge=1, le=65535, doc="PostgreSQL port")
    name: str = _rule(nonempty=True, doc="Database name")
    user: str = _rule(doc="Database user")
    password: str = _rule(secret=True, doc="Database password (from the environment only)")
    min_pool_size: int = _rule(bound=POOL, doc="Minimum connection pool size")
    max_pool_size: int = _rule(bound=POOL, doc="Maximum connection pool size")
    max_idle_time: float = _rule(bound=TTL, doc="Connection idle timeout (seconds)")
    command_timeout: float = _rule(bound=DURATION, doc="Query timeout (seconds)")
    connect_timeout: float = _rule(bound=DURATION, doc="Connection timeout (seconds)")
    pool_timeout: float = _rule(bound=DURATION, doc="Wait for a free pooled connection (seconds)")
    pool_pre_ping: bool = _rule(doc="Validate connections before use")
    slow_query_threshold: float = _rule(
        bound=DURATION, doc="Log queries slower than this (seconds)"
    )
    ssl_mode: str = _rule(choices=SSL_MODES, doc="PostgreSQL sslmode")
    sqlite_path: str = _rule(nonempty=True, doc="SQLite file used when no host is set")

    def __repr__(self) -> str:
        pw = MASK if self.password else ""
        return (
            f"DatabaseSettings(host={self.host!r}, port={self.port}, name={self.name!r}, "
            f"user={self.user!r}, password={pw!r}, ssl_mode={self.ssl_mode!r})"
        )

    @property
    def is_sqlite(self) -> bool:
        """True when no host is configured and the embedded SQLite database is used."""
        return not self.host


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """``redis.*``: the shared cache and circuit state (unset ``url``: in-process)."""

    url: str | None = _rule(
        secret=True,
        doc="redis://, redis+cluster:// or redis+sentinel:// URL; unset means in-process cache",
        default=None,
    )
    timeout: float = _rule(
        gt=0, le=5, doc="Socket timeout for every Redis call (seconds)", default=0.1
    )
    key_prefix: str = _rule(nonempty=True, doc="Prefix of every key written", default="resilient")

    def __repr__(self) -> str:
        url = sanitize(mask_url(self.url)) if self.url else None
        return f"RedisSettings(url={url!r}, timeout={self.timeout}, key_prefix={self.key_prefix!r})"


@dataclass(frozen=True, slots=True)
class TradingSettings:
    """``trading.*``: risk limits (notional, account currency) and order timeout."""

    max_order_size: float = _rule(bound=NOTIONAL, doc="Maximum order notional (quantity × price)")
    max_position_size: float = _rule(bound=NOTIONAL, doc="Maximum position notional")
    risk_check_enabled: bool = _rule(doc="Enable risk validation")
    default_order_timeout: float = _rule(bound=DURATION, doc="Order timeout (seconds)")
    # Order-path safety (trading states, order-rate throttle, lookups of unknown outcomes).
    state: str = _rule(
        choices=TRADING_STATES,
        doc="active; reducing (only orders that reduce a position); halted (only cancels)",
        default="active",
    )
    max_order_rate: str = _rule(
        doc='Orders per service, limits notation ("20/second"); "" for no throttle', default=""
    )
    order_lookup_attempts: int = _rule(
        ge=0, le=100, doc="Look-ups by client order id of an order of unknown outcome", default=5
    )
    order_lookup_backoff: float = _rule(
        bound=DELAY, doc="First wait between those look-ups (seconds, doubling)", default=0.5
    )
    # stale-price guard: seconds, or a table per symbol class / service (see _price_age.py)
    max_price_age: PriceAgeLimits = field(
        default=PriceAgeLimits(),
        metadata={"parse": PriceAgeLimits.parse, "doc": "Oldest price that may value an order"},
    )


@dataclass(frozen=True, slots=True)
class FeatureSettings:
    """``features.*``: feature flags."""

    paper_trading_enabled: bool = _rule(doc="Route orders to a paper broker")
    live_trading_enabled: bool = _rule(doc="Allow live orders")
    risk_limits_enforced: bool = _rule(doc="Refuse orders that break risk limits")
    debug: bool = _rule(doc="Debug logging (refused in production)")


SECTIONS: dict[str, type[Any]] = {
    "resilience": ResilienceSettings,
    "database": DatabaseSettings,
    "redis": RedisSettings,
    "trading": TradingSettings,
    "features": FeatureSettings,
}
# Sections read (and checked) by the features that use them; kept as plain data in Config.extra.
OPEN_SECTIONS = ("services", "alerts")
# Boolean keys of the open sections, by section and key name (at any depth below the section),
# so that variables spell them as the schema's booleans (yes/no, on/off …).
OPEN_BOOLEANS: dict[str, frozenset[str]] = {
    "services": frozenset({"resilience_enabled", "paper"}),
}
# Top-level keys that are not sections.
TOP_LEVEL_KEYS = ("log_level", "extra_sections")
# Largest number any setting without its own upper bound accepts (a finite, sane ceiling).
CEILING = 1e15


@dataclass(frozen=True, slots=True)
class Config:
    """The validated configuration of one environment.

    ``extra`` holds the other top-level sections (``alerts``, ``services``, …) as plain data,
    for the features that read them.
    """

    env: str
    log_level: str
    resilience: ResilienceSettings
    database: DatabaseSettings
    redis: RedisSettings
    trading: TradingSettings
    features: FeatureSettings
    extra: Mapping[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Mapping[str, Any]:
        """An extra section (``{}`` when absent)."""
        value = self.extra.get(name.lower(), {})
        return value if isinstance(value, Mapping) else {}

    def secret_values(self) -> list[str]:
        """Every configured secret value (registered for masking at load)."""
        values = [self.database.password, *url_secret_parts(self.database.password)]
        if self.redis.url:
            values.append(self.redis.url)
            # the password alone and every fragment a URL parser may derive from it
            values.extend(url_secret_parts(self.redis.url))
        values.extend(_secret_leaves(self.extra))
        return [v for v in values if v]


def _secret_leaves(obj: Any, key: str = "") -> list[str]:
    if isinstance(obj, Mapping):
        return [s for k, v in obj.items() for s in _secret_leaves(v, str(k))]
    if isinstance(obj, list | tuple):
        return [s for v in obj for s in _secret_leaves(v, key)]
    if obj is None or obj == "" or isinstance(obj, bool):
        return []
    if is_secret_key(key):  # whatever the type: an all-digit api_key is a secret too
        text = str(obj)
        return [text, *url_secret_parts(text)]
    if isinstance(obj, str) and "://" in obj:
        return url_secret_parts(obj)
    return []


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int with hundreds of digits
        return math.inf


_TYPE_NAMES = {
    bool: "a boolean (true/false)",
    int: "an integer",
    float: "a number",
    str: "a string",
}


def _check_value(
    section: str,
    name: str,
    typ: Any,
    meta: Mapping[str, Any],
    value: Any,
    problem: Callable[[str, str, str], None],
) -> Any:
    key = f"{section}.{name}"
    if (parse := meta.get("parse")) is not None:  # a structured value (trading.max_price_age)
        return parse(key, value, problem)
    optional = False
    if typ == (str | None):
        optional, typ = True, str
    if value is None or (optional and value == ""):
        if optional:
            return None
        problem(
            key,
            "is missing",
            f"set {key} in settings.toml or AI_TRADER_{section.upper()}__{name.upper()}",
        )
        return MISSING
    expected = _TYPE_NAMES[typ]
    shown = "" if meta.get("secret") else f" (got {type(value).__name__})"
    if typ is bool:
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)  # 1/0 from a file or a variable
        if not isinstance(value, bool):
            problem(key, f"must be {expected}{shown}", "write true or false")
            return MISSING
    elif typ in (int, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and typ is int and isinstance(value, float):
            ok = value.is_integer()
        if not ok:
            problem(key, f"must be {expected}{shown}", f"write {key} as a plain number")
            return MISSING
        if not math.isfinite(_as_float(value)):
            got = "" if meta.get("secret") else f" (got {value!r})"
            problem(key, f"must be a finite number{got}", f"write {key} as a plain number")
            return MISSING
        number = _as_float(value)
        for bound, op, words in (
            ("ge", float.__ge__, "≥"),
            ("gt", float.__gt__, ">"),
            ("le", float.__le__, "≤"),
        ):
            limit = meta.get(bound)
            if bound == "le" and limit is None:
                limit = CEILING
            if limit is not None and not op(number, float(limit)):
                problem(key, f"must be {words} {limit:g}", f"choose a value {words} {limit:g}")
                return MISSING
        value = typ(value)
    elif typ is str:
        if not isinstance(value, str):
            problem(key, f"must be {expected}{shown}", "quote the value")
            return MISSING
        if meta.get("nonempty") and not value.strip():
            problem(key, "must not be empty", f"set a value for {key}")
            return MISSING
        choices = meta.get("choices")
        if choices and value not in choices:
            problem(key, f"must be one of {', '.join(choices)}", f"pick one of {choices}")
            return MISSING
    return value


def declared_sections(data: Mapping[str, Any]) -> tuple[list[str], str | None]:
    """An application's own sections from ``extra_sections`` (a list or a comma-separated
    string), and the rule it breaks when it is neither."""
    raw = {str(k).lower(): v for k, v in data.items()}.get("extra_sections")
    if raw is None or raw == "":
        return [], None
    if isinstance(raw, str):
        raw = raw.split(",")
    if isinstance(raw, list | tuple) and all(isinstance(x, str) for x in raw):
        return [x.strip().lower() for x in raw if x.strip()], None
    return [], "must be a list of section names"


def validate(
    data: Mapping[str, Any],
    env: str,
    problems: list[ConfigProblem] | None = None,
    *,
    known_sections: Collection[str] | None = None,
    origin: Callable[[str], str] | None = None,
) -> Config:
    """Validate merged settings ``data`` for ``env``; raise :class:`ConfigError` listing all
    problems (``problems`` found earlier included). No message contains a secret's value.

    With ``known_sections`` (sections besides the schema's, e.g. those of the built-in
    defaults), any other top-level section not declared in ``extra_sections`` is a problem,
    named after ``origin(section)`` (the variable or file that set it).
    """
    problems = list(problems or [])

    def problem(key: str, rule: str, fix: str) -> None:
        problems.append(ConfigProblem(key=key, rule=rule, fix=fix, env=env))

    if known_sections is not None:
        declared, broken = declared_sections(data)
        if broken:
            problem("extra_sections", broken, 'write extra_sections = ["bot", "strategy"]')
        known = {*SECTIONS, *OPEN_SECTIONS, *TOP_LEVEL_KEYS, *known_sections, *declared}
        for name in sorted({str(k).lower() for k in data} - known):
            where = origin(name) if origin is not None else name
            close = difflib.get_close_matches(name, sorted(known), n=1)
            parts = name.split("_")
            for i in range(len(parts) - 1, 0, -1):  # AI_TRADER_RESILENCE_RETRY_…: a prefix
                if close:
                    break
                close = difflib.get_close_matches("_".join(parts[:i]), sorted(SECTIONS), n=1)
            fix = (
                f"did you mean {close[0]}?"
                if close
                else f'declare your own section: extra_sections = ["{name}"] in settings.toml '
                f"or AI_TRADER_EXTRA_SECTIONS={name}"
            )
            key = where if where.startswith(ENV_PREFIX) else f"{name} (in {where})"
            problem(key, f"names no known section {name!r}", fix)

    if env not in ENVIRONMENTS:
        problem(
            "AI_TRADER_ENV", f"unknown environment {env!r}", f"use one of {', '.join(ENVIRONMENTS)}"
        )
        raise ConfigError(problems, env=env)

    lowered = {str(k).lower(): v for k, v in data.items()}
    built: dict[str, Any] = {}
    for section in OPEN_SECTIONS:  # a scalar would silently drop every setting under it
        raw = lowered.get(section)
        if raw is not None and raw != "" and not isinstance(raw, Mapping):
            problem(section, "must be a table of settings", f"write [{section}] as a table")
    for section, cls in SECTIONS.items():
        raw = lowered.get(section) or {}
        if not isinstance(raw, Mapping):
            problem(section, "must be a table of settings", f"write [{section}] as a table")
            continue
        raw = {str(k).lower(): v for k, v in raw.items()}
        hints = get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        for unknown in sorted(set(raw) - known):
            close = difflib.get_close_matches(unknown, known, n=1)
            hint = (
                f"did you mean {section}.{close[0]}?"
                if close
                else (f"remove it; known keys: {', '.join(sorted(known))}")
            )
            problem(f"{section}.{unknown}", "is not a known setting", hint)
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = raw.get(f.name, f.default if f.default is not MISSING else None)
            checked = _check_value(section, f.name, hints[f.name], f.metadata, value, problem)
            if checked is not MISSING:
                values[f.name] = checked
        if len(values) == len(known):
            built[section] = cls(**values)

    log_level = str(lowered.get("log_level", "INFO")).upper()
    if log_level not in LOG_LEVELS:
        problem("log_level", f"must be one of {', '.join(LOG_LEVELS)}", "use a loguru level name")

    db: DatabaseSettings | None = built.get("database")
    res: ResilienceSettings | None = built.get("resilience")
    feats: FeatureSettings | None = built.get("features")
    redis: RedisSettings | None = built.get("redis")
    trading: TradingSettings | None = built.get("trading")
    if db and db.min_pool_size > db.max_pool_size:
        problem(
            "database.min_pool_size",
            "must be ≤ database.max_pool_size",
            "raise max_pool_size or lower min_pool_size",
        )
    if res and res.retry_max_delay < res.retry_initial_delay:
        problem(
            "resilience.retry_max_delay",
            "must be ≥ resilience.retry_initial_delay",
            "raise retry_max_delay or lower retry_initial_delay",
        )
    if trading and trading.max_order_rate:
        from limits import parse_many

        try:
            parse_many(trading.max_order_rate)
        except ValueError:
            problem(
                "trading.max_order_rate",
                "is not a rate",
                'write it like "20/second" or "20/second; 500/minute" ("" for no throttle)',
            )
    if trading and trading.max_order_size > trading.max_position_size:
        problem(
            "trading.max_order_size",
            "must be ≤ trading.max_position_size",
            "one order cannot be larger than the largest allowed position",
        )
    if feats and feats.paper_trading_enabled and feats.live_trading_enabled:
        problem(
            "features.live_trading_enabled",
            "paper and live trading cannot both be enabled",
            "set features.paper_trading_enabled or features.live_trading_enabled to false",
        )
    if redis and redis.url is not None:
        try:
            parse_redis_url(redis.url)  # single server, cluster and Sentinel forms
        except ValueError as exc:
            what, _, fix = str(exc).partition("; ")
            problem("redis.url", what.partition(": ")[2] or what, fix or FORMS)
    if res and res.circuit_breaker_shared and redis and not redis.url:
        problem(
            "resilience.circuit_breaker_shared",
            "needs redis.url to be set",
            "set redis.url (AI_TRADER_REDIS__URL) or turn circuit_breaker_shared off",
        )
    if env == "production":
        if feats and feats.debug:
            problem(
                "features.debug",
                "must be false in production",
                "set features.debug = false for production",
            )
        if db and db.ssl_mode not in STRONG_SSL_MODES:
            problem(
                "database.ssl_mode",
                "must be require, verify-ca or verify-full in production",
                'set database.ssl_mode = "require" (or stronger)',
            )

    if problems:
        raise ConfigError(problems, env=env)
    extra = {k: v for k, v in lowered.items() if k not in SECTIONS and k not in TOP_LEVEL_KEYS}
    return Config(env=env, log_level=log_level, extra=extra, **built)
