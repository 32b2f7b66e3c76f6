"""The database layer on its embedded default (SQLite through aiosqlite; PostgreSQL when
``database.host`` is set): writes that are safe to retry, reads, the health check and pool use.

Run: python examples/database_usage.py
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path

from resilient.config import ConfigManager
from resilient.db import Database


async def main(scratch: Path) -> None:
    config = ConfigManager().load_config()
    path = scratch / "trades.db"
    config = dataclasses.replace(
        config, database=dataclasses.replace(config.database, host="", sqlite_path=str(path))
    )

    async with Database.from_config(config) as db:  # start() ... close()
        print(f"database: {db.url_masked} (sqlite: {db.is_sqlite})")
        await db.execute(
            "CREATE TABLE IF NOT EXISTS fills (client_order_id TEXT PRIMARY KEY, symbol TEXT, "
            "qty REAL, price REAL)"
        )
        # Keyed by the client order id, so replaying it cannot double a fill: safe to retry.
        for cid, symbol, qty, price in (
            ("c-1", "AAPL", 10, 189.5),
            ("c-2", "MSFT", 5, 410.0),
            ("c-1", "AAPL", 10, 189.5),
        ):
            await db.execute(
                "INSERT INTO fills VALUES (:cid, :symbol, :qty, :price) "
                "ON CONFLICT (client_order_id) DO NOTHING",
                {"cid": cid, "symbol": symbol, "qty": qty, "price": price},
                idempotent=True,
            )
        rows = await db.fetch_all("SELECT symbol, qty, price FROM fills ORDER BY symbol")
        for row in rows:
            print(f"  {row['symbol']}: {row['qty']:g} @ {row['price']:.2f}")
        notional = await db.scalar("SELECT sum(qty * price) FROM fills")
        print(f"total notional: {notional:,.2f}")
        health = await db.health_check()
        print(
            f"health: {health['status']} (backend {health['backend']}); "
            f"pool: {db.pool_stats().to_dict()}"
        )
        assert len(rows) == 2 and health["status"] == "healthy"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="resilient-db-") as scratch:
        asyncio.run(main(Path(scratch)))
