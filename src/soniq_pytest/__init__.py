"""Soniq's pytest plugin, registered through the ``pytest11`` entry point.

Inert until a test asks for one of its fixtures: this module imports nothing of Soniq (nor
asyncpg, OpenTelemetry, ...) and defines no hooks, so a test suite that does not use Soniq's
fixtures runs exactly as without it. The fixtures' work lives in :mod:`soniq.testing`.

- ``soniq_database``: the URL of a database with the Soniq schema and no data, emptied before
  each test. The server: ``SONIQ_TEST_DATABASE_URL``, else 127.0.0.1:5432 as ``postgres``, else
  an embedded server (``soniq[embedded]``); one database per test session, dropped at its end.
- ``soniq_clock``: a :class:`soniq.testing.Clock`, back on real time after the test; with
  ``soniq_database`` in the same test, that database's time follows it.
- ``soniq_postgres_server``: the server's admin URL (session-wide).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from soniq.testing import Clock


@pytest.fixture(scope="session")
def soniq_postgres_server() -> str:
    """The admin URL of the PostgreSQL server test databases are made on."""
    from soniq.testing.postgres import find_server

    url, _source = find_server()
    return url


@pytest.fixture(scope="session")
def soniq_session_database(soniq_postgres_server: str) -> Iterator[str]:
    """A database with the Soniq schema for this test session, dropped at its end."""
    from soniq.testing.postgres import create_database, drop_database

    url = create_database(soniq_postgres_server)
    yield url
    drop_database(soniq_postgres_server, url)


@pytest.fixture
def soniq_database(soniq_session_database: str) -> str:
    """The URL of a database with the Soniq schema and no jobs (emptied for each test)."""
    from soniq.testing.postgres import erase_database

    erase_database(soniq_session_database)
    return soniq_session_database


@pytest.fixture
def soniq_clock(request: pytest.FixtureRequest) -> Iterator[Clock]:
    """A clock the test moves with ``await soniq_clock.advance(seconds)``. In a test that uses
    ``soniq_database`` that database follows; attach any other app's with ``.attach(app)``."""
    from soniq.testing import Clock

    with Clock() as clock:
        if "soniq_database" in request.fixturenames:
            clock.attach(request.getfixturevalue("soniq_database"))
        yield clock
