"""Running a Django project's tests with Soniq: ``TEST_RUNNER =
"soniq.contrib.django.testing.SoniqTestRunner"``.

Django's test runner creates a test database and renames the project's database to it after
Django has started, so the Soniq app, pointed at the project's database at start-up, is
pointed at the test database once it exists (:func:`use_test_database`), and the Soniq tables
are created there. ``enqueue_sync`` on Django's connection needs nothing: that connection is
the test database's already. With pytest-django, call :func:`use_test_database` from a
session fixture that depends on ``django_db_setup``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.test.runner import DiscoverRunner

from .conf import configure, the_app


def use_test_database() -> None:
    """Point the Soniq app at Django's database as it is now (the test database) and create
    the Soniq tables there. Call it before the app's first use."""
    configure()
    app = the_app()

    async def setup() -> None:
        try:
            await app.setup()
        finally:
            await app.close()  # the pool belongs to this loop; the next use opens another

    asyncio.run(setup())


class SoniqTestRunner(DiscoverRunner):
    def setup_databases(self, **kwargs: Any) -> Any:
        result = super().setup_databases(**kwargs)
        use_test_database()
        return result
