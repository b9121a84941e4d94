"""Fixtures of the example tests. soniq_database and soniq_clock come from Soniq's pytest
plugin, installed with the package: nothing to import or register."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from signup import Mailer, create_app

from soniq import Soniq


@pytest.fixture
def mailer() -> Mailer:
    return Mailer()


@pytest.fixture
def app(mailer: Mailer) -> Soniq:
    """For inline and capture tests: no database is needed, none is connected to."""
    return create_app(mailer)


@pytest.fixture
async def db_app(mailer: Mailer, soniq_database: str) -> AsyncIterator[Soniq]:
    """For tests against PostgreSQL: a clean database with the Soniq schema."""
    app = create_app(mailer, soniq_database)
    yield app
    await app.close()
