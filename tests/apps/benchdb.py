"""A throw-away database for a bench script: SONIQ_BENCH_DATABASE_URL, else a fresh database on
the server the test suite would use (127.0.0.1:5432, or an embedded one), dropped afterwards."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from soniq import Soniq
from tests.support import pg


@asynccontextmanager
async def bench_database(prefix: str) -> AsyncIterator[str]:
    given = os.environ.get("SONIQ_BENCH_DATABASE_URL")
    if given:
        app = Soniq(given)
        await app.setup()
        await app.close()
        yield given
        return
    admin, source = await asyncio.to_thread(pg.server_url)  # it runs its own loop
    url = await pg.create_database(admin, prefix=prefix)
    print(f"# database: a fresh one on {source}", flush=True)
    try:
        app = Soniq(url)
        await app.setup()
        await app.close()
        yield url
    finally:
        await pg.drop_database(admin, url)
