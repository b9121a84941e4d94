"""A PostgreSQL server for tests and databases made on it (what the ``soniq_database`` fixture
uses; callable without pytest too).

The server, in this order: ``SONIQ_TEST_DATABASE_URL`` (a URL whose user may create databases),
a server on 127.0.0.1:5432 that user ``postgres`` can reach, else an embedded server started in
a temporary folder (``SONIQ_TEST_PGDATA`` to choose it; needs ``soniq[embedded]``). Each call
of :func:`create_database` makes a database of its own, with the Soniq schema, so test runs on
one server never see each other's jobs.

The functions are synchronous (fixtures are) and run their queries on a short-lived loop of
their own in another thread, so they work whether or not the caller's thread runs a loop.

This module sends its own two statements, CREATE and DROP DATABASE: they go to the server's
maintenance database, where no Soniq store exists (no schema, no pool), so it is one of the
store modules ``tests/test_store_rule.py`` allows. Everything else goes through ``Soniq``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

T = TypeVar("T")

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def _run(coro: Coroutine[Any, Any, T]) -> T:
    with ThreadPoolExecutor(1, thread_name_prefix="soniq-testing") as pool:
        return pool.submit(asyncio.run, coro).result()


async def _reachable(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except Exception:  # refused, no such user, timed out: not ours to use
        return False
    await conn.close()
    return True


def find_server() -> tuple[str, str]:
    """``(admin URL, where it came from)`` for the server tests make their databases on."""
    from ..database import check_url, embedded_url
    from ..errors import ConfigurationError

    env = os.environ.get("SONIQ_TEST_DATABASE_URL")
    if env:
        return check_url(env), "SONIQ_TEST_DATABASE_URL"
    if _run(_reachable(LOCAL_SERVER)):
        return LOCAL_SERVER, "127.0.0.1:5432"
    folder = Path(os.environ.get("SONIQ_TEST_PGDATA") or Path(tempfile.gettempdir()) / "soniq-pg")
    try:
        return embedded_url(folder), f"embedded server in {folder}"
    except ConfigurationError:
        raise ConfigurationError(
            "No PostgreSQL for the tests: SONIQ_TEST_DATABASE_URL is not set, nothing answers "
            "on 127.0.0.1:5432 as user postgres, and the embedded server is not installed. "
            "Set SONIQ_TEST_DATABASE_URL=postgresql://user@host/db (a user that may create "
            "databases), start a local server, or pip install 'soniq[embedded]'"
        ) from None


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def create_database(admin_url: str, prefix: str = "soniq_test") -> str:
    """Make a new database on the server with the Soniq schema in place; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"

    async def create() -> str:
        from ..app import Soniq

        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        url = with_database(admin_url, name)
        app = Soniq(url)
        try:
            await app.setup()
        finally:
            await app.close()
        return url

    return _run(create())


def drop_database(admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")

    async def drop() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    _run(drop())


def erase_database(url: str) -> None:
    """Empty the Soniq tables of a test database (the schema stays)."""

    async def erase() -> None:
        from ..app import Soniq

        app = Soniq(url)
        try:
            await app._store.erase_all()
        finally:
            await app.close()

    _run(erase())
