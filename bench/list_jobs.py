"""Listing jobs on a big table (issue 17, point 7): the first page of ``list_jobs`` for each
single filter, and ``iter_jobs``'s cost per page from the first page to the last.

    .venv/bin/python -m bench.list_jobs            # 1,000,000 jobs, about two minutes
    .venv/bin/python -m bench.list_jobs --jobs 200000

The jobs are written server-side as the scale check writes its rows (time-ordered ids, one
INSERT ... SELECT FROM generate_series), then VACUUM ANALYZE as autovacuum would. Their mix is
a production table's, skewed on purpose so that rare values are tested too: 85 % done, 5 %
dead-lettered, 2 % cancelled, 8 % queued, 200 processing; eight queues from 60 % down to
0.1 %; twenty job names down to 0.05 %, and one that no job has; created over 30 days. Each
figure is the median of seven warm runs, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from bench.common import admin_url, create_database, drop_database
from soniq import Soniq
from soniq.job_filters import make_filter
from soniq.store_admin import list_query

# Index names in a plan (the table's aliases, soniq_jobs_1 ..., are not indexes).
_INDEX = re.compile(r"Scan (?:Backward )?using (\w+)|Bitmap Index Scan on (\w+)")

RUNS = 7
LIMIT = 100  # list_jobs' default page
BUDGET_MS = 50.0

LOAD = """
INSERT INTO soniq_jobs (id, job_name, queue, args, status, max_attempts, attempts,
                        scheduled_at, created_at, started_at, finished_at, worker_id,
                        last_error)
SELECT (lpad(to_hex((extract(epoch FROM t.at) * 1000)::bigint), 12, '0') || '7'
        || lpad(to_hex(g % 4096), 3, '0') || '8' || lpad(to_hex(g), 15, '0'))::uuid,
       CASE WHEN g % 2000 = 7 THEN 'reports.rare'
            ELSE 'app.task_' || (width_bucket(random(), 0, 1, 19)) END,
       CASE WHEN g % 1000 = 3 THEN 'rare'
            ELSE (ARRAY['default','default','default','default','default','default',
                        'mail','mail','billing','exports'])[g % 10 + 1] END,
       jsonb_build_object('user_id', g % 10000, 'i', g, 'kind', CASE WHEN g % 2 = 0
                          THEN 'even' ELSE 'odd' END),
       s.status, 4, CASE WHEN s.status = 'queued' THEN 0 ELSE 1 END,
       t.at, t.at, CASE WHEN s.status <> 'queued' THEN t.at END,
       CASE WHEN s.status IN ('done', 'dead_letter', 'cancelled')
            THEN t.at + interval '1 second' END,
       CASE WHEN s.status = 'processing' THEN 'bench:1:w' END,
       CASE WHEN s.status = 'dead_letter' THEN 'ValueError: boom' END
FROM generate_series(1, $1) AS g,
     LATERAL (SELECT now() - make_interval(secs => ($1 - g) * 2592000.0 / $1) AS at) AS t,
     LATERAL (SELECT (CASE WHEN g % 5000 = 11 THEN 'processing'
                           WHEN g % 100 < 85 THEN 'done'
                           WHEN g % 100 < 90 THEN 'dead_letter'
                           WHEN g % 100 < 92 THEN 'cancelled'
                           ELSE 'queued' END)::soniq_job_status AS status) AS s
"""


def _filters(now: datetime) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("no filter", {}),
        ("queue='default' (60 %)", {"queue": "default"}),
        ("queue='rare' (0.1 %)", {"queue": "rare"}),
        ("status='done' (85 %)", {"status": "done"}),
        ("status='dead_letter' (5 %)", {"status": "dead_letter"}),
        ("status='cancelled' (2 %)", {"status": "cancelled"}),
        ("status='queued' (8 %)", {"status": "queued"}),
        ("status='processing' (200 rows)", {"status": "processing"}),
        ("job_name='app.task_3' (5 %)", {"job_name": "app.task_3"}),
        ("job_name='reports.rare' (0.05 %)", {"job_name": "reports.rare"}),
        # The worst case of a job name: none has it, and every done job's entry is read.
        ("job_name='no.such' (no job)", {"job_name": "no.such"}),
        ("created_after=now-1 day", {"created_after": now - timedelta(days=1)}),
        ("created_before=now-20 days", {"created_before": now - timedelta(days=20)}),
        ("args_contains={'kind': 'even'} (50 %)", {"args_contains": {"kind": "even"}}),
        ("args_contains={'user_id': 42} (0.01 %)", {"args_contains": {"user_id": 42}}),
    ]


async def _time(call: Any) -> float:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def _indexes(app: Soniq, filters: dict[str, Any]) -> str:
    query, args = list_query(make_filter(**filters))
    pool = await app.pool()
    plan = "\n".join(r[0] for r in await pool.fetch("EXPLAIN " + query, LIMIT, 0, *args))
    used = sorted({a or b for a, b in _INDEX.findall(plan)})
    return ", ".join(used) or "(sequential scan)"


async def run(jobs: int) -> None:
    admin = admin_url()
    url = await create_database(admin, "list_jobs")
    try:
        async with Soniq(url) as app:
            await app.setup()
            pool = await app.pool()
            started = time.perf_counter()
            await pool.execute(LOAD, jobs, timeout=3600)
            await pool.execute("VACUUM ANALYZE soniq_jobs", timeout=3600)
            print(f"loaded {jobs:,} jobs in {time.perf_counter() - started:.0f} s")
            now = datetime.now(timezone.utc)
            print(f"\nfirst page of list_jobs (limit {LIMIT}), median of {RUNS}, ms")
            print(f"{'filter':<42}{'ms':>8}  {'rows':>5}  indexes")
            over = []
            for label, filters in _filters(now):
                rows = len(await app.list_jobs(limit=LIMIT, **filters))
                ms = await _time(lambda f=filters: app.list_jobs(limit=LIMIT, **f))
                flag = "" if ms < BUDGET_MS else "  OVER"
                if flag:
                    over.append(label)
                print(f"{label:<42}{ms:>8.2f}  {rows:>5}  {await _indexes(app, filters)}{flag}")
            await _iterate(app, {}, "every job", 1000)
            await _iterate(app, {"status": "dead_letter"}, "status='dead_letter'", 500)
            print(f"\nover {BUDGET_MS:g} ms: {', '.join(over) if over else 'none'}")
    finally:
        await drop_database(admin, url)


async def _iterate(app: Soniq, filters: dict[str, Any], label: str, page: int) -> None:
    """Time every page of an iter_jobs run; compare the first tenth with the last."""
    times: list[float] = []
    count = 0
    iterator = app.iter_jobs(page_size=page, **filters)
    started = time.perf_counter()
    async for _job in iterator:
        count += 1
        if count % page == 0:
            now = time.perf_counter()
            times.append((now - started) * 1000)
            started = now
    tenth = max(1, len(times) // 10)
    first, last = statistics.median(times[:tenth]), statistics.median(times[-tenth:])
    print(
        f"\niter_jobs {label}: {count:,} jobs in {len(times):,} pages of {page}; ms per page: "
        f"first tenth {first:.1f}, last tenth {last:.1f} (last/first {last / first:.2f}), "
        f"max {max(times):.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    opts = parser.parse_args()
    asyncio.run(run(opts.jobs))


if __name__ == "__main__":
    main()
