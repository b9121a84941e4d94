"""How asyncpg's exceptions divide: the server is unreachable, or it refused a value."""

from __future__ import annotations

import asyncio

import asyncpg

# Errors that mean "the server is gone or unreachable", as opposed to a bad statement.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    # Raised now and then when the server ends a session mid-statement (seen in the restart
    # fault test, asyncpg issues #784/#1069); the pool replaces the connection by itself.
    asyncpg.InternalClientError,
)

# The database refused a value: text with NUL or an unpaired surrogate, a number out of its
# column's range, a value over a size limit. About the data, never the connection, so no
# retry helps (asyncpg raises DataError for its own client-side checks too).
BAD_DATA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.ProgramLimitExceededError,
)
