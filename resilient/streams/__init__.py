"""Supervised market-data streams: reconnect with backoff, liveness, resubscription, gaps,
market hours, health and metrics.

```python
from resilient.streams import StreamSupervisor, websocket

quotes = StreamSupervisor(
    "quotes",
    websocket("wss://stream.example.com/v2/iex"),
    subscribe=send_subscribe,          # (connection, symbols) after every (re)connect
    on_message=handle,                 # every message, in order
    on_gap=backfill,                   # a Gap after each reconnect: fetch it over REST
    subscriptions=["AAPL", "MSFT"],
)
async with quotes:
    ...
```
Works with any async iterator factory; only :func:`websocket` needs the ``websockets``
package (extra ``streams``), and it is imported when a connection is opened.
"""

from __future__ import annotations

from typing import Any

from resilient.streams._calendar import MarketCalendar
from resilient.streams._settings import StreamSettings, stream_settings
from resilient.streams._supervisor import Connect, Gap, StreamSupervisor

__all__ = [
    "Gap",
    "MarketCalendar",
    "StreamSettings",
    "StreamSupervisor",
    "stream_settings",
    "websocket",
]


def websocket(url: str, **options: Any) -> Connect:
    """A ``connect`` callable that opens ``url`` with the ``websockets`` library.

    ``options`` go to ``websockets.asyncio.client.connect`` (the supervisor's
    ``connect_timeout`` bounds the opening handshake, so its ``open_timeout`` is off).

    Raises:
        ImportError: when called, if ``websockets`` is not installed
            (``pip install 'resilient[streams]'``).
    """
    settings = {"open_timeout": None, "close_timeout": 1.0, **options}

    def connect() -> Any:
        try:
            from websockets.asyncio.client import connect as open_websocket
        except ImportError as exc:  # pragma: no cover - the extra is installed in CI
            raise ImportError(
                "resilient.streams.websocket needs the websockets package: "
                "pip install 'resilient[streams]'"
            ) from exc
        return open_websocket(url, **settings)

    return connect
