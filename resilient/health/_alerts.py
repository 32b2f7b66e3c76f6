"""Alert rules in the deployment guide's shape, evaluated on every health cycle.

A rule is ``condition`` + ``severity`` + ``notification`` (how long the condition must hold:
``"immediate"``, ``"5 minutes"``, ``"30 seconds"`` or a number of seconds)::

    [default.alerts.circuit_breaker_open]
    condition = 'circuit_breaker_state == "open"'
    severity = "critical"
    notification = "immediate"

A condition is ``<variable> <op> <literal>``. Variables: ``circuit_breaker_state`` (one subject
per breaker), ``health_status`` (the overall status), ``error_rate`` (the tracker's rolling rate),
``component_health`` (one subject per component) and ``<component>_health`` (for example
``database_health``). Operators: ``== != > >= < <=``. Each (rule, subject) fires once when its
condition has held for the notification delay and resolves once when it stops holding.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import operator
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from resilient._core import clock as _clock
from resilient._core.exceptions import ConfigError, ConfigProblem
from resilient._core.log import logger
from resilient._core.sanitize import sanitize
from resilient.config import current_config

__all__ = [
    "DEFAULT_RULES",
    "AlertCallback",
    "AlertEvent",
    "AlertManager",
    "AlertRule",
    "parse_duration",
    "rules_from_config",
]

SEVERITIES = ("critical", "warning", "info")
OPTIONS = {"error_rate_window": 60.0}

# The deployment guide's four recommended alerts (also the defaults in settings.toml).
DEFAULT_RULES: dict[str, dict[str, str]] = {
    "circuit_breaker_open": {
        "condition": 'circuit_breaker_state == "open"',
        "severity": "critical",
        "notification": "immediate",
    },
    "service_degraded": {
        "condition": 'health_status == "degraded"',
        "severity": "warning",
        "notification": "5 minutes",
    },
    "high_error_rate": {
        "condition": "error_rate > 0.1",
        "severity": "warning",
        "notification": "2 minutes",
    },
    "database_connection_failure": {
        "condition": 'database_health == "unhealthy"',
        "severity": "critical",
        "notification": "immediate",
    },
}

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_CONDITION = re.compile(
    r"""^\s*(?P<var>[A-Za-z_][A-Za-z0-9_.-]*)\s*(?P<op>==|!=|>=|<=|>|<)\s*
    (?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<num>[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<word>[A-Za-z_-]+))\s*$""",
    re.VERBOSE,
)
_DURATION = re.compile(
    r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|sec|secs|second|seconds|m|min|mins|minute|minutes|"
    r"h|hr|hrs|hour|hours)?\s*$",
    re.IGNORECASE,
)
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """``"immediate"`` → 0; ``"5 minutes"``, ``"30s"``, ``"1 hour"`` or a number → seconds.

    Raises:
        ValueError: the text is not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value!r}")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("immediate", "immediately", "now", "0"):
            return 0.0
        m = _DURATION.match(text)
        if m:
            unit = (m["unit"] or "s")[0]
            return float(m["n"]) * _UNIT[unit]
    raise ValueError(f"not a duration: {value!r}")


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One parsed alert rule."""

    name: str
    condition: str
    severity: str
    delay: float
    variable: str
    op: str
    literal: str | float
    enabled: bool = True

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any], *, env: str = "") -> AlertRule:
        """Build a rule from the guide's mapping (``condition``, ``severity``, ``notification``).

        Raises:
            ConfigError: naming every broken key of the rule and how to fix it.
        """
        problems: list[ConfigProblem] = []
        where = f"alerts.{name}"
        spec = {str(k).lower(): v for k, v in spec.items()}
        known = {"condition", "severity", "notification", "enabled", "description"}
        for key in spec:
            if key not in known:
                problems.append(
                    ConfigProblem(
                        f"{where}.{key}",
                        "unknown alert key",
                        f"use only {', '.join(sorted(known))}",
                        env,
                    )
                )
        condition = spec.get("condition")
        variable, op, literal = "", "==", ""
        parsed_literal: str | float = ""
        if not isinstance(condition, str) or not (m := _CONDITION.match(condition)):
            problems.append(
                ConfigProblem(
                    f"{where}.condition",
                    "must be '<variable> <op> <value>' (ops: == != > >= < <=)",
                    "write e.g. condition = 'circuit_breaker_state == \"open\"' "
                    "or 'error_rate > 0.1'",
                    env,
                )
            )
        else:
            variable, op = m["var"], m["op"]
            if m["num"] is not None:
                parsed_literal = float(m["num"])
            else:
                literal = m["dq"] if m["dq"] is not None else (m["sq"] or m["word"] or "")
                parsed_literal = literal
            if op in (">", ">=", "<", "<=") and not isinstance(parsed_literal, float):
                problems.append(
                    ConfigProblem(
                        f"{where}.condition",
                        f"operator {op} needs a number",
                        "compare numbers with > >= < <=, strings with == or !=",
                        env,
                    )
                )
        severity = str(spec.get("severity", "warning")).lower()
        if severity not in SEVERITIES:
            problems.append(
                ConfigProblem(
                    f"{where}.severity",
                    f"must be one of {', '.join(SEVERITIES)}",
                    'set severity = "critical" or "warning"',
                    env,
                )
            )
        delay = 0.0
        try:
            delay = parse_duration(spec.get("notification", "immediate"))
        except ValueError:
            problems.append(
                ConfigProblem(
                    f"{where}.notification",
                    "must be 'immediate' or a duration",
                    'write "immediate", "5 minutes", "30 seconds" or a number of seconds',
                    env,
                )
            )
        enabled = spec.get("enabled", True)
        if not isinstance(enabled, bool):
            problems.append(
                ConfigProblem(
                    f"{where}.enabled", "must be true or false", "set enabled = true or false", env
                )
            )
        if problems:
            raise ConfigError(problems, env=env)
        return cls(
            name, str(condition), severity, delay, variable, op, parsed_literal, bool(enabled)
        )

    def holds(self, value: object) -> bool:
        """Whether the condition holds for ``value`` (``False`` for incomparable values)."""
        literal: object = self.literal
        if isinstance(literal, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
        else:
            value = str(value)
        try:
            return bool(_OPS[self.op](value, literal))
        except TypeError:
            return False


def rules_from_config(
    section: Mapping[str, Any] | None, *, env: str = ""
) -> tuple[list[AlertRule], dict[str, float]]:
    """Parse the ``alerts`` settings section into rules and options.

    Scalars are options (``error_rate_window``); tables are rules. Every problem of every rule
    is reported at once.

    Raises:
        ConfigError: a rule or option is invalid.
    """
    rules: list[AlertRule] = []
    options = dict(OPTIONS)
    problems: list[ConfigProblem] = []
    for raw_name, spec in (section or {}).items():
        name = str(raw_name).lower()
        if isinstance(spec, Mapping):
            try:
                rules.append(AlertRule.parse(name, spec, env=env))
            except ConfigError as exc:
                problems.extend(exc.problems)
        elif name in OPTIONS:
            try:
                options[name] = parse_duration(spec)
                if options[name] <= 0:
                    raise ValueError(name)
            except ValueError:
                problems.append(
                    ConfigProblem(
                        f"alerts.{name}",
                        "must be a positive number of seconds",
                        f"set alerts.{name} = 60",
                        env,
                    )
                )
        else:
            problems.append(
                ConfigProblem(
                    f"alerts.{name}",
                    "is neither an alert rule table nor a known option",
                    "define [alerts.<rule>] with condition/severity/notification, or use "
                    + ", ".join(sorted(OPTIONS)),
                    env,
                )
            )
    if problems:
        raise ConfigError(problems, env=env)
    return rules, options


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert firing or resolving for one subject (a breaker, a component or ``system``)."""

    rule: str
    subject: str
    severity: str
    state: str
    condition: str
    value: Any
    message: str
    since: str
    at: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        value = self.value if isinstance(self.value, int | float | str | None) else str(self.value)
        return {
            "rule": self.rule,
            "subject": self.subject,
            "severity": self.severity,
            "state": self.state,
            "condition": self.condition,
            "value": value,
            "message": self.message,
            "since": self.since,
            "at": self.at,
        }


AlertCallback = Callable[[AlertEvent], Any]


@dataclass(slots=True)
class _Tracked:
    pending_since: float
    pending_wall: float
    firing: AlertEvent | None = None
    last_value: Any = None


def _iso(wall: float) -> str:
    # the same text as health's iso_utc (health imports this module, not the reverse)
    return _dt.datetime.fromtimestamp(wall, tz=_dt.UTC).isoformat()


class AlertManager:
    """Evaluates alert rules against health-cycle values; notifies loguru and callbacks."""

    def __init__(
        self,
        rules: list[AlertRule] | None = None,
        *,
        clock: _clock.Clock | None = None,
        history: int = 100,
    ) -> None:
        if rules is None:
            rules = [AlertRule.parse(n, s) for n, s in DEFAULT_RULES.items()]
        self.rules = [r for r in rules if r.enabled]
        self.options = dict(OPTIONS)
        self._clock = clock
        self._state: dict[tuple[str, str], _Tracked] = {}
        self._callbacks: list[AlertCallback] = []
        self._failed_callbacks: set[int] = set()
        self.history: deque[AlertEvent] = deque(maxlen=history)
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Any = None, *, clock: _clock.Clock | None = None) -> AlertManager:
        """Rules from the ``alerts`` settings section (the guide's defaults when absent).

        Raises:
            ConfigError: the section is invalid.
        """
        if config is None:
            config = current_config()
        section = config.section("alerts")
        rules, options = rules_from_config(section or DEFAULT_RULES, env=config.env)
        manager = cls(rules, clock=clock)
        manager.options = options
        return manager

    def replace_rules(
        self, rules: list[AlertRule], options: Mapping[str, float] | None = None
    ) -> None:
        """Swap in new rules (after a configuration reload). Alerts of rules that still exist
        keep their pending/firing state; those of removed or disabled rules are dropped silently."""
        with self._lock:
            self.rules = [r for r in rules if r.enabled]
            if options is not None:
                self.options = dict(options)
            kept = {r.name for r in self.rules}
            for key in [k for k in self._state if k[0] not in kept]:
                del self._state[key]

    def on_alert(self, callback: AlertCallback) -> Callable[[], None]:
        """Call ``callback(event)`` (sync or async) on every firing and resolution."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def active(self) -> list[AlertEvent]:
        """The alerts firing now."""
        with self._lock:
            return [t.firing for t in self._state.values() if t.firing is not None]

    def _now(self) -> _clock.Clock:
        return self._clock if self._clock is not None else _clock._current

    def _subjects(self, rule: AlertRule, values: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        if rule.variable in values:
            return dict(values[rule.variable])
        if rule.variable.endswith("_health"):
            component = rule.variable[: -len("_health")]
            comps = values.get("component_health", {})
            if component in comps:
                return {component: comps[component]}
        return {}

    def evaluate(self, values: Mapping[str, Mapping[str, Any]]) -> list[AlertEvent]:
        """Evaluate every rule; returns the events (fired and resolved) of this cycle.

        ``values`` maps a variable to its subjects' values, e.g.
        ``{"circuit_breaker_state": {"alpaca": "open"}, "health_status": {"system": "degraded"},
        "error_rate": {"system": 0.02}, "component_health": {"database": "healthy"}}``.
        Delivers to loguru and to sync callbacks; use :meth:`aevaluate` for async callbacks.
        """
        clock = self._now()
        now, wall = clock.monotonic(), clock.time()
        events: list[AlertEvent] = []
        with self._lock:
            seen: set[tuple[str, str]] = set()
            for rule in self.rules:
                for subject, value in self._subjects(rule, values).items():
                    if not rule.holds(value):
                        continue
                    key = (rule.name, subject)
                    seen.add(key)
                    tracked = self._state.get(key)
                    if tracked is None:
                        tracked = self._state[key] = _Tracked(now, wall)
                    tracked.last_value = value
                    if tracked.firing is None and now - tracked.pending_since >= rule.delay:
                        tracked.firing = self._event(
                            rule, subject, value, "firing", tracked.pending_wall, wall
                        )
                        events.append(tracked.firing)
            rules = {r.name: r for r in self.rules}
            for key in [k for k in self._state if k not in seen]:
                tracked = self._state.pop(key)
                if tracked.firing is not None:
                    events.append(
                        self._event(
                            rules[key[0]],
                            key[1],
                            tracked.last_value,
                            "resolved",
                            tracked.pending_wall,
                            wall,
                        )
                    )
            self.history.extend(events)
        for event in events:
            _log_event(event)
        return events

    async def aevaluate(self, values: Mapping[str, Mapping[str, Any]]) -> list[AlertEvent]:
        """:meth:`evaluate`, then deliver to every callback (awaiting async ones)."""
        events = self.evaluate(values)
        for event in events:
            await self._deliver(event)
        return events

    def _event(
        self, rule: AlertRule, subject: str, value: Any, state: str, since: float, wall: float
    ) -> AlertEvent:
        shown = round(value, 4) if isinstance(value, float) else value
        if state == "firing":
            message = f"alert {rule.name} firing for {subject}: {rule.condition} (value {shown})"
        else:
            message = f"alert {rule.name} resolved for {subject}: {rule.condition} no longer holds"
        return AlertEvent(
            rule.name,
            sanitize(subject),
            rule.severity,
            state,
            rule.condition,
            value,
            sanitize(message),
            _iso(since),
            _iso(wall),
        )

    async def _deliver(self, event: AlertEvent) -> None:
        for callback in list(self._callbacks):
            try:
                outcome = callback(event)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:
                if id(callback) not in self._failed_callbacks:  # logged once per callback
                    self._failed_callbacks.add(id(callback))
                    logger.error(
                        "alert callback {} failed: {}: {}",
                        getattr(callback, "__qualname__", repr(callback)),
                        type(exc).__name__,
                        exc,
                    )

    def reset(self) -> None:
        """Forget pending and firing alerts and the history (tests)."""
        with self._lock:
            self._state.clear()
            self.history.clear()


def _log_event(event: AlertEvent) -> None:
    bound = logger.bind(alert=event.rule, subject=event.subject, severity=event.severity)
    if event.state == "resolved":
        bound.info(event.message)
    elif event.severity == "critical":
        bound.critical(event.message)
    elif event.severity == "warning":
        bound.warning(event.message)
    else:
        bound.info(event.message)
