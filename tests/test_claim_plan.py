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


async def _generic_claim_plan(app: Soniq) -> str:
    """The plan a worker's prepared claim settles on after five runs: the generic one, which
    knows no argument (LIMIT $9 is guessed at a tenth of the table)."""
    ws = WorkerStore(app._store, "plan-test", None, 10)
    literals = "'plan-test', '{}', '{}', '{}', '{}', '{}', '{}', '{}', 210, '{plan.job}', NULL, "
    literals += "'{}', 10, '', ''"
    pool = await app._store.claim_pool()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute("PREPARE generic_claim AS " + ws._claim_sql)
        try:
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE generic_claim({literals})")
        finally:
            await conn.execute("DEALLOCATE generic_claim")
        return json.dumps(json.loads(plan) if isinstance(plan, str) else plan)


async def test_claim_updates_by_row_address_in_the_generic_plan_of_an_analyzed_table(
    empty_database_url: str,
) -> None:
    app = Soniq(empty_database_url)

    @app.job(name="plan.job")
    async def plan_job(i: int) -> None: ...

    try:
        await app.setup()
        await app.enqueue_many("plan.job", [{"i": i} for i in range(20_000)])
        pool = await app.pool()
        await pool.execute("ANALYZE soniq_jobs")
        plan = await _generic_claim_plan(app)
        # The claimed rows are updated through their addresses, never by hashing a scan of the
        # whole table (11 of 19 ms per round trip at 20,000 rows when it did).
        assert '"Node Type": "Tid Scan"' in plan
        assert '"Node Type": "Seq Scan"' not in plan
    finally:
        await app.close()
