"""Circuit state storage: pybreaker's storage seam, in-process, plus a seam for shared state.

Every breaker keeps its state in a :class:`LocalCircuitStorage` (a
``pybreaker.CircuitBreakerStorage``), the one place its state lives, so the call path never
leaves the process. Breakers created with ``shared=True`` additionally mirror their transitions
to a :class:`SharedStateBackend` and apply the transitions other processes publish. Half-open
trial permits are then taken cluster-wide.

The Redis implementation is a backend (a higher layer): it registers here
(:func:`register_shared_installer`, :func:`on_shared_attach`), so the breaker never imports it.

Clock-skew assumption: hosts sharing circuit state are NTP-synchronised to well below the
breakers' ``reset_timeout``; a remote ``opened_at`` (wall-clock seconds) is converted to local
monotonic time when it is received.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from resilient._core.pybreaker_import import pybreaker

__all__ = [
    "ORIGIN",
    "CircuitRecord",
    "FailureTally",
    "LocalCircuitStorage",
    "SharedStateBackend",
    "get_shared_backend",
    "install_shared_backend",
    "on_backend_change",
    "on_shared_attach",
    "register_shared_installer",
    "set_shared_backend",
    "shared_attached",
]

ORIGIN = f"{os.getpid()}-{os.urandom(3).hex()}"
"""This process's identity in shared circuit records."""


class LocalCircuitStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker's in-memory storage: a breaker's state name, its consecutive failure and
    trial success counters and when it opened."""

    def __init__(self, state: str = pybreaker.STATE_CLOSED) -> None:
        super().__init__("local")
        self._state = state
        self.fail_counter = 0
        self.successes = 0
        self._opened_at: datetime | None = None

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        self._state = state

    def increment_counter(self) -> None:
        self.fail_counter += 1

    def reset_counter(self) -> None:
        self.fail_counter = 0

    def increment_success_counter(self) -> None:
        self.successes += 1

    def reset_success_counter(self) -> None:
        self.successes = 0

    @property
    def counter(self) -> int:
        return self.fail_counter

    @property
    def success_counter(self) -> int:
        return self.successes

    @property
    def opened_at(self) -> datetime | None:
        return self._opened_at

    @opened_at.setter
    def opened_at(self, value: datetime | None) -> None:
        self._opened_at = value


@dataclass(frozen=True, slots=True)
class CircuitRecord:
    """One breaker's state as shared between processes.

    Attributes:
        state: ``"closed"``, ``"open"`` or ``"half-open"``.
        opened_at: wall-clock epoch seconds of the last opening, or ``None``.
        version: orders records; a record with a lower version than the last applied is stale.
        origin: the writing process (:data:`ORIGIN`); a process ignores its own records.
        forced: the circuit was forced open by an operator (stays open until reset).
    """

    state: str
    opened_at: float | None
    version: int
    origin: str
    forced: bool = False


@runtime_checkable
class SharedStateBackend(Protocol):
    """Where shared breakers publish and learn transitions (implemented on Redis)."""

    def publish(self, name: str, record: CircuitRecord) -> None:
        """Record a local transition for every process. Must not block: queue and write in
        the background; failures degrade silently (local state keeps working)."""

    async def acquire_permit(self, name: str, limit: int, ttl: float) -> bool | None:
        """Take one of ``limit`` cluster-wide half-open trial permits for ``ttl`` seconds.
        ``True``: granted; ``False``: all taken; ``None``: store unreachable (local only)."""

    def acquire_permit_sync(self, name: str, limit: int, ttl: float) -> bool | None:
        """Blocking variant of :meth:`acquire_permit` for sync functions (``None`` when a
        blocking call is not available)."""

    def release_permit(self, name: str) -> None:
        """Give a permit back (non-blocking)."""

    def watch(self, name: str, callback: Callable[[CircuitRecord], None]) -> None:
        """Call ``callback(record)`` (from any thread) for each record another process
        publishes for ``name``, and once with the current record when one exists."""


_lock = threading.Lock()
_backend: SharedStateBackend | None = None
_attach_callbacks: list[Callable[[SharedStateBackend | None], None]] = []


def get_shared_backend() -> SharedStateBackend | None:
    """The shared-state backend in force, or ``None`` (state stays in-process)."""
    return _backend


def set_shared_backend(backend: SharedStateBackend | None) -> SharedStateBackend | None:
    """Install ``backend`` for every breaker with ``shared=True`` (existing ones included);
    returns the previous backend."""
    global _backend
    if backend is not None and not isinstance(backend, SharedStateBackend):
        raise TypeError(
            f"{type(backend).__name__} is not a SharedStateBackend: it needs publish, "
            "acquire_permit, acquire_permit_sync, release_permit and watch"
        )
    with _lock:
        previous, _backend = _backend, backend
        callbacks = list(_attach_callbacks)
    for callback in callbacks:
        callback(backend)
    return previous


def on_backend_change(callback: Callable[[SharedStateBackend | None], None]) -> None:
    """Be told when the backend changes (the breaker registry attaches shared breakers)."""
    with _lock:
        _attach_callbacks.append(callback)


class FailureTally(Protocol):
    """Cluster-wide failure counts of one shared breaker (kept by a backend)."""

    def kick(self) -> None:
        """A failure happened: send it soon (failure paths only)."""


_installer: Callable[[str | None], SharedStateBackend] | None = None
_attach_hooks: list[Callable[[Any, SharedStateBackend], FailureTally | None]] = []


def register_shared_installer(installer: Callable[[str | None], SharedStateBackend]) -> None:
    """Set what installs the backend for a Redis URL when the first ``shared`` breaker needs
    one and none is installed yet (the Redis backend registers itself on import)."""
    global _installer
    _installer = installer


def install_shared_backend(url: str | None) -> SharedStateBackend:
    """The backend in force, or the one the registered installer makes for ``url``.

    Raises:
        RuntimeError: no backend is installed and no installer is registered.
    """
    backend = _backend
    if backend is not None:
        return backend
    if _installer is None:
        raise RuntimeError(
            "shared circuit state needs a backend: import resilient (the Redis backend "
            "registers itself) or call set_shared_backend()"
        )
    return _installer(url)


def on_shared_attach(hook: Callable[[Any, SharedStateBackend], FailureTally | None]) -> None:
    """Call ``hook(breaker, backend)`` whenever a shared breaker attaches to a backend; a hook
    may return the breaker's cluster-wide :class:`FailureTally`."""
    with _lock:
        _attach_hooks.append(hook)


def shared_attached(breaker: Any, backend: SharedStateBackend) -> FailureTally | None:
    """Run the attach hooks for ``breaker``; returns the tally one of them keeps, if any."""
    with _lock:
        hooks = list(_attach_hooks)
    tally: FailureTally | None = None
    for hook in hooks:
        tally = hook(breaker, backend) or tally
    return tally
