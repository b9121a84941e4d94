"""The shop's tests, on a real PostgreSQL test database with the Soniq tables in it (the
project's TEST_RUNNER). TransactionTestCase: views really commit, as workers need."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.db import connection, transaction
from django.test import TransactionTestCase

from soniq import DuplicateJob
from soniq.contrib.django import app
from soniq.contrib.django.conf import database_url

from .jobs import restock, send_receipt
from .models import Order

PROJECT = Path(__file__).resolve().parent.parent


def drain() -> None:
    """Run a worker until no job is left (in this process, on a loop of its own)."""

    async def run() -> None:
        try:
            await app.run_worker(run_once=True, install_signal_handlers=False)
        finally:
            await app.close()

    asyncio.run(run())


def jobs() -> list[tuple[str, str, str]]:
    with connection.cursor() as cur:
        cur.execute("SELECT id::text, queue, status::text FROM soniq_jobs ORDER BY seq")
        return list(cur.fetchall())


def wait_for(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class OrderTests(TransactionTestCase):
    def setUp(self) -> None:
        with connection.cursor() as cur:
            cur.execute("TRUNCATE soniq_jobs, soniq_workers")

    def order(self, item: str, quantity: int) -> Any:
        body = json.dumps({"item": item, "quantity": quantity})
        return self.client.post("/orders", data=body, content_type="application/json")

    def test_the_order_and_its_receipt_job_commit_together(self) -> None:
        response = self.order("book", 2)
        self.assertEqual(response.status_code, 201, response.content)
        created = response.json()
        self.assertEqual(jobs(), [(created["job_id"], "receipts", "queued")])
        drain()
        self.assertTrue(Order.objects.get(pk=created["order_id"]).receipt_sent)
        self.assertEqual(jobs(), [(created["job_id"], "receipts", "done")])

    def test_a_failed_order_leaves_neither_order_nor_job(self) -> None:
        response = self.order("lamp", 50)
        self.assertEqual(response.status_code, 409)
        self.assertEqual(Order.objects.count(), 0)
        self.assertEqual(jobs(), [])

    def test_enqueue_sync_joins_transaction_atomic(self) -> None:
        with contextlib.suppress(RuntimeError), transaction.atomic():
            app.enqueue_sync(send_receipt, order_id=1)
            raise RuntimeError("rolled back")
        self.assertEqual(jobs(), [])
        with transaction.atomic():
            inside = app.enqueue_sync(send_receipt, order_id=2)
        outside = app.enqueue_sync(send_receipt, order_id=3)  # autocommit: committed at once

        async def seen_by_soniq() -> list[Any]:
            try:  # through Soniq's own connections, not Django's
                return [await app.get_job(inside), await app.get_job(outside)]
            finally:
                await app.close()

        found = asyncio.run(seen_by_soniq())
        self.assertEqual([j["args"]["order_id"] for j in found if j], [2, 3])

    def test_unique_jobs_inside_transaction_atomic(self) -> None:
        with transaction.atomic():
            first = app.enqueue_result_sync(restock, item="lamp")
            with self.assertRaises(DuplicateJob) as caught:  # book is written, then undone
                app.enqueue_many_sync(restock, [{"item": "book"}, {"item": "lamp"}])
            self.assertEqual(caught.exception.existing_id, first.id)
            Order.objects.create(item="lamp", quantity=1)  # the atomic block goes on
        self.assertEqual(jobs(), [(first.id, "stock", "queued")])
        self.assertEqual(Order.objects.count(), 1)
        with contextlib.suppress(RuntimeError), transaction.atomic():
            app.enqueue_sync(restock, item="book")
            raise RuntimeError("rolled back: the key was never held")
        # Outside atomic (autocommit): a transaction of its own, committed at once.
        book = app.enqueue_result_sync(restock, item="book")
        self.assertFalse(book.deduplicated)
        with self.assertRaises(DuplicateJob):
            app.enqueue_sync(restock, item="book")
        self.assertEqual([j[0] for j in jobs()], [first.id, book.id])

    def test_manage_py_soniq_commands(self) -> None:
        env = {
            **os.environ,
            "EXAMPLE_DATABASE_URL": database_url(connection.settings_dict),
            "PYTHONUNBUFFERED": "1",
        }

        def manage(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "manage.py", "soniq", *args],
                cwd=PROJECT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        setup = manage("setup")
        self.assertEqual(setup.returncode, 0, setup.stderr)
        self.assertIn("up to date", setup.stdout)
        created = self.order("book", 1).json()
        status = manage("status")
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertRegex(status.stdout, r"receipts\s+1\s")
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "soniq", "worker", "--concurrency", "2"],
            cwd=PROJECT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_for(
                lambda: Order.objects.get(pk=created["order_id"]).receipt_sent,
                "the worker to send the receipt",
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            out, _ = worker.communicate(timeout=30)
        self.assertEqual(worker.returncode, 0, out)
        # The command runs in-process too (call_command), with the same app.
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            call_command("soniq", "status", "--json")
        self.assertEqual(json.loads(printed.getvalue())[0]["done"], 1)
