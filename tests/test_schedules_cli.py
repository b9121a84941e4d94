"""`soniq schedules ...` as an operator runs it: a real process with the database URL alone."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg

from soniq import Soniq
from tests.support.procs import soniq


async def run(*args: str, url: str) -> tuple[int, str]:
    """Exit code and what the command printed (its log lines go to stderr; errors too)."""
    done = await asyncio.to_thread(soniq, "schedules", *args, database_url=url)
    return done.returncode, done.stdout if done.returncode == 0 else done.stderr


async def test_schedules_cli_with_the_database_url_alone(
    clean_db: str, db: asyncpg.Connection
) -> None:
    app = Soniq(clean_db)

    @app.job(name="reports.daily")
    async def daily(region: str) -> None:
        pass

    await app.scheduler.add(
        daily, cron="30 9 * * mon-fri", timezone="Europe/Berlin", args={"region": "eu"}, name="eu"
    )
    await app.scheduler.add(daily, every=90, args={"region": "us"}, name="us")

    code, out = await run("list", url=clean_db)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["name", "job", "timetable", "state"]
    eu = next(line for line in lines if line.startswith("eu "))
    assert "30 9 * * mon-fri (Europe/Berlin)" in eu and "ORPHANED" in eu  # no worker runs
    assert "every 90s" in next(line for line in lines if line.startswith("us "))

    code, out = await run("pause", "eu", url=clean_db)
    assert (code, out.strip()) == (0, "Schedule eu paused.")
    assert (await app.scheduler.get("eu"))["paused"] is True
    code, out = await run("list", "--json", url=clean_db)
    listed = {s["name"]: s for s in json.loads(out)}
    assert listed["eu"]["paused"] is True and listed["eu"]["next_run_at"] is None
    assert listed["us"]["args"] == {"region": "us"}

    code, out = await run("resume", "eu", url=clean_db)
    assert code == 0, out
    assert (await app.scheduler.get("eu"))["next_run_at"] is not None

    code, out = await run("trigger", "us", url=clean_db)
    assert code == 0, out
    job_id = str(uuid.UUID(out.strip()))
    job = await db.fetchrow(
        "SELECT job_name, args::text AS args, schedule_name FROM soniq_jobs WHERE id = $1",
        job_id,
    )
    assert job["job_name"] == "reports.daily" and json.loads(job["args"]) == {"region": "us"}
    assert job["schedule_name"] == "us"

    code, out = await run("remove", "us", url=clean_db)
    assert code == 0, out
    assert [s["name"] for s in await app.scheduler.list()] == ["eu"]

    code, out = await run("pause", "nope", url=clean_db)
    assert code != 0 and "no schedule named 'nope'" in out and "soniq schedules list" in out
    await app.close()
