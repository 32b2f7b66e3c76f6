"""The ``services`` settings section: per-service and per-method policy overrides.

```toml
[default.services.defaults]          # every service
rate_limit = "200/minute"
[default.services.main_broker]       # one service (overrides the defaults)
resilience_enabled = true            # canary switch: false = pass-through (risk checks stay)
[default.services.main_broker.methods.get_bars]
timeout = 30.0
```
Unset values fall back to the ``resilience`` and ``trading`` sections.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from resilient._core.exceptions import ConfigError, ConfigProblem
from resilient.config import Config
from resilient.config._bounds import service_bound

__all__ = [
    "DEFAULTS_KEY",
    "DEFAULT_EXCLUDE",
    "METHOD_KINDS",
    "MethodPolicy",
    "ServiceSettings",
    "parse_exclude",
    "service_settings",
]

DEFAULTS_KEY = "defaults"
METHOD_KINDS = ("read", "order", "cancel", "other")


@dataclass(frozen=True, slots=True)
class MethodPolicy:
    """The resolved policy of one method (or, before method overrides, of a service)."""

    timeout: float = 10.0
    order_timeout: float = 30.0
    failure_threshold: int = 5
    reset_timeout: float = 60.0
    max_attempts: int = 3
    initial_delay: float = 1.0
    max_delay: float = 30.0
    cache_ttl: float = 300.0
    kind: str | None = None  # None: guessed from the method's name
    # load control: the method's cost in the service's rate limit, its own (endpoint) limit
    # linked to the service's, and hedging (reads only): "" off, "p95", or seconds
    weight: int = 1
    rate_limit: str = ""
    hedge_after: str = ""
    # Keys set in the services section; the others follow the resilience section, reloads
    # included, through the decorators' own defaults.
    explicit: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Settings of one service after layering defaults, the service and its methods."""

    name: str
    resilience_enabled: bool = True
    rate_limit: str = ""
    rate_limit_max_wait: float = 5.0
    paper: bool | None = None
    # Added to / removed from (``"-404"``, ``"-validation"``) DEFAULT_EXCLUDE: errors that are
    # business outcomes, not failures of the service's breaker.
    exclude: tuple[str | int, ...] = ()
    # load control: priority bulkhead (0: none) and the venue's rate-limit headers
    bulkhead: int = 0
    bulkhead_max_queue: int = 100
    bulkhead_queue_timeout: float = 5.0
    rate_limit_used_header: str = "X-MBX-USED-WEIGHT-1M"
    rate_limit_remaining_header: str = "X-RateLimit-Remaining"
    rate_limit_reset_header: str = "X-RateLimit-Reset"
    policy: MethodPolicy = field(default_factory=MethodPolicy)
    methods: Mapping[str, MethodPolicy] = field(default_factory=dict)

    def for_method(self, method: str) -> MethodPolicy:
        """The policy of ``method`` (the service policy when it has no override)."""
        return self.methods.get(method, self.policy)


_SERVICE_KEYS: dict[str, type] = {
    "resilience_enabled": bool,
    "rate_limit": str,
    "rate_limit_max_wait": float,
    "paper": bool,
    "exclude": tuple,
    "bulkhead": int,
    "bulkhead_max_queue": int,
    "bulkhead_queue_timeout": float,
    "rate_limit_used_header": str,
    "rate_limit_remaining_header": str,
    "rate_limit_reset_header": str,
}
# Business outcomes that do not count against a service's breaker by default.
DEFAULT_EXCLUDE = ("broker_rejection", "validation", "data_unavailable", "risk_limit")
_CATEGORY_NAMES = (
    "network",
    "timeout",
    "rate_limit",
    "authentication",
    "validation",
    "broker_rejection",
    "data_unavailable",
    "database",
    "circuit_open",
    "risk_limit",
    "internal",
)


def parse_exclude(
    entries: tuple[str | int, ...],
) -> tuple[frozenset[str], frozenset[int], frozenset[int]]:
    """``(categories, status codes added, status codes removed)`` from DEFAULT_EXCLUDE and
    ``services.<name>.exclude`` (entries already validated)."""
    categories = set(DEFAULT_EXCLUDE)
    added: set[int] = set()
    removed: set[int] = set()
    for entry in entries:
        text = str(entry).strip()
        minus = text.startswith("-")
        text = text.lstrip("-").strip()
        if text.isdigit():
            (removed if minus else added).add(int(text))
            (added if minus else removed).discard(int(text))
        elif minus:
            categories.discard(text)
        else:
            categories.add(text)
    return frozenset(categories), frozenset(added), frozenset(removed)


_POLICY_KEYS: dict[str, type] = {
    "timeout": float,
    "order_timeout": float,
    "failure_threshold": int,
    "reset_timeout": float,
    "max_attempts": int,
    "initial_delay": float,
    "max_delay": float,
    "cache_ttl": float,
    "kind": str,
    "hedge_after": str,
}
_METHOD_KEYS: dict[str, type] = {"weight": int, "rate_limit": str}  # per method only
_POSITIVE = {
    "timeout",
    "order_timeout",
    "reset_timeout",
    "cache_ttl",
    "failure_threshold",
    "max_attempts",
}


def _hedge_after_ok(raw: str) -> bool:
    text = raw.strip().lower()
    if text.startswith("p") and text[1:].isdigit():
        return 1 <= int(text[1:]) <= 99
    try:
        return math.isfinite(float(text)) and float(text) > 0
    except ValueError:
        return False


def _lower(data: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in data.items()}


class _Checker:
    def __init__(self, env: str) -> None:
        self.env = env
        self.problems: list[ConfigProblem] = []

    def problem(self, key: str, rule: str, fix: str) -> None:
        self.problems.append(ConfigProblem(key=key, rule=rule, fix=fix, env=self.env))

    def value(self, key: str, typ: type, raw: Any) -> Any:
        name = key.rsplit(".", 1)[-1]
        if typ is tuple:
            return self.exclude_list(key, raw)
        if typ is bool:
            if isinstance(raw, bool):
                return raw
            self.problem(key, "must be a boolean (true/false)", "write true or false")
            return None
        if typ is str:
            if not isinstance(raw, str):
                self.problem(key, "must be a string", "quote the value")
                return None
            if name == "kind" and raw not in METHOD_KINDS:
                self.problem(
                    key,
                    f"must be one of {', '.join(METHOD_KINDS)}",
                    "pick the kind that describes the method",
                )
                return None
            if name == "hedge_after" and raw and not _hedge_after_ok(raw):
                self.problem(
                    key,
                    "is not a hedge delay",
                    'write "p95" (or p50…p99: the observed latency percentile) or seconds '
                    'such as "0.05" (empty for none)',
                )
                return None
            if name == "rate_limit" and raw:
                from limits import parse_many

                try:
                    parse_many(raw)
                except ValueError:
                    self.problem(
                        key,
                        "is not a rate limit",
                        'write it like "200/minute" or "10/second; 200/minute" (empty for none)',
                    )
                    return None
            return raw
        ok = isinstance(raw, int | float) and not isinstance(raw, bool)
        if ok and typ is int and isinstance(raw, float):
            ok = raw.is_integer()
        if not ok or not math.isfinite(float(raw)):
            kind = "an integer" if typ is int else "a number"
            self.problem(
                key, f"must be {kind} (got {type(raw).__name__})", f"write {key} as a plain number"
            )
            return None
        number = typ(raw)
        if name in _POSITIVE and number <= 0:
            self.problem(key, "must be > 0", "choose a positive value")
            return None
        if number < 0:
            self.problem(key, "must be ≥ 0", "choose a value ≥ 0")
            return None
        if (rule := service_bound(name, number)) is not None:  # upper bounds (config._bounds)
            self.problem(key, rule, "choose a value in that range")
            return None
        return number

    def exclude_list(self, key: str, raw: Any) -> tuple[str | int, ...] | None:
        fix = (
            'a list of error categories and HTTP status codes, e.g. ["broker_rejection", 404]; '
            'prefix one with "-" to remove it from the defaults ("-data_unavailable", "-404"); '
            f"categories: {', '.join(_CATEGORY_NAMES)}"
        )
        if not isinstance(raw, list | tuple):
            self.problem(key, "must be a list", fix)
            return None
        for entry in raw:
            if isinstance(entry, int) and not isinstance(entry, bool):
                ok = 100 <= entry <= 599
            elif isinstance(entry, str):
                text = entry.strip().lstrip("-").strip()
                ok = text in _CATEGORY_NAMES or (text.isdigit() and 100 <= int(text) <= 599)
            else:
                ok = False
            if not ok:
                self.problem(key, f"{entry!r} is not an error category or HTTP status", fix)
                return None
        return tuple(raw)

    def unknown(self, key: str, known: set[str]) -> None:
        leaf = key.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(leaf, sorted(known), n=1)
        fix = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(sorted(known))}"
        self.problem(key, "is not a known service setting", fix)


def _base_policy(config: Config) -> MethodPolicy:
    res = config.resilience
    return MethodPolicy(
        timeout=10.0,
        order_timeout=config.trading.default_order_timeout,
        failure_threshold=res.circuit_breaker_failure_threshold,
        reset_timeout=res.circuit_breaker_timeout,
        max_attempts=res.retry_max_attempts,
        initial_delay=res.retry_initial_delay,
        max_delay=res.retry_max_delay,
        cache_ttl=res.fallback_cache_ttl,
    )


def _apply(
    checker: _Checker,
    prefix: str,
    raw: Mapping[str, Any],
    service: dict[str, Any],
    policy: dict[str, Any],
    *,
    allow_service_keys: bool,
) -> None:
    known = set(_POLICY_KEYS) | (
        {"methods"} | set(_SERVICE_KEYS) if allow_service_keys else set(_METHOD_KEYS)
    )
    for key, value in _lower(raw).items():
        dotted = f"{prefix}.{key}"
        if key == "methods" and allow_service_keys:
            continue
        if not allow_service_keys and key in _METHOD_KEYS:
            checked = checker.value(dotted, _METHOD_KEYS[key], value)
            if checked is not None:
                policy[key] = checked
        elif key in _POLICY_KEYS:
            checked = checker.value(dotted, _POLICY_KEYS[key], value)
            if checked is not None:
                policy[key] = checked
        elif allow_service_keys and key in _SERVICE_KEYS:
            checked = checker.value(dotted, _SERVICE_KEYS[key], value)
            if checked is not None:
                service[key] = checked
        else:
            checker.unknown(dotted, known)


def service_settings(config: Config, name: str) -> ServiceSettings:
    """Resolve the settings of service ``name``.

    Raises:
        ConfigError: a ``services`` value is of the wrong type, out of range or unknown.
    """
    section = _lower(config.section("services"))
    checker = _Checker(config.env)
    service: dict[str, Any] = {}
    policy: dict[str, Any] = {}
    defaults = section.get(DEFAULTS_KEY, {})
    own = section.get(name.lower(), section.get(name, {}))
    for where, raw in ((f"services.{DEFAULTS_KEY}", defaults), (f"services.{name}", own)):
        if not isinstance(raw, Mapping):
            checker.problem(where, "must be a table of settings", f"write [{where}] as a table")
            continue
        _apply(checker, where, raw, service, policy, allow_service_keys=True)
    base = replace(_base_policy(config), **policy, explicit=frozenset(policy))
    methods: dict[str, MethodPolicy] = {}
    raw_methods = own.get("methods", {}) if isinstance(own, Mapping) else {}
    if not isinstance(raw_methods, Mapping):
        checker.problem(
            f"services.{name}.methods",
            "must be a table of methods",
            f"write [services.{name}.methods.<method>] tables",
        )
        raw_methods = {}
    for method, raw in raw_methods.items():
        where = f"services.{name}.methods.{method}"
        if not isinstance(raw, Mapping):
            checker.problem(where, "must be a table of settings", f"write [{where}] as a table")
            continue
        overrides: dict[str, Any] = {}
        _apply(checker, where, raw, {}, overrides, allow_service_keys=False)
        methods[str(method)] = replace(
            base, **overrides, explicit=base.explicit | frozenset(overrides)
        )
    if checker.problems:
        raise ConfigError(checker.problems, env=config.env)
    # ``service`` holds only _SERVICE_KEYS, each a ServiceSettings field.
    return ServiceSettings(name=name, policy=base, methods=methods, **service)
