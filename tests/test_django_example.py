"""The Django example project's own tests (examples/django, `python manage.py test`), run
against this session's PostgreSQL server, so CI runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support import pg

PROJECT = Path(__file__).resolve().parent.parent / "examples" / "django"


def test_the_django_example_passes_its_tests(pg_admin_url: str) -> None:
    # Django makes test_<name> next to <name> (which need not exist) and drops it after.
    url = pg.with_database(pg_admin_url, f"soniq_django_{uuid.uuid4().hex[:10]}")
    env = {**os.environ, "EXAMPLE_DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "test", "--noinput", "-v", "2"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "Ran 5 tests" in report and "\nOK" in report, report
    for name in (
        "test_the_order_and_its_receipt_job_commit_together",
        "test_a_failed_order_leaves_neither_order_nor_job",
        "test_enqueue_sync_joins_transaction_atomic",
        "test_unique_jobs_inside_transaction_atomic",
        "test_manage_py_soniq_commands",
    ):
        assert f"{name} " in report and "ok" in report, name
