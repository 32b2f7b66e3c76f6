"""Cluster-wide retry budgets and failure counts for shared breakers, batched through Redis.

A breaker with ``shared=True`` (or ``resilience.circuit_breaker_shared``) counts its failures
across every process, and the retry budget of the same name counts calls and retries across
every process, so that 32 workers under a total outage stay within
``retry_budget_ratio`` × calls (plus one floor for the whole cluster, spent once per outage)
and 8 workers × 4 failures trip a breaker whose threshold is 5.

Nothing is added to a call: the call path only bumps the integers it already bumps
(``Breaker._successes`` / ``_failures``, ``RetryBudget.calls``). A background task on the
Redis worker's loop samples them and sends the deltas of each name in one small script:

- after a failure, within ``FAIL_FLUSH`` (50 ms) of it (the breaker's failure path kicks it);
- after ``RETRY_FLUSH`` retries were taken locally;
- otherwise at most once per ``FLUSH_INTERVAL`` (1 s) while anything changed, so a process
  making ≥ 20 calls a second spends ≤ 0.05 Redis round trips per call, and an idle one none.

How exact:

- Failures: the cluster counter holds the failures reported since the last reported success
  (a process reporting successes sets it to the failures that followed its last success). A
  failure reaches it within about 50 ms; a success elsewhere up to 1 s late, so a trip may come
  up to one flush interval early. The process whose report reaches the threshold trips the
  breaker and publishes it; the counter restarts at 0, so one trip per threshold.
- Retry budget: the cluster's allowance is ``ratio`` × its calls in the last two 5 s buckets;
  what is left of it after the cluster's retries is shared evenly by the processes counting in
  that window, and between flushes a process spends only its share plus ``ratio`` × its own
  new calls. Other processes' counts arrive up to one flush late, so the cluster can overshoot
  by about what its processes' calls earned in that time.
- The floor (as :class:`~resilient._policies.retry.RetryBudget`'s, once for the cluster): a token
  bucket in Redis refilled by the script only while the window's retries are within the ratio
  and no retry was refused in it; a process's first refusal is sent as a failure is. Each answer
  gives a process its share of the tokens (a fraction as a whole token with that probability,
  so the credits add up to the bucket on average); before its first answer it may take one.
- Redis unreachable: the counts stay local (the breaker's own rule and the local budget
  decide) until it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from typing import TYPE_CHECKING, Any

from resilient._backends.redis import RedisUnavailable
from resilient._backends.shared_state import RedisSharedState, _eval
from resilient._core.log import logger
from resilient._core.redis_url import breaker_tag
from resilient._policies.breaker_storage import ORIGIN, get_shared_backend, on_shared_attach
from resilient._policies.retry import FLOOR_BURST, get_retry_budget

if TYPE_CHECKING:
    from resilient._policies.retry import RetryBudget

__all__ = ["SharedBudget", "SharedCounts", "attach_breaker", "get_counts", "share_budget"]

FLUSH_INTERVAL = 1.0
FAIL_FLUSH = 0.05
RETRY_FLUSH = 5
BUCKET = 5.0  # seconds per budget bucket; the window is the current and the previous one
TICK = 0.05

_COUNT = """
-- KEYS: failure counter, this budget bucket, the previous bucket, the budget's floor
-- ARGV: calls, retries, failures, successes, failures after the last success, threshold, ttl ms,
--       the reporting process, floor retries taken, retries refused, floor rate (a second),
--       floor burst (seconds)
local calls, retries, refusals = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[10])
if calls > 0 or retries > 0 or refusals > 0 then
  redis.call('HINCRBY', KEYS[2], 'calls', calls)
  redis.call('HINCRBY', KEYS[2], 'retries', retries)
  redis.call('HINCRBY', KEYS[2], 'refused', refusals)
  redis.call('HSET', KEYS[2], 'p:' .. ARGV[8], 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
-- processes counting in the window: the fields beyond calls, retries and refused
local peers = math.max(redis.call('HLEN', KEYS[2]), redis.call('HLEN', KEYS[3])) - 3
local cur = redis.call('HMGET', KEYS[2], 'calls', 'retries', 'refused')
local prev = redis.call('HMGET', KEYS[3], 'calls', 'retries', 'refused')
local total_calls = (tonumber(cur[1]) or 0) + (tonumber(prev[1]) or 0)
local total_retries = (tonumber(cur[2]) or 0) + (tonumber(prev[2]) or 0)
local refused = (tonumber(cur[3]) or 0) + (tonumber(prev[3]) or 0)
-- the floor: one token bucket for the cluster, refilled only while the window's retries are
-- within the ratio's share (its calls, ARGV[13]) and no retry was refused in the window
-- (a rate below 0: no budget in this report)
local rate, tokens = tonumber(ARGV[11]), 0
if rate >= 0 then
  local cap = rate * tonumber(ARGV[12])
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  local floor = redis.call('HMGET', KEYS[4], 'tokens', 'at')
  tokens = tonumber(floor[1]) or cap
  local at = tonumber(floor[2]) or now
  if refused == 0 and total_retries <= tonumber(ARGV[13]) * total_calls and now > at then
    tokens = tokens + (now - at) / 1000 * rate
  end
  tokens = math.max(0, math.min(cap, tokens) - tonumber(ARGV[9]))
  redis.call('HSET', KEYS[4], 'tokens', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', KEYS[4], ARGV[7])
end
local threshold = tonumber(ARGV[6])
local fails, tripped = 0, 0
if threshold > 0 then
  fails = tonumber(redis.call('HGET', KEYS[1], 'fails') or '0')
  if tonumber(ARGV[4]) > 0 then
    fails = tonumber(ARGV[5])
  else
    fails = fails + tonumber(ARGV[3])
  end
  if fails >= threshold then
    tripped = 1
    fails = 0
  end
  redis.call('HSET', KEYS[1], 'fails', fails)
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
end
return {total_calls, total_retries, fails, tripped, math.max(peers, 1), math.floor(tokens * 1000),
        refused}
"""


class SharedBudget:
    """The cluster-wide side of one :class:`~resilient._policies.retry.RetryBudget`."""

    __slots__ = (
        "calls",
        "cluster_calls",
        "cluster_refused",
        "cluster_retries",
        "floor_credit",
        "floor_taken",
        "owner",
        "peers",
        "refused",
        "refused_unsent",
        "retries",
        "seen_calls",
        "tally",
    )

    def __init__(self, owner: RetryBudget, tally: _Tally) -> None:
        self.owner = owner
        self.tally = tally
        self.seen_calls = owner.calls
        self.calls = 0  # counted here, not yet sent
        self.retries = 0
        self.floor_taken = 0
        self.refused_unsent = 0
        self.cluster_calls = 0  # as of the last flush (this process's sent counts included)
        self.cluster_retries = 0
        self.cluster_refused = 0
        self.peers = 1  # processes counting this budget in the window
        # floor retries this process may take until the next flush: one before it has heard
        # from the cluster, then its share of the cluster's floor
        self.floor_credit = 1
        self.refused = 0

    def sample(self) -> None:
        """Move the budget's new calls into the unsent count."""
        now = self.owner.calls
        seen = self.seen_calls
        self.calls += now - seen if now >= seen else now  # the local window rotated
        self.seen_calls = now

    def try_spend(self, owner: RetryBudget) -> bool:
        """Take one retry from the cluster-wide budget; ``False`` (counted) when spent."""
        if self.tally.counts.state._closed:  # its backend is gone: back to the local budget
            owner.shared = None
            return bool(owner.try_spend())
        with self.tally.lock:
            self.sample()
            # until the next flush this process may use its share of the cluster's headroom
            # (each of the ``peers`` processes the same), plus the ratio of its own new calls,
            # then its share of the cluster's floor
            headroom = owner.ratio * self.cluster_calls - self.cluster_retries
            allowed = headroom / self.peers + owner.ratio * self.calls
            if self.retries + 1 > allowed:
                if self.floor_credit < 1:
                    owner.refused += 1
                    self.refused += 1
                    self.refused_unsent += 1
                    if not self.cluster_refused:  # the first refusal stops the floor's refill
                        self.tally.due = True
                    return False
                self.floor_credit -= 1
                self.floor_taken += 1
            self.retries += 1
            if self.retries >= RETRY_FLUSH:
                self.tally.due = True
        return True

    def apply(self, calls: int, retries: int, peers: int, floor: float, refused: int) -> None:
        """Take the cluster's totals from a flush's answer (under the tally's lock)."""
        self.cluster_calls, self.cluster_retries = calls, retries
        self.cluster_refused = refused
        self.peers = max(1, peers)
        share = floor / self.peers
        whole = int(share)
        # a fraction of a token is a whole one with that probability: the peers' credits add
        # up to the cluster's floor on average, even when there are more peers than tokens
        self.floor_credit = whole + (random.random() < share - whole)


class _Tally:
    """Unsent counts of one name (its breaker and its retry budget)."""

    def __init__(self, counts: SharedCounts, name: str) -> None:
        self.counts = counts
        self.name = name
        self.lock = threading.Lock()
        self.breaker: Any = None
        self.seen_successes = 0
        self.seen_failures = 0
        self.budget: SharedBudget | None = None
        self.due = False
        self.flushed_at = 0.0
        self.cluster_fails = 0
        tag = breaker_tag(name)
        self.fails_key = f"{counts.prefix}:count:{{{tag}}}"
        self.bucket_base = f"{counts.prefix}:count:{{{tag}}}:b"
        self.floor_key = f"{counts.prefix}:count:{{{tag}}}:floor"

    def kick(self) -> None:
        """A failure happened: send it within FAIL_FLUSH (failure paths only)."""
        self.due = True

    def skip_successes(self) -> None:
        """Mark the breaker's successes so far as seen (nothing to reset in Redis)."""
        cb = self.breaker
        if cb is not None:
            with self.lock:
                if cb._failures == self.seen_failures:
                    self.seen_successes = cb._successes

    def take(self) -> tuple[list[str], list[str]] | None:
        """The keys and arguments of a flush when one is due now, else ``None``."""
        now = time.monotonic()
        since = now - self.flushed_at
        if self.due and since < FAIL_FLUSH:
            return None
        cb = self.breaker
        with self.lock:
            successes = failures = trailing = 0
            if cb is not None:
                s, f = cb._successes, cb._failures
                successes = max(0, s - self.seen_successes)
                failures = max(0, f - self.seen_failures)
                trailing = min(failures, cb.fail_counter) if successes else failures
            budget = self.budget
            if budget is not None:
                budget.sample()
            calls = retries = taken = refusals = 0
            if budget is not None:
                calls, retries = budget.calls, budget.retries
                taken, refusals = budget.floor_taken, budget.refused_unsent
            changed = successes or failures or calls or retries or refusals
            if not (self.due or (changed and since >= FLUSH_INTERVAL)):
                return None
            if not changed:
                self.due = False
                return None
            # successes only matter while the cluster counter is above 0
            if not (failures or self.cluster_fails or calls or retries or refusals):
                self.seen_successes += successes
                self.flushed_at = now
                return None
            if cb is not None:
                self.seen_successes += successes
                self.seen_failures += failures
            if budget is not None:
                budget.calls = budget.retries = budget.floor_taken = budget.refused_unsent = 0
                budget.cluster_calls += calls  # until the answer says better
                budget.cluster_retries += retries
                budget.cluster_refused += refusals
            self.due = False
            self.flushed_at = now
        threshold = cb.fail_max if cb is not None and cb.shared else 0
        bucket = int(time.time() // BUCKET)
        keys = [
            self.fails_key,
            f"{self.bucket_base}{bucket}",
            f"{self.bucket_base}{bucket - 1}",
            self.floor_key,
        ]
        ttl = str(int(BUCKET * 3 * 1000))
        owner = budget.owner if budget is not None else None
        rate = owner.min_per_second if owner is not None else -1
        ratio = owner.ratio if owner is not None else 0
        args = [calls, retries, failures, successes, trailing, threshold, ttl, ORIGIN]
        args += [taken, refusals, rate, FLOOR_BURST, ratio]
        return keys, [str(a) for a in args]

    def answer(self, reply: Any) -> None:
        """Apply the cluster totals of a flush; trip the breaker when it reached its rule."""
        calls, retries, fails, tripped, peers, floor, refused = (int(x) for x in reply)
        with self.lock:
            budget = self.budget
            if budget is not None:
                budget.apply(calls, retries, peers, floor / 1000, refused)
            self.cluster_fails = fails
        cb = self.breaker
        if tripped and cb is not None and cb.state == "closed":
            logger.warning(
                "circuit {}: {} failures across the cluster; opening it everywhere",
                self.name,
                cb.fail_max,
            )
            cb.open()


class SharedCounts:
    """The tallies of one shared-state backend and the task that sends them."""

    def __init__(self, state: RedisSharedState) -> None:
        self.state = state
        self.prefix = state.prefix
        self.tallies: dict[str, _Tally] = {}
        self.flushes = 0
        self._lock = threading.Lock()
        self._task: Any = None

    def tally(self, name: str) -> _Tally:
        with self._lock:
            found = self.tallies.get(name)
            if found is None:
                found = self.tallies[name] = _Tally(self, name)
        self._start()
        return found

    def _start(self) -> None:
        if self._task is None:
            with contextlib.suppress(RuntimeError):
                self._task = asyncio.run_coroutine_threadsafe(self._run(), self.state.worker.loop)

    async def _run(self) -> None:

        synced = time.monotonic()
        while not self.state._closed:
            await asyncio.sleep(TICK)
            with self._lock:
                tallies = list(self.tallies.values())
            sync = time.monotonic() - synced >= FLUSH_INTERVAL
            if sync:
                synced = time.monotonic()
            for tally in tallies:
                if tally.budget is None and not tally.due and not tally.cluster_fails:
                    # a breaker alone with the cluster counter at 0: nothing to send; once a
                    # second its successes are marked seen (an in-process read, no Redis)
                    if sync:
                        tally.skip_successes()
                    continue
                try:
                    taken = tally.take()
                    if taken is None:
                        continue
                    keys, args = taken
                    reply = await self.state.worker.call(
                        _eval(_COUNT, keys, args), self.state.background_timeout
                    )
                    self.flushes += 1
                    tally.answer(reply)
                except RedisUnavailable:
                    continue  # counted locally meanwhile; the deltas are not resent
                except Exception as exc:  # one broken tally must not stop the others
                    logger.error("shared counts of {} failed: {}", tally.name, repr(exc))
        with _lock:  # the backend closed: forget its tallies
            if _counts.get(id(self.state)) is self:
                del _counts[id(self.state)]


_counts: dict[int, SharedCounts] = {}
_lock = threading.Lock()


def get_counts(state: RedisSharedState) -> SharedCounts:
    """The tallies of ``state`` (created on first use)."""
    with _lock:
        found = _counts.get(id(state))
        if found is None or found.state is not state:
            found = _counts[id(state)] = SharedCounts(state)
        return found


def attach_breaker(breaker: Any, backend: Any) -> _Tally | None:
    """Count ``breaker``'s failures across the cluster and share the retry budget of the
    same name (called when a shared breaker attaches to the Redis backend); returns the
    tally the breaker kicks on each failure."""

    if not isinstance(backend, RedisSharedState) or not breaker.shared:
        return None
    tally = get_counts(backend).tally(breaker.name)
    with tally.lock:
        tally.breaker = breaker
        tally.seen_successes, tally.seen_failures = breaker._successes, breaker._failures
    share_budget(breaker.name, backend)
    return tally


def share_budget(name: str, backend: Any = None) -> SharedBudget | None:
    """Make the retry budget ``name`` cluster-wide (through the installed shared backend).
    Returns ``None`` when no Redis backend is installed."""

    backend = backend or get_shared_backend()
    if not isinstance(backend, RedisSharedState):
        return None
    budget = get_retry_budget(name)
    tally = get_counts(backend).tally(name)
    with tally.lock:
        if tally.budget is None or tally.budget.owner is not budget:
            tally.budget = SharedBudget(budget, tally)
        budget.shared = tally.budget
        return tally.budget


on_shared_attach(attach_breaker)  # a shared breaker attaching to Redis counts cluster-wide
