"""Logging on loguru: silent until enabled, correlation id on every record, secrets masked.

Following loguru's convention for libraries, the package disables its own records at import;
:func:`enable_logging` (called by the CLI and the factory) turns them on with a sink whose
level and format come from settings: human-readable lines in development and testing, JSON
lines in staging and production.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger as _root_logger

from ._context import current_correlation_id
from ._sanitize import sanitize, sanitize_obj

if TYPE_CHECKING:
    from loguru import Logger, Record

__all__ = ["disable_logging", "enable_logging", "logger", "logging_enabled"]

_PACKAGE = "resilient"


def _patch(record: Record) -> None:
    extra = record["extra"]
    if "correlation_id" not in extra:
        extra["correlation_id"] = current_correlation_id() or "-"
    record["message"] = sanitize(record["message"])
    # One pass over the whole mapping: a secret-named str or bytes value is masked outright,
    # every other value has the secrets inside it masked.
    extra.update(sanitize_obj({k: v for k, v in extra.items() if k != "correlation_id"}))


logger: Logger = _root_logger.patch(_patch)
_root_logger.disable(_PACKAGE)

_lock = threading.Lock()
_handler_id: int | None = None
# The level number of the package's handler while enable_logging() is in force, else None:
# lets failure paths skip building a record nobody writes (loguru's own check costs ~1 µs).
_level_no: int | None = None


_level_listeners: list[Callable[[], None]] = []


def on_level_change(listener: Callable[[], None]) -> None:
    """Call ``listener()`` whenever logging is enabled, re-levelled or disabled."""
    _level_listeners.append(listener)


def _notify() -> None:
    for listener in list(_level_listeners):
        listener()


def logging_enabled(level_no: int = 0) -> bool:
    """Whether the package's handler is installed and writes records of level ``level_no``
    (a loguru level number: 10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR); about 50 ns."""
    threshold = _level_no
    return threshold is not None and level_no >= threshold


_TEXT_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "<cyan>{extra[correlation_id]}</cyan> | {message}{extra[_rest]}{extra[_exc]}\n"
)
_HIDDEN = frozenset({"correlation_id", "_rest", "_exc", "_json"})


def _is_ours(record: Record) -> bool:
    name = record["name"] or ""
    return name == _PACKAGE or name.startswith(_PACKAGE + ".")


def _exception_text(record: Record) -> str:
    exc = record["exception"]
    if exc is None or exc.type is None:
        return ""
    return f"{exc.type.__name__}: {sanitize(exc.value)}"


def _text_format(record: Record) -> str:
    extra = record["extra"]
    rest = [f"{k}={v}" for k, v in extra.items() if k not in _HIDDEN]
    extra["_rest"] = (" " + " ".join(rest)) if rest else ""
    exc = _exception_text(record)
    extra["_exc"] = f" | {exc}" if exc else ""
    return _TEXT_FORMAT


def _json_format(record: Record) -> str:
    payload: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "logger": record["name"],
        "message": record["message"],
        "correlation_id": record["extra"].get("correlation_id", "-"),
    }
    extra = {k: v for k, v in record["extra"].items() if k not in _HIDDEN}
    if extra:
        payload["extra"] = extra
    exc = _exception_text(record)
    if exc:
        payload["exception"] = exc
    record["extra"]["_json"] = json.dumps(payload, default=str)
    return "{extra[_json]}\n"


def enable_logging(
    level: str | None = None,
    *,
    json_lines: bool | None = None,
    sink: TextIO | Callable[[str], None] | None = None,
) -> int:
    """Send the package's records to ``sink`` (stderr by default); returns the handler id.

    Args:
        level: a loguru level; from settings when omitted (``features.debug`` means DEBUG).
        json_lines: JSON lines instead of text; by default JSON in staging and production.
        sink: a stream or a callable receiving each formatted line.

    Calling it again replaces the previous handler. loguru's default stderr handler is removed
    so that lines are not written twice. Exception tracebacks are never written: only the
    exception's class and its sanitized message.
    """
    global _handler_id, _level_no
    from .config import current_config

    config = current_config()
    if level is None:
        level = "DEBUG" if config.features.debug else config.log_level
    if json_lines is None:
        json_lines = config.env in ("staging", "production")
    with _lock:
        if _handler_id is not None:
            _root_logger.remove(_handler_id)
            _handler_id = _level_no = None
        # loguru's default stderr handler (id 0) would print every line a second time.
        with contextlib.suppress(ValueError):
            _root_logger.remove(0)
        _root_logger.enable(_PACKAGE)
        _handler_id = _root_logger.add(
            sink if sink is not None else sys.stderr,
            level=level.upper(),
            format=_json_format if json_lines else _text_format,
            filter=_is_ours,
            colorize=False if json_lines else None,
            backtrace=False,
            diagnose=False,
            catch=True,
        )
        _level_no = _root_logger.level(level.upper()).no
        handler = _handler_id
    _notify()
    return handler


def disable_logging() -> None:
    """Remove the package's handler and silence its records again."""
    global _handler_id, _level_no
    with _lock:
        _level_no = None
        if _handler_id is not None:
            _root_logger.remove(_handler_id)
            _handler_id = None
        _root_logger.disable(_PACKAGE)
    _notify()
