"""The database work of a drain, per job: WAL records and bytes, buffers touched, read from
EXPLAIN (ANALYZE, WAL, BUFFERS) of each worker round trip. Unlike a drain's wall time these
do not move with the load on a shared machine, so two schemas compare in one small run.

    .venv/bin/python -m bench.drain_work                       # this tree
    .venv/bin/python -m bench.drain_work --base /tmp/main-src  # and another checkout's src

``--base`` is the root of another checkout (e.g. ``git archive main | tar -x -C DIR``); its
``src`` is run in a subprocess. ``--dead-letters N`` first writes N dead-lettered jobs (as a
production table keeps them: dead letters have no default retention), so a listing index
that holds them and done jobs alike shows what it costs a finish. The round trips are the
worker's own statement (``sql.finish_and_claim``), claiming 100 and recording the previous
100 as done, as a busy worker at concurrency 100 would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from bench.common import ROOT, admin_url, create_database, drop_database

COUNTERS = ("WAL Records", "WAL Bytes", "Shared Hit Blocks", "Shared Dirtied Blocks")


def _add(plan: dict[str, Any], totals: dict[str, float]) -> None:
    for key in COUNTERS:
        totals[key] = totals.get(key, 0) + plan.get(key, 0)


async def measure(jobs: int, dead_letters: int = 0) -> dict[str, dict[str, float]]:
    import asyncpg

    from soniq import Soniq, sql

    admin = admin_url()
    url = await create_database(admin, "drain_work")
    try:
        async with Soniq(url) as app:
            await app.setup()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "INSERT INTO soniq_jobs (id, job_name, queue, args, max_attempts, status, "
                "created_at, finished_at) SELECT gen_random_uuid(), 'failing', 'default', '{}', "
                "3, 'dead_letter', now() - interval '1 day', now() - interval '1 day' "
                "FROM generate_series(1, $1)",
                dead_letters,
            )
            enqueue: dict[str, float] = {}
            for _ in range(jobs // 100):
                text = await conn.fetchval(
                    "EXPLAIN (ANALYZE, WAL, BUFFERS, FORMAT JSON) INSERT INTO soniq_jobs "
                    "(id, job_name, queue, args, max_attempts) SELECT gen_random_uuid(), 'noop', "
                    "'default', '{\"i\": 1}', 3 FROM generate_series(1, 100)"
                )
                _add(json.loads(text)[0]["Plan"], enqueue)
            await conn.execute("VACUUM ANALYZE soniq_jobs")
            claim = sql.finish_and_claim(sql.QUEUE_FILTER_ALL)
            drain: dict[str, float] = {}
            done: list[str] = []
            while True:
                text = await conn.fetchval(
                    "EXPLAIN (ANALYZE, WAL, BUFFERS, FORMAT JSON) " + claim,
                    "w",
                    *([[]] * 7),
                    100,
                    ["noop"],
                    None,
                    [],
                    100,
                    ",".join(done),
                    ",".join("1" for _ in done),
                )
                plan = json.loads(text)[0]["Plan"]
                _add(plan, drain)
                # The finish CTE is referenced by nothing, so its work is not in the top node.
                for child in plan.get("Plans", []):
                    if child.get("Subplan Name") == "CTE fin":
                        _add(child, drain)
                done = [
                    r[0]
                    for r in await conn.fetch(
                        "SELECT id::text FROM soniq_jobs "
                        "WHERE status = 'processing' AND worker_id = 'w'"
                    )
                ]
                if not done:
                    break
            left = await conn.fetchval(
                "SELECT count(*) FROM soniq_jobs WHERE status NOT IN ('done', 'dead_letter')"
            )
            assert left == 0, f"{left} jobs not drained"
        finally:
            await conn.close()
    finally:
        await drop_database(admin, url)
    per_job = {
        side: {k: v / jobs for k, v in totals.items()}
        for side, totals in (("enqueue", enqueue), ("drain", drain))
    }
    return per_job


def _row(label: str, side: dict[str, float]) -> str:
    return f"{label:<28}" + "".join(f"{side[k]:>22.2f}" for k in COUNTERS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--base", help="root of another checkout to compare with")
    parser.add_argument("--dead-letters", type=int, default=0, help="dead letters written first")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    here = asyncio.run(measure(opts.jobs, opts.dead_letters))
    if opts.json:
        print(json.dumps(here))
        return
    results = {"this tree": here}
    if opts.base:
        env = {**os.environ, "PYTHONPATH": os.path.join(opts.base, "src") + os.pathsep + ROOT}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.drain_work",
                "--jobs",
                str(opts.jobs),
                "--dead-letters",
                str(opts.dead_letters),
                "--json",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results[f"base ({opts.base})"] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"per job, {opts.jobs:,} jobs".ljust(28) + "".join(f"{k:>22}" for k in COUNTERS))
    for side in ("enqueue", "drain"):
        for label, per_job in results.items():
            print(_row(f"{side}, {label}"[:27], per_job[side]))


if __name__ == "__main__":
    main()
