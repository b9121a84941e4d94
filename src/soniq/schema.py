"""``Soniq(schema="jobs")``: Soniq's tables in a PostgreSQL schema of their own.

The statements in :mod:`soniq.sql` name the tables bare (``soniq_jobs``). With a schema set,
each statement is rewritten once (cached) with the names qualified (``jobs.soniq_jobs``), the
NOTIFY channel made the schema's (``soniq_jobs:jobs``) and lock keys derived from the schema,
so two apps sharing a database neither see, wake nor block each other. Qualified names rather
than a ``search_path``: a caller's connection (``connection=``) keeps its own search_path, and
PgBouncer in transaction mode keeps no session setting.

Soniq's own asyncpg connections are of a class that qualifies every statement it is given
(:func:`connection_class`), so the worker and the store run the statements of :mod:`soniq.sql`
unchanged; statements sent on other connections go through :func:`qualify` explicitly.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any

import asyncpg

from .errors import ConfigurationError
from .sql import CHANNELS, SCHEMA_NAMES

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,39}")
# The tables and types, where they stand as names (not inside a longer name such as an
# index's or a channel's, not already qualified), so qualifying twice changes nothing.
_TABLES = re.compile(rf"(?<![\w.\"])(?:{'|'.join(SCHEMA_NAMES)})\b(?!:)")
# Channel names as the statements write them, in quotes.
_CHANNEL_LITERALS = re.compile(rf"'({'|'.join(CHANNELS)})'")


def check_name(schema: str) -> str:
    if not isinstance(schema, str) or not _NAME.fullmatch(schema):
        raise ConfigurationError(
            f"schema={schema!r} is not a schema name Soniq takes: lower-case letters, digits "
            f"and _, starting with a letter or _, at most 40 characters (e.g. schema='jobs')"
        )
    if schema.startswith("pg_"):
        raise ConfigurationError(f"schema={schema!r}: names starting with pg_ are PostgreSQL's")
    return schema


def channel(schema: str | None, name: str = CHANNELS[0]) -> str:
    """The schema's NOTIFY channel ``name`` (by default the one for new jobs)."""
    return name if schema is None else f"{name}:{schema}"


def lock_key(key: int, schema: str | None) -> int:
    """An advisory-lock key made the schema's own (``key`` itself without a schema)."""
    if schema is None:
        return key
    digest = hashlib.blake2b(f"soniq:{schema}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@functools.lru_cache(maxsize=512)
def qualify(statement: str, schema: str | None) -> str:
    """``statement`` with Soniq's names in ``schema`` (unchanged without one)."""
    if schema is None:
        return statement
    # Channels first: a qualified channel ('soniq_jobs:jobs') is then left alone by _TABLES.
    text = _CHANNEL_LITERALS.sub(lambda m: f"'{channel(schema, m.group(1))}'", statement)
    return _TABLES.sub(lambda m: f"{schema}.{m.group(0)}", text)


class _Qualifying(asyncpg.Connection):
    """An asyncpg connection that runs Soniq's statements in ``schema``."""

    schema: str | None = None

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        return await super().execute(qualify(query, self.schema), *args, **kwargs)

    async def executemany(self, command: str, *args: Any, **kwargs: Any) -> Any:
        return await super().executemany(qualify(command, self.schema), *args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await super().fetch(qualify(query, self.schema), *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await super().fetchval(qualify(query, self.schema), *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await super().fetchrow(qualify(query, self.schema), *args, **kwargs)

    async def prepare(self, query: str, **kwargs: Any) -> Any:
        return await super().prepare(qualify(query, self.schema), **kwargs)

    async def add_listener(self, channel_: str, callback: Any) -> None:
        await super().add_listener(_channel_of(channel_, self.schema), callback)

    async def remove_listener(self, channel_: str, callback: Any) -> None:
        await super().remove_listener(_channel_of(channel_, self.schema), callback)


def _channel_of(name: str, schema: str | None) -> str:
    return channel(schema, name) if name in CHANNELS else name


@functools.cache
def connection_class(schema: str | None) -> type[asyncpg.Connection[Any]]:
    """The class of Soniq's own connections for ``schema`` (asyncpg's own without one)."""
    if schema is None:
        return asyncpg.Connection
    return type(f"SoniqConnection_{schema}", (_Qualifying,), {"schema": schema})
