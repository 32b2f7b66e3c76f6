"""Circuit state shared across processes through Redis (the breakers' ``SharedStateBackend``).

Design, for a call path that never waits on Redis:

- Each process keeps its breakers' state locally; in steady state a call makes **no** Redis
  round trip. Transitions are published (queued, written in the background) and other
  processes learn them by pub/sub within milliseconds.
- Writes are compare-and-set Lua scripts keyed by the record ``version``, so concurrent
  transitions from several processes resolve atomically: a stale writer gets the winning
  record back and adopts it.
- Half-open trial permits are held in Redis by one Lua script that also checks, on the
  Redis server's own clock, that the open period has elapsed; each permit is its holder's
  token with an expiry of ``reset_timeout``, so a crashed process cannot hold one for ever and
  a release frees exactly the holder's permit. A permit answer is waited for up to
  ``permit_timeout`` (longer than ``redis.timeout``): a slow Redis delays the trial, it never
  turns it into a local one. Refused processes ask again after a jittered pause.
- Scales with changes, not names: every write also stamps the name in a change index (a
  sorted set, name → time of the last change). Once per ``resync_interval`` a process asks
  for the names changed since its last look (one small script, whatever the number of
  names) and reads only those it watches. Names are read in full once when first watched and
  after a reconnect, in batches of ``BATCH`` between messages. Idle cost: one round trip per
  ``resync_interval``.
- Redis unreachable: publishing is skipped, permits answer ``None`` (the breaker falls back to
  its local permits), health reports the ``shared_state`` component degraded.

Keys: ``<prefix>:breaker:{<name>}`` (hash), ``<prefix>:breaker:{<name>}:permits`` (set):
the hash tag keeps both in one Redis Cluster slot (a name holding ``{`` or ``}`` is tagged by a
digest instead, see :func:`resilient._core.redis_url.breaker_tag`); channel
``<prefix>:breaker:events``; change index ``<prefix>:breakers:index``. Works on one server, a
Redis Cluster and behind Sentinel.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import itertools
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from resilient._backends.redis import (
    RedisClient,
    RedisUnavailable,
    RedisWorker,
    close_client,
    get_worker,
    make_redis_client,
)
from resilient._core import clock as _clock
from resilient._core.inline import run_inline
from resilient._core.log import logger
from resilient._core.redis_url import breaker_tag
from resilient._policies.breaker_storage import (
    ORIGIN,
    CircuitRecord,
    register_shared_installer,
    set_shared_backend,
)

if TYPE_CHECKING:  # the `redis` extra; make_redis_client() says so when it is missing
    pass
from resilient._core.exceptions import ConfigError, ConfigProblem
from resilient._core.sanitize import mask_url, sanitize
from resilient.config import current_config

__all__ = [
    "RedisSharedState",
    "get_shared_state",
    "install_shared_backend",
    "register_health_checks",
]

_PUBLISH = """
local function current()
  local rec = redis.call('HGETALL', KEYS[1])
  table.insert(rec, 1, 0)
  return rec
end
local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '-1')
local v = tonumber(ARGV[3])
if v <= cur then
  return current()
end
if ARGV[1] == 'half-open' and cur >= 0 then
  -- only the opening this half-open comes from may move on: a late half-open must not
  -- overwrite a newer opening (or a close) and hand out a second round of trial permits
  local st = redis.call('HMGET', KEYS[1], 'state', 'opened_at')
  local same = st[2] and st[2] ~= '' and ARGV[2] ~= ''
               and math.abs(tonumber(st[2]) - tonumber(ARGV[2])) < 0.001
  if st[1] == 'half-open' and same then
    return {1}
  end
  if st[1] ~= 'open' or not same then
    return current()
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'opened_at', ARGV[2], 'version', ARGV[3],
           'origin', ARGV[4], 'forced', ARGV[5], 'changed_srv', tostring(now), 'name', ARGV[7])
if ARGV[1] == 'open' then
  redis.call('HSET', KEYS[1], 'opened_srv', tostring(now))
end
if ARGV[1] ~= 'half-open' then
  redis.call('DEL', KEYS[2])
end
redis.call('PUBLISH', ARGV[6], cjson.encode({name = ARGV[7], state = ARGV[1],
           opened_at = ARGV[2], version = ARGV[3], origin = ARGV[4], forced = ARGV[5]}))
return {1}
"""

_ACQUIRE = """
-- 1: granted; 0: every permit taken; -ms: open (forced or not yet expired) for ms more.
-- Permits are members of a sorted set (holder token -> expiry ms on the server's clock), so
-- a release gives back exactly the holder's permit, even one whose grant it never heard of.
local st = redis.call('HMGET', KEYS[1], 'state', 'opened_srv', 'forced')
if st[3] == '1' then
  return -tonumber(ARGV[2])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if st[1] == 'open' and st[2] then
  local left = tonumber(st[2]) * 1000 + tonumber(ARGV[2]) - now
  if left > 0 then
    return -math.max(1, math.floor(left))
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZSCORE', KEYS[2], ARGV[3]) then
  return 1
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

_RELEASE = """
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

_TOUCH = """
-- the change index: name -> last change (ms, this key's server clock); old entries pruned
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return now
"""

_POLL = """
-- {now ms, name, score, ...}: names changed at or after ARGV[1], at most ARGV[2] of them
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local found = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0,
                         tonumber(ARGV[2]))
table.insert(found, 1, now)
return found
"""

_RESET = """
local v = string.format('%.0f', tonumber(redis.call('HGET', KEYS[1], 'version') or '0') + 1)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'opened_at', ARGV[2], 'version', v,
           'origin', ARGV[3], 'forced', ARGV[4], 'changed_srv', tostring(now), 'name', ARGV[6])
if ARGV[1] == 'open' then
  redis.call('HSET', KEYS[1], 'opened_srv', tostring(now))
end
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[5], cjson.encode({name = ARGV[6], state = ARGV[1],
           opened_at = ARGV[2], version = v, origin = ARGV[3], forced = ARGV[4]}))
return v
"""


# permits granted to the current task/thread: (backend id, breaker name, holder token)
_held: contextvars.ContextVar[tuple[tuple[int, str, str], ...]] = contextvars.ContextVar(
    "resilient_shared_permits", default=()
)

BATCH = 256  # names read per round trip (first watch, reconnect, changes)
POLL_LIMIT = 1000  # changed names per index poll (more: the next poll goes on at once)
OVERLAP_MS = 1000  # each poll looks this far behind the previous one (clock steps, races)
INDEX_HORIZON_MS = 3_600_000  # index entries older than this are pruned
PERMIT_RETRY = 0.01  # pause before asking again after a slow (timed-out) permit request
REASK = 0.05  # mean pause before a refused process asks for a permit again (jittered ±50 %)


def _slow(exc: BaseException) -> bool:
    """Whether a failed Redis call timed out (slow: connect or reply) rather than being
    refused."""
    from redis.exceptions import TimeoutError as RedisTimeoutError

    seen: BaseException | None = exc
    for _ in range(16):  # bounded: a cyclic cause chain never loops
        if seen is None:
            return False
        if isinstance(seen, TimeoutError | RedisTimeoutError):
            return True
        seen = seen.__cause__
    return False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record_from(data: dict[str, str]) -> CircuitRecord | None:
    try:
        opened = data.get("opened_at") or ""
        return CircuitRecord(
            state=data["state"],
            opened_at=float(opened) if opened else None,
            version=int(data["version"]),
            origin=data.get("origin", ""),
            forced=data.get("forced") in ("1", "true", "True"),
        )
    except (KeyError, ValueError):
        return None


def _pairs(flat: Any) -> dict[str, str]:
    """A Redis hash reply (a dict, or a flat list from Lua) as text."""
    if isinstance(flat, dict):
        return {_text(k): _text(v) for k, v in flat.items()}
    items = [_text(x) for x in flat]
    return dict(zip(items[::2], items[1::2], strict=False))


def _eval(script: str, keys: list[str], args: list[str]) -> Callable[[RedisClient], Any]:
    async def run(client: RedisClient) -> Any:
        return await client.eval(script, len(keys), *keys, *args)

    return run


class RedisSharedState:
    """The Redis implementation of the breakers' shared-state backend."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.1,
        prefix: str = "resilient",
        resync_interval: float = 1.0,
        worker: RedisWorker | None = None,
        origin: str = ORIGIN,
        permit_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.origin = origin
        self.timeout = timeout
        self.prefix = prefix
        self.channel = f"{prefix}:breaker:events"
        self.index = f"{prefix}:breakers:index"
        self.resync_interval = resync_interval
        # a permit answer may take longer than redis.timeout before it counts as unreachable
        self.permit_timeout = max(0.5, 5 * timeout) if permit_timeout is None else permit_timeout
        # background work (never on a call path) gets a looser bound than calls
        self.background_timeout = max(0.5, 5 * timeout)
        self.worker = worker or get_worker(url, timeout)
        self.healthy = False
        self.last_error = ""
        self.messages = 0
        self.records_read = 0
        self._watchers: dict[str, list[Callable[[CircuitRecord], None]]] = {}
        self._fresh: set[str] = set()  # watched names to read in full (new, or reconnected)
        self._applied: dict[str, int] = {}  # index score of the last change read, per name
        self._since: int | None = None  # index time of the next poll (ms)
        self._polled_at = time.monotonic()
        self._tokens = itertools.count(1)
        self._seen: dict[str, int] = {}
        self._deny_until: dict[str, float] = {}
        # publishes and permit releases, in call order: a failed trial's "open" must reach Redis
        # before its permit is given back, or another process could start a second trial
        self._ops: collections.deque[tuple[str, CircuitRecord | str]] = collections.deque()
        self._lock = threading.Lock()
        self._listener: concurrent.futures.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._flushing = False
        self._flush_again = False
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisSharedState({mask_url(self.url)!r}, prefix={self.prefix!r})"

    def _key(self, name: str) -> str:
        # the hash tag puts the record and its permits in one cluster slot (one script)
        return f"{self.prefix}:breaker:{{{breaker_tag(name)}}}"

    def _permits(self, name: str) -> str:
        return f"{self._key(name)}:permits"

    # -- delivering records -------------------------------------------------------------

    def _deliver(self, name: str, record: CircuitRecord, *, force: bool = False) -> None:
        if record.origin == self.origin and not force:
            return
        if record.state == "half-open":
            # Each process enters half-open by itself when the shared open period ends, and
            # the trial permits in Redis decide who probes. Adopting another process's
            # half-open would restart this process's probe episode and orphan a trial that is
            # already running (its failure would then reopen nothing).
            return
        with self._lock:
            if record.version <= self._seen.get(name, -1) and not force:
                return
            self._seen[name] = max(record.version, self._seen.get(name, -1))
            callbacks = list(self._watchers.get(name, ()))
            self._deny_until.pop(name, None)
        for callback in callbacks:
            try:
                callback(record)
            except Exception as exc:  # a broken breaker callback must not stop the listener
                logger.error("shared state callback for {} failed: {}", name, type(exc).__name__)

    # -- SharedStateBackend -------------------------------------------------------------

    def publish(self, name: str, record: CircuitRecord) -> None:
        """Queue ``record`` for Redis (compare-and-set on ``version``). Never blocks."""
        if self._closed:
            return
        with self._lock:
            self._seen[name] = max(record.version, self._seen.get(name, -1))
            self._ops.append((name, record))
        self._ensure_listener()
        with contextlib.suppress(RuntimeError):  # worker stopped at shutdown
            self.worker.loop.call_soon_threadsafe(self._kick)

    def _kick(self) -> None:
        # runs on the worker loop: write queued transitions now, one flusher at a time
        if self._flushing:
            self._flush_again = True
            return
        self._flushing = True
        task = self.worker.loop.create_task(self._flush_queued())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_queued(self) -> None:
        with contextlib.suppress(Exception):  # left queued; the listener retries after reconnect
            await self._flush_all(started=True)

    async def _flush_all(self, *, started: bool = False) -> None:
        """Write queued operations, strictly one writer at a time (order matters: a release
        must never overtake the publish before it)."""
        if not started:
            if self._flushing:
                self._flush_again = True
                return
            self._flushing = True
        try:
            while True:
                self._flush_again = False
                await self._flush()
                if not self._flush_again and not self._ops:
                    return
        finally:
            self._flushing = False

    async def _acquire(
        self,
        name: str,
        limit: int,
        ttl: float,
        call: Callable[[Any, float], Awaitable[Any]],
        sleep: Callable[[float], Awaitable[None]],
    ) -> bool | None:
        if self._refused(name):
            return self._granted(name, 0, ttl, "", cached=True)
        token = self._token()
        fn = self._acquire_fn(name, limit, ttl, token)
        end = time.monotonic() + self.permit_timeout
        while True:
            try:
                reply = await call(fn, end - time.monotonic())
                break
            except RedisUnavailable as exc:
                if not (_slow(exc) and end - time.monotonic() > PERMIT_RETRY):
                    self._give_back(name, token)  # a grant that lands after we gave up
                    return self._unanswered(name, ttl)
                await sleep(PERMIT_RETRY)
        return self._granted(name, int(reply), ttl, token)

    async def acquire_permit(self, name: str, limit: int, ttl: float) -> bool | None:
        """One of ``limit`` cluster-wide half-open permits, waited for up to
        ``permit_timeout`` (a slow connect or reply is asked again within the bound).
        Without an answer: ``False`` while the listener still reaches Redis (slow, not
        gone), ``None`` once it has lost Redis too (the local permits decide)."""

        async def call(fn: Any, bound: float) -> Any:
            return await self.worker.call(fn, bound, force=True)

        return await self._acquire(name, limit, ttl, call, asyncio.sleep)

    def acquire_permit_sync(self, name: str, limit: int, ttl: float) -> bool | None:
        """Blocking :meth:`acquire_permit` (at most ``permit_timeout``)."""

        async def call(fn: Any, bound: float) -> Any:
            return self.worker.call_sync(fn, bound, force=True)

        async def sleep(seconds: float) -> None:
            time.sleep(seconds)  # noqa: ASYNC251 - run inline by a blocking caller, no loop

        return run_inline(self._acquire(name, limit, ttl, call, sleep))

    def _unanswered(self, name: str, ttl: float) -> bool | None:
        """No permit answer within the bound. While the listener still reaches Redis, Redis
        is slow, not gone: refuse (no local trial; ask again after a jittered pause).
        Once the listener has lost Redis too: ``None``, the local permits decide."""
        if self.healthy and self._listener is not None:
            return self._granted(name, 0, ttl, "")
        return None

    def _token(self) -> str:
        return f"{self.origin}:{next(self._tokens)}"  # next() on a count is atomic

    def _refused(self, name: str) -> bool:
        until = self._deny_until.get(name)
        return until is not None and _clock._current.monotonic() < until

    def _granted(self, name: str, reply: int, ttl: float, token: str, cached: bool = False) -> bool:
        # A refusal is remembered briefly (the rest of the open period, or while a trial runs)
        # so a half-open process does not ask Redis on every call; any newer record clears it.
        # The pauses are jittered: processes that reach half-open together do not ask again
        # together.
        granted = reply > 0
        now = _clock._current.monotonic()
        if reply < 0:
            left = -reply / 1000
            self._deny_until[name] = now + left + random.uniform(0.0, min(0.05, left / 10))
        elif reply == 0 and not cached:
            self._deny_until[name] = now + random.uniform(0.5, 1.5) * min(REASK, ttl)
        if granted:  # a release gives back exactly this holder token, never another's
            _held.set((*_held.get(), (id(self), name, token)))
        return granted

    def _acquire_fn(
        self, name: str, limit: int, ttl: float, token: str
    ) -> Callable[[RedisClient], Any]:
        keys = [self._key(name), self._permits(name)]
        ttl_ms = str(max(1, int(ttl * 1000)))
        return _eval(_ACQUIRE, keys, [str(limit), ttl_ms, token])

    def release_permit(self, name: str) -> None:
        """Give a permit back in the background, after this process's earlier publishes
        (never blocks, never raises)."""
        if self._closed:
            return
        # only a permit this call was granted goes back: a caller that was refused (or never
        # reached Redis) must not free somebody else's trial permit
        held = _held.get()
        for i in range(len(held) - 1, -1, -1):
            if held[i][0] == id(self) and held[i][1] == name:
                _held.set(held[:i] + held[i + 1 :])
                self._give_back(name, held[i][2])
                return

    def _give_back(self, name: str, token: str) -> None:
        if self._closed:
            return
        with self._lock:
            self._ops.append((name, token))
        with contextlib.suppress(RuntimeError):  # worker stopped at shutdown
            self.worker.loop.call_soon_threadsafe(self._kick)

    def watch(self, name: str, callback: Callable[[CircuitRecord], None]) -> None:
        """Deliver other processes' records for ``name`` to ``callback`` (from the worker
        thread), starting with the current one."""
        with self._lock:
            self._watchers.setdefault(name, []).append(callback)
            self._fresh.add(name)
        self._ensure_listener()

    # -- explicit operations (CLI, tests) -----------------------------------------------

    async def reset(self, name: str, *, state: str = "closed", forced: bool = False) -> int:
        """Set ``name`` to ``state`` cluster-wide (version bumped past every writer) and
        clear its permits. Returns the new version.

        Raises:
            RedisUnavailable: Redis did not answer.
        """
        keys = [self._key(name), self._permits(name)]
        opened = "" if state != "open" else repr(_clock._current.time())
        args = [state, opened, self.origin, "1" if forced else "0", self.channel, name]
        limit = max(self.timeout, 1.0)
        version = int(await self.worker.call(_eval(_RESET, keys, args), limit))
        await self.worker.call(_eval(_TOUCH, [self.index], [name, str(INDEX_HORIZON_MS)]), limit)
        self._deliver(
            name,
            CircuitRecord(state, float(opened) if opened else None, version, self.origin, forced),
            force=True,
        )
        return version

    async def records(self) -> dict[str, dict[str, Any]]:
        """Every breaker stored under the prefix: name → fields (state, version, ...)."""

        async def run(client: RedisClient) -> dict[str, dict[str, Any]]:
            found: dict[str, dict[str, Any]] = {}
            base = f"{self.prefix}:breaker:"
            async for raw in client.scan_iter(match=base + "*", count=500):
                key = _text(raw)
                if not key.endswith("}"):  # permits, counters, the channel
                    continue
                data = _pairs(await client.hgetall(key))
                now_ms = int(_clock._current.time() * 1000)
                held = await client.zcount(key + ":permits", now_ms, "+inf")
                data["permits_in_use"] = str(held)
                found[data.pop("name", "") or key[len(base) + 1 : -1]] = data
            return found

        return await self.worker.call(run, max(self.timeout, 2.0))

    async def record(self, name: str) -> CircuitRecord | None:
        """The stored record for ``name`` (``None`` when absent)."""
        key = self._key(name)

        async def run(client: RedisClient) -> Any:
            return await client.hgetall(key)

        flat = await self.worker.call(run)
        return _record_from(_pairs(flat)) if flat else None

    # -- background listener (runs on the worker loop) ----------------------------------

    def _ensure_listener(self) -> None:
        if self._listener is not None or self._closed:
            return
        with self._lock:
            if self._listener is not None:
                return
            self._listener = asyncio.run_coroutine_threadsafe(self._listen(), self.worker.loop)

    async def _flush(self) -> None:
        limit = self.background_timeout
        while True:
            with self._lock:
                if not self._ops:
                    return
                name, op = self._ops[0]
            try:
                if isinstance(op, str):  # a permit going back: exactly this holder's
                    await self.worker._guarded(_eval(_RELEASE, [self._permits(name)], [op]), limit)
                else:
                    await self._publish_now(name, op)
            except Exception as exc:
                with self._lock:
                    # keep transitions for the next attempt; a lost release only ends early
                    # what the permit's TTL ends anyway
                    kept = [o for o in self._ops if not isinstance(o[1], str)]
                    self._ops = collections.deque(kept)
                raise RedisUnavailable(type(exc).__name__) from exc
            with self._lock:
                if self._ops and self._ops[0] == (name, op):
                    self._ops.popleft()

    async def _publish_now(self, name: str, record: CircuitRecord) -> None:
        args = [
            record.state,
            "" if record.opened_at is None else repr(record.opened_at),
            str(record.version),
            record.origin,
            "1" if record.forced else "0",
            self.channel,
            name,
        ]
        keys = [self._key(name), self._permits(name)]
        limit = self.background_timeout
        reply = await self.worker._guarded(_eval(_PUBLISH, keys, args), limit)
        if reply and int(reply[0]) == 0:  # a newer record won: adopt it
            current = _record_from(_pairs(list(reply[1:])))
            if current is not None:
                self._deliver(name, current, force=True)
            return
        # the change index tells processes that missed the message what to read
        touch = _eval(_TOUCH, [self.index], [name, str(INDEX_HORIZON_MS)])
        await self.worker._guarded(touch, limit)

    async def _read(self, names: list[str]) -> None:
        """Read ``names``' records (one pipelined round trip) and deliver them."""
        if not names:
            return

        async def run(client: RedisClient) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(self._key(name))
                result: list[Any] = await pipe.execute()
                return result

        replies = await self.worker._guarded(run, self.background_timeout)
        self.records_read += len(names)
        for name, flat in zip(names, replies, strict=True):
            record = _record_from(_pairs(flat)) if flat else None
            if record is not None:
                self._deliver(name, record)

    async def _read_fresh(self) -> None:
        """Read one batch of newly watched (or reconnected) names."""
        with self._lock:
            batch = [self._fresh.pop() for _ in range(min(BATCH, len(self._fresh)))]
        try:
            await self._read(batch)
        except Exception:
            with self._lock:
                self._fresh.update(batch)
            raise

    async def _poll(self) -> bool:
        """Read what changed since the last poll; ``True`` when more changes are waiting.

        One small script whatever the number of names; only changed names that this
        process watches are read."""
        since = self._since
        # never looked: every watched name is being read in full, so only "now" is needed
        args = ["+inf" if since is None else str(since), str(POLL_LIMIT)]
        reply = await self.worker._guarded(
            _eval(_POLL, [self.index], args), self.background_timeout
        )
        now = int(reply[0])
        entries = [_text(x) for x in reply[1:]]
        pairs = list(zip(entries[::2], (int(float(x)) for x in entries[1::2]), strict=False))
        changed: list[str] = []
        with self._lock:
            for name, score in pairs:
                if name in self._watchers and score > self._applied.get(name, -1):
                    self._applied[name] = score
                    if name not in self._fresh:
                        changed.append(name)
        for i in range(0, len(changed), BATCH):
            await self._read(changed[i : i + BATCH])
        self._polled_at = time.monotonic()
        if len(pairs) >= POLL_LIMIT:  # truncated: go on from the last one at once
            self._since = pairs[-1][1]
            return True
        # first look: every watched name is read in full after this, so changes stamped
        # before ``now`` are in what it reads; later ones: look back OVERLAP_MS each time
        self._since = now if since is None else max(since, now - OVERLAP_MS)
        return False

    def _on_message(self, data: Any) -> None:
        self.messages += 1
        try:
            payload = json.loads(_text(data))
            name = str(payload["name"])
            record = _record_from({k: _text(v) for k, v in payload.items()})
        except (ValueError, KeyError, TypeError):
            return
        if record is not None:
            self._deliver(name, record)

    async def _listen(self) -> None:
        backoff = 0.05
        while not self._closed:
            sub = make_redis_client(self.url, timeout=self.timeout, socket_timeout=None)
            from redis.asyncio.cluster import RedisCluster  # present: the client was made

            pubsub: Any = None
            try:
                async with asyncio.timeout(self.background_timeout * 2):
                    if isinstance(sub, RedisCluster):  # the slot map first (any node serves)
                        await sub.initialize()
                    pubsub = sub.pubsub()
                    await pubsub.subscribe(self.channel)
                # subscribed: from here no message is lost. What happened before is read
                # again: the index since the last look (or every watched name when the
                # process never looked, or looked too long ago for the index to tell).
                with self._lock:
                    horizon = INDEX_HORIZON_MS - 60_000
                    if self._since is None or self._since_age_ms() > horizon:
                        self._fresh.update(self._watchers)
                        self._since = None
                await self._poll()
                await self._flush_all()
                if not self.healthy:
                    if self.last_error:
                        logger.info("shared circuit state: Redis reachable again")
                    self.healthy, self.last_error = True, ""
                backoff = 0.05
                loop = asyncio.get_running_loop()
                next_sync = loop.time() + self.resync_interval
                while not self._closed:
                    busy = bool(self._fresh)
                    wait = 0.0 if busy else max(0.0, min(0.5, next_sync - loop.time()))
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message["data"])
                    if busy:
                        await self._read_fresh()
                    if loop.time() >= next_sync:
                        more = await self._poll()
                        if self._ops:
                            await self._flush_all()
                        next_sync = loop.time() + (0.0 if more else self.resync_interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.healthy or not self.last_error:
                    logger.warning(
                        "shared circuit state: Redis unreachable ({}: {}); "
                        "breakers use local state",
                        type(exc).__name__,
                        sanitize(exc),
                    )
                self.healthy = False
                self.last_error = f"{type(exc).__name__}: {sanitize(exc)}"[:300]
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)
            finally:
                try:
                    if pubsub is not None:
                        await pubsub.aclose()
                    await close_client(sub)
                except Exception:
                    pass

    def _since_age_ms(self) -> float:
        """How long ago (ms) the last successful poll ran."""
        return (time.monotonic() - self._polled_at) * 1000

    # -- health and lifecycle -----------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The ``shared_state`` component: healthy while Redis is reachable and subscribed."""
        with self._lock:
            watched = len(self._watchers)
        data = {
            "backend": "redis",
            "breakers_watched": watched,
            "messages": self.messages,
            "records_read": self.records_read,
        }
        if self._listener is None:
            return {"status": "healthy", "detail": "no shared breaker yet", **data}
        guard = self.worker.guard
        if guard.read_only:  # answers, but refuses the writes (a replica)
            return {
                "status": "degraded",
                "detail": f"Redis is a read-only replica; breakers use local state "
                f"({guard.last_error})",
                **data,
            }
        if self.healthy:
            return {"status": "healthy", "detail": "", **data}
        return {
            "status": "degraded",
            "detail": f"Redis unreachable; breakers use local state ({self.last_error})",
            **data,
        }

    async def health_check(self) -> dict[str, Any]:
        """Async form of :meth:`health` for the health registry."""
        return self.health()

    def close(self) -> None:
        """Stop the listener (the worker thread is shared and stays)."""
        self._closed = True
        listener = self._listener
        if listener is not None:
            with contextlib.suppress(RuntimeError):  # the worker already stopped
                self.worker.loop.call_soon_threadsafe(listener.cancel)
                with contextlib.suppress(BaseException):
                    listener.result(2.0)
            self._listener = None


_state: RedisSharedState | None = None
_state_lock = threading.Lock()


def get_shared_state(url: str | None = None) -> RedisSharedState:
    """The process's shared-state backend for ``url`` (default ``redis.url``).

    Raises:
        ConfigError: no Redis URL is configured.
    """
    global _state
    config = current_config()
    target = url or config.redis.url
    if not target:
        raise ConfigError(
            [
                ConfigProblem(
                    key="redis.url",
                    rule="is required for shared circuit state",
                    fix="set redis.url (AI_TRADER_REDIS__URL) or use breakers without shared=True",
                    env=config.env,
                )
            ]
        )
    with _state_lock:
        if _state is None or _state.url != target or _state._closed:
            _state = RedisSharedState(
                target, timeout=config.redis.timeout, prefix=config.redis.key_prefix
            )
        return _state


def install_shared_backend(url: str | None = None) -> RedisSharedState:
    """Make the Redis backend the one every ``shared`` breaker uses (idempotent)."""
    state = get_shared_state(url)
    set_shared_backend(state)
    return state


def register_health_checks(registry: Any) -> None:
    """Register the non-critical ``shared_state`` component when a backend is installed."""
    if _state is not None:
        registry.register("shared_state", _state.health_check, critical=False)


# the breakers reach this backend through these registrations, never by importing it
register_shared_installer(install_shared_backend)
