"""Issue 17, point 6: ``soniq jobs list/show/retry/cancel/delete``."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

import asyncpg

from soniq import Soniq
from tests.support.procs import ROOT, env_for, soniq


def _jobs(app: Soniq) -> None:
    @app.job(name="c.ok")
    async def ok(n: int) -> int:
        return n

    @app.job(name="c.fail", max_retries=1, retry_backoff=0)
    async def fail(n: int) -> None:
        raise RuntimeError(f"declined {n}")


async def test_list_and_show(app: Soniq, clean_db: str) -> None:
    _jobs(app)
    ok = await app.enqueue("c.ok", n=1)
    failed = await app.enqueue("c.fail", n=2, queue="billing")
    await app.run_worker(run_once=True, install_signal_handlers=False)
    later = await app.enqueue("c.ok", n=3, scheduled_at=3600)

    out = soniq("jobs", "list", database_url=clean_db)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "status", "name", "queue"]
    assert [line.split()[0] for line in lines[1:]] == [later, failed, ok]  # whole ids, newest first
    assert "RuntimeError: declined 2" in lines[2]

    only = soniq(
        "jobs", "list", "--status", "dead_letter,done", "--limit", "1", database_url=clean_db
    )
    assert [line.split()[0] for line in only.stdout.splitlines()[1:]] == [failed]
    named = soniq("jobs", "list", "--queue", "billing", "--name", "c.fail", database_url=clean_db)
    assert [line.split()[0] for line in named.stdout.splitlines()[1:]] == [failed]
    none = soniq("jobs", "list", "--name", "nothing", database_url=clean_db)
    assert none.returncode == 0 and none.stdout.strip() == "No jobs match."

    bad = soniq("jobs", "list", "--status", "failed", database_url=clean_db)
    assert bad.returncode == 1 and "unknown job status 'failed'" in bad.stderr

    show = soniq("jobs", "show", failed, database_url=clean_db)
    assert show.returncode == 0, show.stderr
    for field in ("id:", "job_name:", "args:", "status:", "attempts:", "worker_id:", "created_at:"):
        assert field in show.stdout
    assert "attempt 1 at " in show.stdout and "attempt 2 at " in show.stdout
    assert show.stdout.count("RuntimeError: declined 2") >= 3  # last_error, each attempt
    assert "Traceback (most recent call last)" in show.stdout

    missing = soniq("jobs", "show", "00000000-0000-7000-8000-000000000000", database_url=clean_db)
    assert missing.returncode == 1 and "no job with id" in missing.stderr
    malformed = soniq("jobs", "show", "nope", database_url=clean_db)
    assert malformed.returncode == 2 and "'nope' is not a job id" in malformed.stderr


async def test_actions_by_id_and_by_filter(
    app: Soniq, db: asyncpg.Connection, clean_db: str
) -> None:
    _jobs(app)
    dead = [await app.enqueue("c.fail", n=i) for i in range(3)]
    await app.run_worker(run_once=True, install_signal_handlers=False)

    retried = soniq("jobs", "retry", *dead[:2], database_url=clean_db)
    assert retried.returncode == 0, retried.stderr
    assert "Retried 2 job(s)." in retried.stdout
    assert await db.fetchval("SELECT count(*) FROM soniq_jobs WHERE status = 'queued'") == 2

    not_done = soniq("jobs", "retry", dead[0], database_url=clean_db)
    assert not_done.returncode == 1 and dead[0] in not_done.stderr

    cancelled = soniq("jobs", "cancel", "--status", "queued", database_url=clean_db)
    assert "Cancelled 2 job(s)." in cancelled.stdout

    dry = soniq("jobs", "delete", "--status", "cancelled,dead_letter", "--dry-run",
                database_url=clean_db)  # fmt: skip
    assert "Would delete 3 job(s) (dry run: nothing changed)." in dry.stdout
    assert await db.fetchval("SELECT count(*) FROM soniq_jobs") == 3

    usage = soniq("jobs", "delete", database_url=clean_db)
    assert usage.returncode == 2 and "--all for every job" in usage.stderr
    both = soniq("jobs", "delete", dead[0], "--queue", "default", database_url=clean_db)
    assert both.returncode == 2 and "ids or filters" in both.stderr

    gone = soniq("jobs", "delete", "--all", database_url=clean_db)
    assert gone.returncode == 0 and "Deleted 3 job(s)." in gone.stdout


async def test_five_or_more_jobs_need_a_yes(
    app: Soniq, db: asyncpg.Connection, clean_db: str
) -> None:
    _jobs(app)
    await app.enqueue_many("c.ok", [{"n": i} for i in range(6)], scheduled_at=3600)

    refused = soniq("jobs", "cancel", "--queue", "default", database_url=clean_db)
    assert refused.returncode == 1
    assert "this would cancel 6 jobs; there is no terminal to ask on" in refused.stderr
    assert "--yes" in refused.stderr
    assert await db.fetchval("SELECT count(*) FROM soniq_jobs WHERE status = 'queued'") == 6

    said_no = _on_a_terminal(clean_db, "n\n", "jobs", "cancel", "--queue", "default")
    assert "Cancel 6 jobs? [y/N]" in said_no and "Nothing changed." in said_no
    assert await db.fetchval("SELECT count(*) FROM soniq_jobs WHERE status = 'queued'") == 6

    said_yes = _on_a_terminal(clean_db, "y\n", "jobs", "cancel", "--queue", "default")
    assert "Cancelled 6 job(s)." in said_yes
    assert await db.fetchval("SELECT count(*) FROM soniq_jobs WHERE status = 'cancelled'") == 6

    forced = soniq("jobs", "delete", "--status", "cancelled", "--yes", database_url=clean_db)
    assert forced.returncode == 0 and "Deleted 6 job(s)." in forced.stdout


def _on_a_terminal(database_url: str, answer: str, *args: str) -> str:
    """Run ``soniq`` with a pseudo-terminal as its stdin and stdout, typing ``answer`` once it
    asks; returns what it printed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "soniq", *args],
        cwd=ROOT,
        env=env_for(database_url),
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    out = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if not answered and b"[y/N]" in out:
                os.write(leader, answer.encode())
                answered = True
        proc.wait(timeout=30)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    return out.decode(errors="replace").replace("\r\n", "\n")
