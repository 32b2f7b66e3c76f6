"""Logging on loguru: the package's own records on its own handlers; the host's left alone.

The package logs through an independent loguru logger (its own core, every record bound with
``resilient=True``), so it never adds to, removes or duplicates into the application's loguru
handlers. Nothing is written until :func:`enable_logging` (called by the CLI and the factory)
adds a sink — human-readable lines in development and testing, JSON lines in staging and
production — or, with ``propagate=True``, hands each record to the application's own loguru
handlers instead ("I already configure loguru").

:func:`warn_once` is for the few warnings an application must see even before logging is
enabled (a factory used without ``initialize_resilience()``, a sync policy blocking an event
loop): with the package's logging off they go to the application's loguru handlers.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger as _root_logger
from loguru._logger import Core as _Core  # loguru's documented way to build a separate logger
from loguru._logger import Logger as _Logger

from resilient._core.context import current_correlation_id
from resilient._core.sanitize import sanitize, sanitize_obj

if TYPE_CHECKING:
    from loguru import Logger, Message, Record

__all__ = [
    "disable_logging",
    "enable_logging",
    "logger",
    "logging_enabled",
    "set_defaults_source",
    "warn_once",
]

_PACKAGE = "resilient"
_MARK = "resilient"
"""The extra every record of the package carries (``record["extra"]["resilient"] is True``)."""


def _patch(record: Record) -> None:
    extra = record["extra"]
    if "correlation_id" not in extra:
        extra["correlation_id"] = current_correlation_id() or "-"
    record["message"] = sanitize(record["message"])
    # One pass over the whole mapping: a secret-named str or bytes value is masked outright,
    # every other value has the secrets inside it masked.
    extra.update(
        sanitize_obj({k: v for k, v in extra.items() if k not in ("correlation_id", _MARK)})
    )


def _new_logger() -> Logger:
    """A logger with a core of its own: its handlers are not the application's."""
    base: Logger = _Logger(  # type: ignore[no-untyped-call, assignment]
        core=_Core(),  # type: ignore[no-untyped-call]
        exception=None,
        depth=0,
        record=False,
        lazy=False,
        colors=False,
        raw=False,
        capture=True,
        patchers=[],
        extra={},
    )
    return base


_own: Logger = _new_logger()
logger: Logger = _own.bind(**{_MARK: True}).patch(_patch)
"""The package's logger: writes only to the handler :func:`enable_logging` installs."""

_lock = threading.Lock()
_handler_id: int | None = None
# The level number of the package's handler while enable_logging() is in force, else None:
# lets failure paths skip building a record nobody writes (loguru's own check costs ~1 µs).
_level_no: int | None = None


_level_listeners: list[Callable[[], None]] = []


def _builtin_defaults() -> tuple[str, bool]:
    return "INFO", False


_defaults_source: Callable[[], tuple[str, bool]] = _builtin_defaults


def set_defaults_source(source: Callable[[], tuple[str, bool]]) -> None:
    """Where :func:`enable_logging` reads its defaults: ``source()`` returns the level and
    whether to write JSON lines (the configuration package sets it to its settings)."""
    global _defaults_source
    _defaults_source = source


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
_HIDDEN = frozenset({"correlation_id", "_rest", "_exc", "_json", _MARK})


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


_ORIGIN = ("name", "function", "line", "module", "file", "thread", "process", "time", "elapsed")


def _to_host(message: Message) -> None:
    """Hand one of the package's records to the application's loguru handlers, keeping its
    origin (module, function, line, time) and extras. A traceback is never passed on (a
    handler with ``diagnose=True`` would print local variables): only the exception's class
    and sanitized message, appended to the text."""
    record = message.record
    origin: dict[str, Any] = {key: record[key] for key in _ORIGIN}  # type: ignore[literal-required]
    text = record["message"]
    exc = _exception_text(record)
    if exc:
        text = f"{text} | {exc}"
    extra = {k: v for k, v in record["extra"].items() if k not in ("_rest", "_exc", "_json")}
    _root_logger.patch(lambda r: r.update(origin)).bind(**extra).log(  # type: ignore[typeddict-item]
        record["level"].name, "{}", text
    )


def enable_logging(
    level: str | None = None,
    *,
    json_lines: bool | None = None,
    sink: TextIO | Callable[[str], None] | None = None,
    propagate: bool = False,
) -> int:
    """Write the package's records to ``sink`` (stderr by default); returns the handler id.

    Args:
        level: a loguru level; from settings when omitted (``features.debug`` means DEBUG).
        json_lines: JSON lines instead of text; by default JSON in staging and production.
        sink: a stream or a callable receiving each formatted line.
        propagate: instead of a sink of its own, hand each record (at ``level`` and above) to
            the application's loguru handlers, which format and filter it; every record
            carries ``extra["resilient"] = True`` for their filters.

    Calling it again replaces the package's previous handler. The application's loguru
    handlers are never added to, removed or replaced, and with a sink of its own the
    package's records do not reach them (no line is written twice). Exception tracebacks are
    never written: only the exception's class and its sanitized message.
    """
    global _handler_id, _level_no
    if level is None or json_lines is None:
        default_level, default_json = _defaults_source()
        level = default_level if level is None else level
        json_lines = default_json if json_lines is None else json_lines
    with _lock:
        if _handler_id is not None:
            _own.remove(_handler_id)
            _handler_id = _level_no = None
        if propagate:
            _handler_id = _own.add(_to_host, level=level.upper(), format="{message}", catch=True)
        else:
            _handler_id = _own.add(
                sink if sink is not None else sys.stderr,
                level=level.upper(),
                format=_json_format if json_lines else _text_format,
                colorize=False if json_lines else None,
                backtrace=False,
                diagnose=False,
                catch=True,
            )
        _level_no = _own.level(level.upper()).no
        handler = _handler_id
    _notify()
    return handler


def disable_logging() -> None:
    """Remove the package's handler: its records are written nowhere again."""
    global _handler_id, _level_no
    with _lock:
        _level_no = None
        if _handler_id is not None:
            _own.remove(_handler_id)
            _handler_id = None
    _notify()


_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(key: str, message: str, *args: Any) -> bool:
    """Log the WARNING ``message.format(*args)`` once per ``key`` for the process; returns
    whether it was written now.

    With the package's logging enabled it goes to the package's handler; otherwise to the
    application's loguru handlers (loguru's default prints to stderr), because these warnings
    are about the application's own code and must not wait for ``enable_logging()``."""
    if key in _warned:  # lock-free for the common case: written already
        return False
    with _warned_lock:
        if key in _warned:
            return False
        _warned.add(key)
    if _level_no is not None:
        logger.opt(depth=1).warning(message, *args)
    else:
        _root_logger.bind(**{_MARK: True}).patch(_patch).opt(depth=1).warning(message, *args)
    return True


def reset_warnings() -> None:
    """Forget which :func:`warn_once` keys were written (tests)."""
    with _warned_lock:
        _warned.clear()
