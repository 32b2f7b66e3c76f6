"""The stream supervisor: connect, read, detect silence, back off, reconnect, resubscribe.

One task per stream. Every wait is measured on the clock in force (a
:class:`~resilient.testing.FakeClock` makes hours of outage instant in tests); reconnects back
off exponentially with jitter and go through the stream's :class:`~resilient.Breaker`, so a
dead feed is visible in health and not hammered. Silence counts only while the market is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from resilient import metrics
from resilient._core import clock as _clock
from resilient._core.exceptions import CircuitOpenError
from resilient._core.log import logger
from resilient._core.sanitize import sanitize
from resilient._policies.breaker import Breaker, breakers, get_breaker
from resilient.config import Config, current_config
from resilient.health import HealthRegistry
from resilient.health import registry as default_registry
from resilient.streams._settings import StreamSettings, stream_settings

__all__ = ["Gap", "StreamSupervisor"]

Connect = Callable[[], Any]  # returns an async iterable of messages, or an awaitable of one
Subscriber = Callable[
    [Any, tuple[str, ...]], Any
]  # (connection, subscriptions) -> None | awaitable

_POLL = 0.002  # real seconds between looks at a fake clock
_CLOSE_LIMIT = 2.0  # real seconds a connection gets to close before its transport is aborted


@dataclass(frozen=True, slots=True)
class Gap:
    """Data a stream may have missed: from its last message before an outage to the first
    message after it (wall-clock seconds since the epoch).

    Backfill ``subscriptions`` over REST for ``[start, end]``."""

    stream: str
    start: float
    end: float
    reason: str
    subscriptions: tuple[str, ...]

    @property
    def seconds(self) -> float:
        """The gap's length."""
        return max(0.0, self.end - self.start)


class _Ended(Exception):
    """A connection ended; ``reason`` labels the reconnect."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


async def _websocket_ping(conn: Any) -> None:
    waiter = await conn.ping()
    await waiter


async def _wait(
    aws: set[asyncio.Future[Any]], clock: _clock.Clock, until: float | None
) -> set[asyncio.Future[Any]]:
    """Wait until one of ``aws`` is done or ``clock`` reaches ``until``; returns the done ones.

    Nothing is cancelled on expiry: a pending read keeps its place in the stream."""
    if type(clock) is _clock.SystemClock:
        timeout = None if until is None else max(0.0, until - clock.monotonic())
        done, _ = await asyncio.wait(aws, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return done
    # A fake clock moves only when a test advances it: look at it between short real waits.
    while until is None or clock.monotonic() < until:
        done, _ = await asyncio.wait(aws, timeout=_POLL, return_when=asyncio.FIRST_COMPLETED)
        if done:
            return done
    return set()


async def _limited(clock: _clock.Clock, seconds: float, awaitable: Awaitable[Any]) -> Any:
    """Await under a limit on ``clock``; raises :class:`asyncio.TimeoutError` at the limit."""
    task = asyncio.ensure_future(awaitable)
    try:
        done = await _wait({task}, clock, clock.monotonic() + seconds)
    except BaseException:  # stopped: settle the attempt so its socket is closed, not leaked
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise
    if not done:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise TimeoutError(f"no answer within {seconds:g}s")
    return task.result()


class StreamSupervisor:
    """Keep one market-data stream alive and tell the rest of the system how fresh it is.

    Args:
        name: the stream's name: its settings (``streams.<name>``), breaker and health
            component (``stream.<name>``) and metric label.
        connect: a zero-argument callable returning an async iterable of messages (or an
            awaitable of one): ``lambda: websockets.connect(url)``, an SDK stream factory, an
            async generator function.
        on_message: called (sync or async) with every message, in order.
        subscribe: ``subscribe(connection, subscriptions)`` (sync or async) sends a
            subscription request; called with every subscription after each (re)connect and
            with new ones when :meth:`subscribe` is called while connected.
        unsubscribe: the same for :meth:`unsubscribe`.
        on_gap: called (sync or async) with a :class:`Gap` when data resumes after an
            outage (before the first new message), so the application can backfill over REST.
        heartbeat: ``heartbeat(connection)`` returns an awaitable that completes when the
            peer answered (default for websockets: ping and wait for the pong); run every
            ``heartbeat_interval`` seconds.
        subscriptions: initial subscriptions.
        config: the configuration to read ``streams`` from (default: the process's).
        registry: the health registry (default ``resilient.health.registry``).
        rng: the random source of the jitter (tests pass a seeded one).
        **options: any :class:`~resilient.streams.StreamSettings` field, overriding settings
            (``idle_timeout=5``, ``calendar=MarketCalendar.build(...)``).

    Raises:
        ConfigError: the ``streams`` section is invalid.
        ValueError / TypeError: an invalid option.
    """

    def __init__(
        self,
        name: str,
        connect: Connect,
        *,
        on_message: Callable[[Any], Any],
        subscribe: Subscriber | None = None,
        unsubscribe: Subscriber | None = None,
        on_gap: Callable[[Gap], Any] | None = None,
        heartbeat: Callable[[Any], Awaitable[Any]] | None = None,
        subscriptions: Iterable[str] = (),
        config: Config | None = None,
        registry: HealthRegistry | None = None,
        rng: random.Random | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a stream needs a non-empty name, e.g. 'quotes'")
        if not callable(connect):
            raise TypeError(f"stream {name!r}: connect must be callable, got {type(connect)!r}")
        self.name = name
        self.component = f"stream.{name}"
        self.settings: StreamSettings = stream_settings(
            config if config is not None else current_config(), name, **options
        )
        self._connect = connect
        self._on_message = on_message
        self._send_subscribe = subscribe
        self._send_unsubscribe = unsubscribe
        self._on_gap = on_gap
        self._heartbeat = heartbeat
        self._subs: dict[str, None] = dict.fromkeys(subscriptions)
        self._registry = registry if registry is not None else default_registry
        self._rng = rng if rng is not None else random.Random()
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._stopping = False
        self.breaker: Breaker = get_breaker(
            self.component,
            failure_threshold=self.settings.failure_threshold,
            reset_timeout=self.settings.reset_timeout,
        )
        # bookkeeping (read by health and metrics)
        self.connected = False
        self.messages = 0
        self.attempts = 0  # connection attempts made
        self.reconnects: Counter[str] = Counter()
        self.gaps = 0
        self.last_gap: Gap | None = None
        self.handler_errors = 0
        self._failures = 0  # consecutive attempts that brought no message
        self._started: float | None = None
        self._connected_at: float | None = None
        self._last_message: float | None = None  # monotonic
        self._last_message_wall: float | None = None
        self._last_reason = ""
        self._episode_reason = ""
        self._gap_open = False
        self._waiting_until: float | None = None

    # -- public -------------------------------------------------------------------------

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The subscriptions kept (and re-sent after every reconnect)."""
        return tuple(self._subs)

    @property
    def running(self) -> bool:
        """Whether the supervisor's task is running."""
        return self._task is not None and not self._task.done()

    async def subscribe(self, *items: str) -> None:
        """Add subscriptions; sent at once when connected, and after every reconnect."""
        new = tuple(i for i in items if i not in self._subs)
        self._subs.update(dict.fromkeys(new))
        await self._send(self._send_subscribe, new)

    async def unsubscribe(self, *items: str) -> None:
        """Drop subscriptions (sent at once when connected)."""
        gone = tuple(i for i in items if i in self._subs)
        for item in gone:
            del self._subs[item]
        await self._send(self._send_unsubscribe, gone)

    def last_message_age(self) -> float | None:
        """Seconds since the last message (since the start when none came yet)."""
        since = self._last_message if self._last_message is not None else self._started
        if since is None:
            return None
        return max(0.0, _clock._current.monotonic() - since)

    def start(self) -> asyncio.Task[None]:
        """Start supervising in a task of the running loop; registers the health component
        and the metrics. Idempotent."""
        if self.running:
            assert self._task is not None
            return self._task
        self._stopping = False
        self._started = _clock._current.monotonic()
        self._health_registry().register(
            self.component, self.health, critical=self.settings.critical
        )
        metrics.set_stream_source(self.name, self.last_message_age)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"resilient-stream-{self.name}"
        )
        return self._task

    async def stop(self) -> None:
        """Close the connection, stop the task, unregister health and metrics. Idempotent."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._health_registry().unregister(self.component)
        metrics.set_stream_source(self.name, None)
        if self.component in breakers and breakers.get(self.component) is self.breaker:
            breakers.remove(self.component)  # its state is reported by this component only

    async def __aenter__(self) -> StreamSupervisor:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- market hours -------------------------------------------------------------------

    def market_open(self, wall: float | None = None) -> bool:
        """Whether the stream's market is open (always, without a calendar)."""
        calendar = self.settings.calendar
        if calendar is None:
            return True
        return calendar.is_open(_clock._current.time() if wall is None else wall)

    def _silence(self, now: float, wall: float, *, connection: bool = False) -> float | None:
        """Open-market seconds without a message (``None`` while the market is closed): since
        the last message (or the start), or with ``connection`` since this connection opened
        when that is later (a new connection gets its own ``idle_timeout``)."""
        marks = [self._last_message if self._last_message is not None else self._started]
        if connection:
            marks.append(self._connected_at)
        known = [t for t in marks if t is not None]
        since = min(max(known), now) if known else now
        calendar = self.settings.calendar
        if calendar is not None:
            opened = calendar.session_start(wall)
            if opened is None:
                return None
            since = max(since, now - (wall - opened))
        return max(0.0, now - since)

    def _silence_deadline(self, now: float, wall: float) -> float | None:
        """When the current silence turns into an idle timeout (monotonic), or when to look
        again while the market is closed; ``None``: never."""
        idle = self.settings.idle_timeout
        if idle <= 0:
            return None
        silence = self._silence(now, wall, connection=True)
        if silence is not None:
            return now + max(0.0, idle - silence)
        calendar = self.settings.calendar
        nxt = calendar.next_open(wall) if calendar is not None else None
        return None if nxt is None else now + (nxt - wall) + idle

    # -- the loop -----------------------------------------------------------------------

    def _delay(self) -> float:
        """The wait before the next attempt: exponential in the failures, with jitter."""
        if self._failures <= 0:
            return 0.0
        s = self.settings
        base = min(s.max_delay, s.initial_delay * s.multiplier ** (self._failures - 1))
        return base * (1.0 - s.jitter * self._rng.random())

    async def _sleep(self, seconds: float) -> None:
        clock = _clock._current
        self._waiting_until = clock.monotonic() + seconds
        try:
            await clock.asleep(seconds)
        finally:
            self._waiting_until = None

    async def _run(self) -> None:
        try:
            while not self._stopping:
                delay = self._delay()
                if delay > 0:
                    await self._sleep(delay)
                try:
                    conn = await self._open()
                except CircuitOpenError as exc:
                    await self._sleep(max(exc.retry_after, self.settings.initial_delay))
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._failed("connect_error", exc)
                    continue
                reason = await self._session(conn)
                if not self._stopping:
                    self._failed(reason, None)
        finally:
            self.connected = False
            conn, self._conn = self._conn, None
            if conn is not None:
                await self._close(conn)

    def _failed(self, reason: str, exc: BaseException | None) -> None:
        """Count a reconnect for ``reason`` and grow the backoff."""
        self._failures += 1
        self._last_reason = reason
        if self._failures == 1:
            self._episode_reason = reason  # why the data stopped: the gap's reason
        self.reconnects[reason] += 1
        metrics.inc("stream_reconnects", {"stream": self.name, "reason": reason})
        if self._failures == 1:
            what = f": {type(exc).__name__}: {sanitize(exc)}" if exc is not None else ""
            logger.warning("stream {} lost ({}{}); reconnecting", self.name, reason, what)

    async def _open(self) -> Any:
        """One connection attempt: connect and subscribe within ``connect_timeout``, through
        the breaker while the market is open (closed-market failures trip nothing)."""
        self.attempts += 1
        if self.market_open():
            conn = await self.breaker.call_async(self._connect_and_subscribe)
        else:
            conn = await self._connect_and_subscribe()
        self._conn = conn
        self.connected = True
        now = _clock._current
        self._connected_at = now.monotonic()
        self._gap_open = self._last_message_wall is not None
        if self._failures:
            logger.info("stream {} reconnected after {} attempt(s)", self.name, self._failures)
        return conn

    async def _connect_and_subscribe(self) -> Any:
        async def attempt() -> Any:
            conn = await _maybe_await(self._connect())
            try:
                if self._subs and self._send_subscribe is not None:
                    await _maybe_await(self._send_subscribe(conn, self.subscriptions))
            except BaseException:
                await self._close(conn)
                raise
            return conn

        return await _limited(_clock._current, self.settings.connect_timeout, attempt())

    async def _session(self, conn: Any) -> str:
        """Read until the connection ends; returns why it ended."""
        try:
            iterator: AsyncIterator[Any] = aiter(conn)
        except TypeError:
            return "error"
        nxt: asyncio.Future[Any] = asyncio.ensure_future(anext(iterator))
        ping: asyncio.Future[Any] | None = None
        got_message = False
        s = self.settings
        heartbeat = self._heartbeat
        if heartbeat is None and callable(getattr(conn, "ping", None)):
            heartbeat = _websocket_ping
        beat = s.heartbeat_interval if heartbeat is not None else 0.0
        clock = _clock._current
        alive = clock.monotonic()  # last sign of life: a message or a pong
        ping_deadline = 0.0
        try:
            while not self._stopping:
                now, wall = clock.monotonic(), clock.time()
                idle_at = self._silence_deadline(now, wall)
                if idle_at is not None and now >= idle_at:
                    raise _Ended("idle")
                until = idle_at
                if beat > 0 and heartbeat is not None:
                    if ping is None and now >= alive + beat:
                        ping = asyncio.ensure_future(heartbeat(conn))
                        ping_deadline = now + s.heartbeat_timeout
                    if ping is not None and now >= ping_deadline:
                        raise _Ended("heartbeat")
                    edge = ping_deadline if ping is not None else alive + beat
                    until = edge if until is None else min(until, edge)
                waiting: set[asyncio.Future[Any]] = {nxt} if ping is None else {nxt, ping}
                done = await _wait(waiting, clock, until)
                if ping is not None and ping in done:
                    if ping.cancelled() or ping.exception() is not None:
                        raise _Ended("heartbeat")
                    ping, alive = None, clock.monotonic()
                if nxt in done:
                    try:
                        message = nxt.result()
                    except StopAsyncIteration:
                        raise _Ended("closed") from None
                    except Exception as exc:
                        logger.debug("stream {} read failed: {}", self.name, type(exc).__name__)
                        raise _Ended("error") from None
                    nxt = asyncio.ensure_future(anext(iterator))
                    if self._gap_open:
                        await self._report_gap(clock.time())
                    alive = self._received(clock)
                    if not got_message:
                        got_message = True
                        self._failures = 0
                    await self._deliver(message)
            return "stopped"
        except _Ended as ended:
            if not got_message and self.market_open():
                # A connection that ends before any data counts against the feed's breaker.
                with contextlib.suppress(Exception), self.breaker.calling():
                    raise ended
            return ended.reason
        finally:
            self.connected = False
            self._conn = None
            for fut in (nxt, ping):
                if fut is not None and not fut.done():
                    fut.cancel()
            for fut in (nxt, ping):  # settle them first: a generator cannot close mid-read
                if fut is not None:
                    with contextlib.suppress(BaseException):
                        await fut
            await self._close(conn)

    async def _report_gap(self, end: float) -> None:
        """Data resumed after an outage: report what was missed, before the new data."""
        self._gap_open = False
        start = self._last_message_wall
        if start is None:
            return
        gap = Gap(self.name, start, end, self._episode_reason or "reconnect", self.subscriptions)
        self.gaps += 1
        self.last_gap = gap
        if self._on_gap is not None:
            try:
                await _maybe_await(self._on_gap(gap))
            except Exception as exc:
                logger.warning(
                    "stream {}: the gap callback failed: {}", self.name, type(exc).__name__
                )

    def _received(self, clock: _clock.Clock) -> float:
        now = clock.monotonic()
        self._last_message = now
        self._last_message_wall = clock.time()
        self.messages += 1
        return now

    async def _deliver(self, message: Any) -> None:
        try:
            await _maybe_await(self._on_message(message))
        except Exception as exc:
            self.handler_errors += 1
            if self.handler_errors == 1 or self.handler_errors % 1000 == 0:
                logger.warning(
                    "stream {}: on_message failed ({} so far): {}",
                    self.name,
                    self.handler_errors,
                    type(exc).__name__,
                )

    async def _send(self, sender: Subscriber | None, items: tuple[str, ...]) -> None:
        conn = self._conn
        if sender is None or not items or conn is None or not self.connected:
            return
        try:
            await _maybe_await(sender(conn, items))
        except Exception as exc:  # the connection is failing: the read loop will notice
            logger.warning("stream {}: sending a subscription failed: {}", self.name, exc)

    async def _close(self, conn: Any) -> None:
        close = getattr(conn, "close", None) or getattr(conn, "aclose", None)
        if not callable(close):
            return
        try:
            result = close()
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, _CLOSE_LIMIT)
        except BaseException:
            transport = getattr(conn, "transport", None)
            abort = getattr(transport, "abort", None)
            if callable(abort):
                abort()

    # -- health -------------------------------------------------------------------------

    def _health_registry(self) -> HealthRegistry:
        return self._registry

    def health(self) -> dict[str, Any]:
        """The stream's health component: connected, last message age, reconnects,
        subscriptions, market hours, breaker state."""
        clock = _clock._current
        now, wall = clock.monotonic(), clock.time()
        s = self.settings
        age = self.last_message_age()
        open_now = self.market_open(wall)
        silence = self._silence(now, wall)
        snap = self.breaker.snapshot()
        data: dict[str, Any] = {
            "kind": "stream",
            "connected": self.connected,
            "last_message_age_seconds": None if age is None else round(age, 3),
            "messages": self.messages,
            "reconnects": sum(self.reconnects.values()),
            "reconnects_by_reason": dict(self.reconnects),
            "subscriptions": len(self._subs),
            "subscribed": sorted(self._subs)[:50],
            "gaps": self.gaps,
            "market_open": open_now,
            "circuit_state": snap.state,
        }
        if self.last_gap is not None:
            data["last_gap_seconds"] = round(self.last_gap.seconds, 3)
        calendar = s.calendar
        if not open_now and calendar is not None:
            nxt = calendar.next_open(wall)
            when = (
                dt.datetime.fromtimestamp(nxt, dt.UTC).isoformat().replace("+00:00", "Z")
                if nxt is not None
                else "not within 40 days"
            )
            data["next_open"] = when
            status, detail = "healthy", f"market closed; next open {when}"
        elif silence is not None and silence > s.alert_after:
            status = "unhealthy"
            detail = f"no message for {silence:.1f}s while the market is open"
            if not self.connected:
                detail += f"; reconnecting after {self._last_reason or 'start'}"
        elif snap.state == "open":
            status = "unhealthy"
            detail = f"circuit open; next connection attempt in {snap.retry_after:.1f}s"
        elif not self.connected:
            status = "degraded"
            detail = (
                f"reconnecting after {self._last_reason}" if self._last_reason else "connecting"
            )
        else:
            status, detail = "healthy", ""
        data["status"] = status
        data["detail"] = detail
        return data

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<StreamSupervisor {self.name!r} {state}, {len(self._subs)} subscriptions>"
