"""Errors: the exception tree, the error taxonomy, correlation ids and the error tracker.

``classify(exc)`` names the kind of a failure (:class:`ErrorCategory`); the tracker counts each
failing exception once — however many layers see it — by category and component, keeps a rolling
error rate for alerts, and logs the error once with its correlation id and a sanitized message.
The package subscribes the tracker to the policy events when it is imported.
"""

from __future__ import annotations

from resilient._core.classify import (
    ErrorCategory,
    classify,
    is_transient,
    proves_not_sent,
    register_classifier,
    retry_after,
)
from resilient._core.context import correlation_id, current_correlation_id
from resilient._core.exceptions import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigError,
    ResilientError,
    RiskLimitError,
    TimeoutError,
    TradingDisabledError,
)
from resilient._instrument.subscribers import install as install_hooks
from resilient._instrument.tracker import ErrorRecord, ErrorTracker, record_error, tracker

__all__ = [
    "BulkheadFullError",
    "CircuitOpenError",
    "ConfigError",
    "ErrorCategory",
    "ErrorRecord",
    "ErrorTracker",
    "ResilientError",
    "RiskLimitError",
    "TimeoutError",
    "TradingDisabledError",
    "classify",
    "correlation_id",
    "current_correlation_id",
    "install_hooks",
    "is_transient",
    "proves_not_sent",
    "record_error",
    "register_classifier",
    "retry_after",
    "tracker",
]
