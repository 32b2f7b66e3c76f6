"""The trading state: ``active``, ``reducing`` (only orders that reduce a position) or
``halted`` (only cancels), as in NautilusTrader's risk engine.

It comes from ``trading.state`` (hot reload), from :meth:`TradingState.set` (the API and
``resilient trading state NAME``), and, when ``redis.url`` is set, from one Redis key that every
worker polls: a change made anywhere reaches every worker within ``poll_interval`` seconds.
The latest change wins, whatever its source.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

from resilient._backends.redis import make_sync_redis_client
from resilient._core.log import logger
from resilient._core.sanitize import sanitize
from resilient.config import Config
from resilient.config._schema import TRADING_STATES

__all__ = ["TRADING_STATES", "TradingState", "check_state", "state_key"]


def state_key(prefix: str) -> str:
    """The Redis key holding the shared trading state."""
    return f"{prefix}:trading:state"


def check_state(state: object) -> str:
    """``state`` if it is a trading state.

    Raises:
        ValueError: naming the valid states.
    """
    if state not in TRADING_STATES:
        raise ValueError(
            f"{state!r} is not a trading state; use one of {', '.join(TRADING_STATES)}"
        )
    return str(state)


def encode(state: str, source: str) -> str:
    """The shared value: the state, who set it and when (wall clock, for operators)."""
    return json.dumps({"state": state, "source": source, "at": time.time()})


def decode(raw: Any) -> dict[str, Any] | None:
    """The shared value written by :func:`encode`, or ``None`` when unusable."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        data = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("state") not in TRADING_STATES:
        return None
    return data


def redis_client(url: str, timeout: float) -> Any:
    """A synchronous redis-py client for ``url`` (any ``redis.url`` form: one server, a
    Cluster, Sentinel)."""
    return make_sync_redis_client(url, timeout=timeout)


class TradingState:
    """The trading state of one factory's proxies.

    Args:
        config: the configuration (``trading.state``, ``redis.url``, ``redis.key_prefix``).
        poll_interval: seconds between reads of the shared state in Redis.
    """

    def __init__(self, config: Config, *, poll_interval: float = 0.5) -> None:
        self._lock = threading.Lock()
        self._configured = config.trading.state
        self.value: str = config.trading.state  # read on every order: a plain attribute
        self.source = "settings"
        self.changed_at = time.time()
        self.poll_interval = poll_interval
        self._url = config.redis.url
        self._timeout = max(config.redis.timeout, 0.2)
        self._key = state_key(config.redis.key_prefix)
        self._client: Any = None
        self._seen: Any = None  # the last shared value read or written
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.shared_error: str | None = None

    @property
    def shared(self) -> bool:
        """Whether the state is shared through Redis."""
        return self._url is not None

    def _apply(self, state: str, source: str) -> None:
        with self._lock:
            changed = state != self.value
            self.value, self.source, self.changed_at = state, source, time.time()
        if changed:
            logger.warning("trading state is now {} (from {})", state, source)

    def update_config(self, config: Config) -> None:
        """A reloaded configuration: a changed ``trading.state`` applies at once."""
        if config.trading.state != self._configured:
            self._configured = config.trading.state
            self._apply(config.trading.state, "settings")

    def set(self, state: str, *, source: str = "api") -> None:
        """Change the state now (and for every worker when it is shared through Redis).

        Raises:
            ValueError: ``state`` is not one of ``active``, ``reducing``, ``halted``.
        """
        state = check_state(state)
        self._apply(state, source)
        if self._url is None:
            return
        value = encode(state, source)
        try:
            self._connect().set(self._key, value)
            self._seen = value.encode()
            self.shared_error = None
        except Exception as exc:
            self.shared_error = sanitize(f"{type(exc).__name__}: {exc}")
            logger.error(
                "trading state {} applies to this process only: Redis unreachable ({})",
                state,
                self.shared_error,
            )

    def _connect(self) -> Any:
        if self._client is None:
            assert self._url is not None
            self._client = redis_client(self._url, self._timeout)
        return self._client

    def poll(self) -> None:
        """Read the shared state once and apply it when another worker changed it."""
        if self._url is None:
            return
        try:
            raw = self._connect().get(self._key)
            self.shared_error = None
        except Exception as exc:
            self.shared_error = sanitize(f"{type(exc).__name__}: {exc}")
            return
        if raw is None or raw == self._seen:
            return
        self._seen = raw
        data = decode(raw)
        if data is not None:
            self._apply(data["state"], f"redis ({data.get('source', '?')})")

    def start(self) -> None:
        """Read the shared state and follow it in a daemon thread (no-op without Redis)."""
        if self._url is None or self._thread is not None:
            return
        self.poll()
        self._stop.clear()
        thread = threading.Thread(target=self._run, name="resilient-trading-state", daemon=True)
        self._thread = thread
        thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self.poll()

    def stop(self) -> None:
        """Stop following the shared state and close the connection."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=2.0)
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def snapshot(self) -> dict[str, Any]:
        """The state for health output."""
        data: dict[str, Any] = {
            "state": self.value,
            "source": self.source,
            "shared": self.shared,
        }
        if self.shared_error:
            data["shared_error"] = self.shared_error
        return data
