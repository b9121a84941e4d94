"""The dashboard on a big table (issue 18, point 5): how long each page takes to render with
1,000,000 jobs in the table, against a budget of 200 ms.

    .venv/bin/python -m bench.dashboard            # 1,000,000 jobs, about two minutes
    .venv/bin/python -m bench.dashboard --jobs 200000

The jobs are bench.list_jobs' mix (written server-side, then VACUUM ANALYZE as autovacuum
would), plus a burst of jobs done in the last hour so the overview's statistics have a full
sample to read. Each page is requested through the ASGI app itself (no network), warm, and
the figure is the median of seven runs in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from bench.common import admin_url, create_database, drop_database
from bench.list_jobs import LOAD
from soniq import Soniq
from soniq_dashboard import create_app

RUNS = 7
BUDGET_MS = 200.0

# 30,000 jobs done within the last hour, spread over it, with a run time and a wait.
RECENT = """
INSERT INTO soniq_jobs (id, job_name, queue, args, status, max_attempts, attempts,
                        scheduled_at, created_at, started_at, finished_at)
SELECT gen_random_uuid(), 'app.task_' || (g % 7), (ARRAY['default','mail'])[g % 2 + 1],
       '{}'::jsonb, 'done', 4, 1, t.at, t.at, t.at + interval '5 ms',
       t.at + make_interval(secs => 0.01 + (g % 100) / 1000.0)
FROM generate_series(1, $1) AS g,
     LATERAL (SELECT now() - make_interval(secs => g * 3500.0 / $1) AS at) AS t
"""


async def _time(client: httpx.AsyncClient, path: str) -> tuple[float, int]:
    samples = []
    status = 0
    for _ in range(RUNS + 1):  # the first run warms caches and is dropped
        t0 = time.perf_counter()
        r = await client.get(path)
        samples.append((time.perf_counter() - t0) * 1000)
        status = r.status_code
    return statistics.median(samples[1:]), status


async def run(jobs: int) -> None:
    admin = admin_url()
    url = await create_database(admin, "dashboard")
    app = Soniq(url)

    @app.job(name="app.task_1")
    async def task(**_: object) -> None: ...

    try:
        await app.setup()
        pool = await app.pool()
        t0 = time.perf_counter()
        await pool.execute(LOAD, jobs, timeout=3600)
        await pool.execute(RECENT, 30_000, timeout=3600)
        await pool.execute("VACUUM ANALYZE soniq_jobs", timeout=3600)
        print(f"loaded {jobs + 30_000:,} jobs in {time.perf_counter() - t0:.0f}s")
        await app.scheduler.add("app.task_1", every=3600, name="hourly")
        dead = await app.list_jobs(status="dead_letter", limit=1)
        newest = await app.list_jobs(limit=50)
        cursor = f"{newest[-1]['created_at'].isoformat()}~{newest[-1]['id']}"
        pages = [
            "/",
            "/jobs",
            "/jobs?queue=rare",
            "/jobs?job_name=reports.rare",
            "/jobs?status=dead_letter&queue=billing",
            "/jobs?" + httpx.QueryParams({"after": cursor}).__str__(),
            f"/jobs/{dead[0]['id']}",
            "/dead-letters",
            "/dead-letters?queue=mail",
            "/schedules",
            "/queues",
            "/workers",
        ]
        web = create_app(app)
        transport = httpx.ASGITransport(app=web)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            print(f"{'page':<48}{'ms':>8}  budget {BUDGET_MS:.0f} ms")
            for path in pages:
                ms, status = await _time(client, path)
                verdict = "ok" if ms < BUDGET_MS and status == 200 else "OVER"
                if status != 200:
                    verdict = f"HTTP {status}"
                print(f"{path[:47]:<48}{ms:>8.1f}  {verdict}", flush=True)
    finally:
        await app.close()
        await drop_database(admin, url)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    asyncio.run(run(parser.parse_args().jobs))


if __name__ == "__main__":
    main()
