from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import asyncpg
import pytest

from soniq import Soniq
from tests.support import pg

if TYPE_CHECKING:
    from tests.support.otlp_receiver import OtlpReceiver


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url, source = pg.server_url()
    print(f"\nsoniq tests use PostgreSQL from {source}")
    return url


@pytest.fixture(scope="session")
def database_url(pg_admin_url: str) -> Iterator[str]:
    """A database made for this test session, with the Soniq schema in place."""
    url = asyncio.run(pg.create_database(pg_admin_url))

    async def setup() -> None:
        app = Soniq(url)
        await app.setup()
        await app.close()

    asyncio.run(setup())
    os.environ["SONIQ_TEST_SESSION_DATABASE_URL"] = url
    yield url
    asyncio.run(pg.drop_database(pg_admin_url, url))


@pytest.fixture
async def empty_database_url(pg_admin_url: str) -> AsyncIterator[str]:
    """A fresh database with no Soniq schema."""
    url = await pg.create_database(pg_admin_url, prefix="soniq_empty")
    yield url
    await pg.drop_database(pg_admin_url, url)


@pytest.fixture
async def clean_db(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "TRUNCATE soniq_jobs, soniq_workers, soniq_schedules, soniq_schedule_fires, "
            "soniq_queues"
        )
    finally:
        await conn.close()
    return database_url


@pytest.fixture
async def app(clean_db: str) -> AsyncIterator[Soniq]:
    """A Soniq app on a clean database, with short timings so tests run fast."""
    soniq = Soniq(clean_db, poll_interval=0.5, lease_seconds=3, grace_period=5)
    yield soniq
    await soniq.close()


@pytest.fixture
async def db(clean_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(clean_db)
    yield conn
    await conn.close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP receiver (gRPC and HTTP, all three signals) for the test, stopped after it."""
    from tests.support.otlp_receiver import OtlpReceiver

    r = OtlpReceiver().start()
    yield r
    r.stop()
