"""Issue 17, points 1, 7 and 8: list and search jobs, keyset paging, bad input."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from soniq import ConfigurationError, Soniq

GET_JOB_KEYS = {
    "id",
    "trace_context",
    "job_name",
    "args",
    "status",
    "attempts",
    "max_attempts",
    "queue",
    "priority",
    "scheduled_at",
    "last_error",
    "traceback",
    "result",
    "created_at",
    "started_at",
    "finished_at",
    "worker_id",
    "errors",
}


async def _load(db: asyncpg.Connection, n: int, **columns: str) -> None:
    """n rows written server-side, created one second apart (newest last), with a state,
    queue and name given as SQL expressions of g (1..n)."""
    status = columns.get("status", "'queued'")
    queue = columns.get("queue", "'default'")
    name = columns.get("name", "'t.job'")
    await db.execute(
        f"""INSERT INTO soniq_jobs (id, job_name, queue, args, status, max_attempts, created_at,
                                    finished_at)
            SELECT gen_random_uuid(), {name}, {queue},
                   jsonb_build_object('i', g, 'even', g % 2 = 0),
                   ({status})::soniq_job_status, 3,
                   timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => g),
                   CASE WHEN ({status}) IN ('done', 'dead_letter', 'cancelled')
                        THEN timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => g) END
            FROM generate_series(1, $1) AS g""",
        n,
    )


async def test_list_jobs_newest_first_shaped_like_get_job(app: Soniq) -> None:
    @app.job(name="t.add")
    async def add(a: int, b: int) -> int:
        return a + b

    ids = [await app.enqueue("t.add", a=i, b=1) for i in range(3)]
    jobs = await app.list_jobs()
    assert [j["id"] for j in jobs] == ids[::-1]
    assert set(jobs[0]) == GET_JOB_KEYS
    one = await app.get_job(ids[0])
    assert one is not None and set(one) == GET_JOB_KEYS
    assert jobs[-1] == one
    assert jobs[0]["args"] == {"a": 2, "b": 1} and jobs[0]["errors"] == []


async def test_each_filter_alone_and_combined(app: Soniq, db: asyncpg.Connection) -> None:
    await _load(
        db,
        300,
        status="(ARRAY['queued','done','dead_letter','cancelled','processing'])[g % 5 + 1]",
        queue="CASE WHEN g % 3 = 0 THEN 'mail' ELSE 'default' END",
        name="CASE WHEN g % 4 = 0 THEN 't.rare' ELSE 't.job' END",
    )
    rows = await db.fetch("SELECT id::text, status::text, queue, job_name, args FROM soniq_jobs")
    by_id = {r["id"]: r for r in rows}

    async def ids(**filters: object) -> set[str]:
        return {j["id"] for j in await app.list_jobs(limit=1000, **filters)}  # type: ignore[arg-type]

    assert await ids() == set(by_id)
    assert await ids(status="dead_letter") == {
        i for i, r in by_id.items() if r["status"] == "dead_letter"
    }
    assert await ids(status=["queued", "processing"]) == {
        i for i, r in by_id.items() if r["status"] in ("queued", "processing")
    }
    assert await ids(queue="mail") == {i for i, r in by_id.items() if r["queue"] == "mail"}
    assert await ids(job_name="t.rare") == {
        i for i, r in by_id.items() if r["job_name"] == "t.rare"
    }
    assert await ids(args_contains={"i": 7}) == {
        i for i, r in by_id.items() if '"i": 7,' in r["args"] or r["args"].endswith('"i": 7}')
    }
    assert len(await ids(args_contains={"even": True})) == 150
    after = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=250)
    before = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=260)
    assert len(await ids(created_after=after)) == 51  # 250..300, the bound included
    assert len(await ids(created_before=before)) == 259  # 1..259
    assert len(await ids(created_after=after, created_before=before)) == 10
    combined = await ids(queue="mail", status="done", job_name="t.rare")
    assert combined == {
        i
        for i, r in by_id.items()
        if (r["queue"], r["status"], r["job_name"]) == ("mail", "done", "t.rare")
    }
    assert combined  # the data has some


async def test_limit_offset_and_order_across_states(app: Soniq, db: asyncpg.Connection) -> None:
    await _load(db, 50, status="(ARRAY['queued','done','dead_letter'])[g % 3 + 1]")
    every = await app.list_jobs(limit=1000)
    created = [j["created_at"] for j in every]
    assert created == sorted(created, reverse=True) and len(every) == 50
    page = await app.list_jobs(limit=7, offset=10)
    assert [j["id"] for j in page] == [j["id"] for j in every[10:17]]


async def test_iter_jobs_pages_by_keyset_through_every_match(
    app: Soniq, db: asyncpg.Connection
) -> None:
    await _load(db, 1234, status="CASE WHEN g % 2 = 0 THEN 'done' ELSE 'dead_letter' END")
    # Two jobs created in the same instant: the id breaks the tie, none is lost or repeated.
    await db.execute(
        """UPDATE soniq_jobs SET created_at = timestamptz '2026-01-01 00:05:00+00'
           WHERE created_at BETWEEN timestamptz '2026-01-01 00:05:00+00'
                                AND timestamptz '2026-01-01 00:05:10+00'"""
    )
    seen = [j["id"] async for j in app.iter_jobs(page_size=100)]
    assert len(seen) == len(set(seen)) == 1234
    keys = [(j["created_at"], j["id"]) async for j in app.iter_jobs(page_size=7)]
    assert keys == sorted(keys, reverse=True)
    dead = [j async for j in app.iter_jobs(status="dead_letter", page_size=50)]
    assert len(dead) == 617 and {j["status"] for j in dead} == {"dead_letter"}


async def test_listing_uses_an_ordered_index_per_state(app: Soniq, db: asyncpg.Connection) -> None:
    """Point 7's mechanism: every filter's first page is a merge of ordered index scans that
    stops at the limit, never a sort of every match (bench/list_jobs.py times it at 1M), and a
    queue or job name filter is tested inside the index of done jobs, on its key, not on the
    entries the scan returns (schema 7: what makes a rare value cheap)."""
    from soniq.job_filters import make_filter
    from soniq.store_admin import list_query

    await _load(
        db,
        20000,
        status="(ARRAY['done','done','done','dead_letter','cancelled'])[g % 5 + 1]",
        queue="'q' || (g % 7)",
        name="'n' || (g % 11)",
    )
    await _load(db, 2000)
    await db.execute("ANALYZE soniq_jobs")
    for filters in ({}, {"queue": "q3"}, {"job_name": "n5"}, {"status": "done"}):
        f = make_filter(**filters)  # type: ignore[arg-type]
        query, args = list_query(f)
        plan = "\n".join(r[0] for r in await db.fetch("EXPLAIN " + query, 100, 0, *args))
        assert "Merge Append" in plan or f.statuses == ("done",), plan
        # Only the few running jobs are sorted; every other state comes in index order.
        assert plan.count("Sort  (") <= 1 and "Incremental Sort" not in plan, plan
        # Done and queued jobs: index entries only, a queue or name an index condition there.
        scanned = ["soniq_jobs_done"] + (["soniq_jobs_queued_created"] if filters else [])
        for index in scanned if "status" not in filters else ["soniq_jobs_done"]:
            node = plan.split(f"Index Only Scan Backward using {index} ")[1].split("->")[0]
            if filters.keys() & {"queue", "job_name"}:
                column = next(iter(filters))
                assert f"Index Cond: ({column} = " in node, plan
            assert "Filter" not in node, plan
        expected = {
            "": ("soniq_jobs_queued_created", "soniq_jobs_failed"),
            "q3": ("soniq_jobs_failed_queue",),
            "n5": ("soniq_jobs_failed_name", "soniq_jobs_queued_created"),
            "done": (),
        }[str(next(iter(filters.values()), ""))]
        for index in expected:
            assert f"using {index} " in plan, plan


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"status": "failed"}, r"unknown job status 'failed'; use one or several of queued"),
        ({"status": ["done", "nope"]}, r"unknown job status 'nope'"),
        ({"status": []}, r"status is empty"),
        ({"limit": 0}, r"limit must be a whole number of at least 1"),
        ({"limit": True}, r"limit must be"),
        ({"offset": -1}, r"offset must be"),
        ({"created_after": datetime(2026, 1, 1)}, r"created_after=.* has no timezone"),
        ({"created_before": "2026-01-01"}, r"created_before must be a timezone-aware datetime"),
        ({"args_contains": [1, 2]}, r"args_contains must be a dict"),
        ({"args_contains": {"x": object()}}, r"args_contains must hold JSON values"),
        ({"queue": ""}, r"queue must be a non-empty string"),
        (
            {
                "created_after": datetime(2026, 2, 1, tzinfo=timezone.utc),
                "created_before": datetime(2026, 1, 1, tzinfo=timezone.utc),
            },
            r"is not before created_before",
        ),
    ],
)
async def test_bad_filters_fail_before_the_database(
    app: Soniq, filters: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        await app.list_jobs(**filters)  # type: ignore[arg-type]
    page_filters = {k: v for k, v in filters.items() if k not in ("limit", "offset")}
    if page_filters:
        with pytest.raises(ConfigurationError, match=message):
            app.iter_jobs(**page_filters)  # type: ignore[arg-type]  # at the call, not later


async def test_malformed_ids_are_named(app: Soniq) -> None:
    for call in (app.get_result, app.retry_job, app.delete_job, app.cancel_job, app.get_job):
        with pytest.raises(ValueError, match=r"'42' is not a job id; ids are UUIDs"):
            await call("42")


async def test_a_keyset_page_starts_in_the_index(app: Soniq, db: asyncpg.Connection) -> None:
    """Point 7: every page of iter_jobs costs the same to the end, because each branch's index
    scan starts at the previous page's last (created_at, id), as an index condition, rather
    than reading and dropping what came before."""
    from soniq.job_filters import make_filter
    from soniq.store_admin import list_query

    await _load(db, 5000, status="(ARRAY['queued','done','dead_letter','cancelled'])[g % 4 + 1]")
    await db.execute("ANALYZE soniq_jobs")
    for filters in ({}, {"status": ["done", "cancelled"]}):
        f = make_filter(**filters)  # type: ignore[arg-type]
        last = await db.fetchrow(
            "SELECT created_at, id FROM soniq_jobs ORDER BY created_at LIMIT 1 OFFSET 2500"
        )
        query, args = list_query(f, (last[0], str(last[1])))
        plan = "\n".join(r[0] for r in await db.fetch("EXPLAIN " + query, 100, 0, *args))
        keyset = [
            line
            for line in plan.splitlines()
            if "Index Cond" in line and "ROW(created_at, id) <" in line
        ]
        # Every state but the few running jobs (read whole and sorted) starts at the key.
        assert len(keyset) == len([s for s in f.statuses if s != "processing"]), plan
