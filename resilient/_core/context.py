"""The correlation id: a context variable that follows a call into tasks and threads."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = [
    "correlation_id",
    "current_correlation_id",
    "ensure_correlation_id",
    "new_correlation_id",
]

_cid: ContextVar[str | None] = ContextVar("resilient_correlation_id", default=None)
# A per-process random prefix plus a counter: unique and far cheaper than uuid4 per call.
_prefix = os.urandom(4).hex()
_counter = itertools.count(1)


def new_correlation_id() -> str:
    """A fresh id, unique within the process and very likely across processes."""
    return f"{_prefix}-{next(_counter):08x}"


def current_correlation_id() -> str | None:
    """The id of the current context, or ``None`` outside any correlated call."""
    return _cid.get()


def ensure_correlation_id() -> str:
    """The current id; creates and sets one for this context when there is none."""
    cid = _cid.get()
    if cid is None:
        cid = new_correlation_id()
        _cid.set(cid)
    return cid


@contextmanager
def correlation_id(value: str | None = None) -> Iterator[str]:
    """Run the block under correlation id ``value`` (a new one when omitted).

    Tasks created inside the block inherit it (asyncio copies the context).
    """
    cid = value if value is not None else new_correlation_id()
    token = _cid.set(cid)
    try:
        yield cid
    finally:
        _cid.reset(token)
