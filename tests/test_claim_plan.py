"""The claim's plan does not depend on table statistics (issue 13, point 6).

A table that was never analyzed looks tiny to the planner, which then reads every queued row
with a bitmap scan and sorts them for each claim; the workers' round-trip connections plan
without bitmap scans, so the claim walks its partial index in order and stops at its limit.
"""

from __future__ import annotations

import json

from soniq import Soniq
from soniq.worker_store import WorkerStore


async def _claim_plan(app: Soniq, *, claim_pool: bool) -> str:
    ws = WorkerStore(app._store, "plan-test", None, 10)
    args = ("plan-test", [], [], [], [], [], [], [], 210, ["plan.job"], None, [], 10, "", "")
    pool = await (app._store.claim_pool() if claim_pool else app.pool())
    async with pool.acquire() as conn, conn.transaction():
        plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + ws._claim_sql, *args)
        return json.dumps(json.loads(plan) if isinstance(plan, str) else plan)


async def test_claim_walks_the_index_on_a_table_never_analyzed(empty_database_url: str) -> None:
    app = Soniq(empty_database_url)

    @app.job(name="plan.job")
    async def plan_job(i: int) -> None: ...

    try:
        await app.setup()
        await app.enqueue_many("plan.job", [{"i": i} for i in range(5000)])
        pool = await app.pool()
        analyzed = await pool.fetchval(
            "SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL "
            "FROM pg_stat_user_tables WHERE relname = 'soniq_jobs'"
        )
        assert analyzed is False  # the premise: no statistics at all
        # Planned as any other connection would, the claim reads and sorts every queued row...
        assert "Bitmap Heap Scan" in await _claim_plan(app, claim_pool=False)
        # ...but the workers' connections walk the claim index in order.
        plan = await _claim_plan(app, claim_pool=True)
        assert "Bitmap Heap Scan" not in plan
        assert '"Index Name": "soniq_jobs_claim_any"' in plan
    finally:
        await app.close()
