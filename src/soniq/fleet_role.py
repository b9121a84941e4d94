"""A role at most one process of a fleet holds at a time, such as "report the queue-state
gauges" (so that ``sum()`` over every scraped process counts each job once).

Held as a PostgreSQL session advisory lock on a connection of its own: when the holding
process dies, its connection and so the role go with it, and another process may take it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import TYPE_CHECKING, Any

from .schema import lock_key

if TYPE_CHECKING:
    import asyncpg

    from .store import Store


def role_key(name: str) -> int:
    """The advisory-lock key of a role: the first 8 bytes of BLAKE2b of its name, signed."""
    digest = hashlib.blake2b(f"soniq.role:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class FleetRole:
    """Get one from ``app.fleet_role(name)``; every process asking for the same name competes
    for the same role. Use it from one event loop (the one that took it)."""

    def __init__(self, store: Store, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"A fleet role needs a non-empty name, not {name!r}")
        self.name = name
        # Apps in different schemas are different fleets.
        self.key = lock_key(role_key(name), store.schema)
        self._store = store
        self._conn: asyncpg.Connection[Any] | None = None

    def __repr__(self) -> str:
        return f"FleetRole({self.name!r}, held={self.held})"

    @property
    def held(self) -> bool:
        """Whether this process holds the role (its connection is still open)."""
        return self._conn is not None and not self._conn.is_closed()

    async def try_take(self) -> bool:
        """Take the role if no other process holds it; True if this one holds it now.

        Processes that do not get it keep no connection of their own (they probe through the
        pool). Raises :class:`soniq.errors.DatabaseUnavailable` if PostgreSQL is unreachable.
        """
        if self.held:
            return True
        self._conn = await self._store.hold_advisory_lock(self.key)
        return self._conn is not None

    async def release(self, timeout: float = 2.0) -> None:
        """Give the role up (idempotent); another process may take it at once."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout)
            except Exception:
                conn.terminate()

    def abandon(self) -> None:
        """Give the role up without waiting, e.g. when the loop that took it is gone: the
        connection is cut, and the server drops the lock with it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            # Its loop may be closed already; the socket goes with it then.
            with contextlib.suppress(Exception):
                conn.terminate()
