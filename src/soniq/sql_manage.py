"""The SQL of managing jobs (issue 17): listing, acting on many, awaited results, stats and
retention. Run by :class:`soniq.store_admin.AdminStore` only; the schema is in
:mod:`soniq.migrations` (migrations 4 and 7), and the worker's finish and lease recovery, which
keep the error history, in :mod:`soniq.sql` and :mod:`soniq.sql_liveness`.
"""

from __future__ import annotations

from .sql import JOB_COLUMNS, NOTIFY_CHANNEL, RESULTS_CHANNEL

# One worker of a fleet purges at a time: a transaction-level lock, released by the purge's
# own commit, so a worker that dies mid-purge holds nothing.
RETENTION_LOCK_KEY = 0x50_4E_49_53  # next to sql.MIGRATION_LOCK_KEY, distinct from it

# The states a job may be acted on from.
RETRYABLE = ("done", "dead_letter", "cancelled")
CANCELLABLE = ("queued",)
DELETABLE = ("queued", "done", "dead_letter", "cancelled")  # never one a worker is running


def list_jobs(
    statuses: tuple[str, ...],
    where: str,
    *,
    limit: str,
    offset: str = "0",
    queued_where: str | None = None,
) -> str:
    """Newest first: one ordered index scan per state, merged (a Merge Append that stops at
    the page's end), then the page's rows read by id. The scans read index entries only (see
    migrations 4 and 7), and a keyset page starts where the last ended, so every page costs
    the same to the end. A queue or job name rare among done or queued jobs is tested on the
    index's key while the scan walks back to a page's worth of matches (10-11 ms for a name in
    0.05 % of 1M jobs, bench/list_jobs.py); one that no done job has reads all of them.

    ``statuses`` are validated enum values written as literals: a partial index is used only
    where the planner can prove its predicate from the query, which a parameter never lets it.
    ``where`` is a conjunction of parameterised conditions (``TRUE`` for none);
    ``queued_where`` the same conditions for queued jobs, their queue and job name compared
    under the collation their listing index keys them with (JobFilter.where(byte_order=True)).
    """
    parts = [
        f"""(SELECT created_at AS k_created, id AS k_id FROM soniq_jobs
    WHERE status = '{status}' AND {queued_where if status == "queued" and queued_where else where}
    ORDER BY created_at DESC, id DESC LIMIT {limit} + {offset})"""
        for status in statuses
    ]
    union = "\nUNION ALL\n".join(parts)
    return f"""
SELECT {JOB_COLUMNS}
FROM (
    SELECT * FROM (
{union}
    ) AS merged ORDER BY k_created DESC, k_id DESC LIMIT {limit} OFFSET {offset}
) AS page JOIN soniq_jobs ON soniq_jobs.id = page.k_id
ORDER BY page.k_created DESC, page.k_id DESC
"""


def count_jobs(statuses: tuple[str, ...], where: str) -> str:
    listed = ", ".join(f"'{s}'" for s in statuses)
    return f"SELECT count(*) FROM soniq_jobs WHERE status IN ({listed}) AND {where}"


# Bulk actions go through the matching rows in id order, a bounded batch per statement
# ($1 the batch size, $2 the last id of the previous batch), skipping rows locked by a worker
# or another action; a job retried and finished meanwhile is never taken twice.
def _batch(statuses: tuple[str, ...], where: str) -> str:
    listed = ", ".join(f"'{s}'" for s in statuses)
    return f"""
picked AS (
    SELECT id FROM soniq_jobs
    WHERE status IN ({listed}) AND {where} AND ($2::uuid IS NULL OR id > $2::uuid)
    ORDER BY id LIMIT $1
    FOR UPDATE SKIP LOCKED
)"""


# A retried job starts over: fresh attempts, due now, the old result gone; its error history
# stays (it is history), and so does last_error until an attempt overwrites it.
def retry_jobs(statuses: tuple[str, ...], where: str) -> str:
    return f"""
WITH {_batch(statuses, where)},
changed AS (
    UPDATE soniq_jobs AS j SET status = 'queued', attempts = 0, scheduled_at = now(),
        started_at = NULL, finished_at = NULL, result = NULL, worker_id = NULL,
        suspect = false, revived_at = now()
    FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.queue
),
wake AS (
    SELECT pg_notify('{NOTIFY_CHANNEL}', string_agg(DISTINCT queue, ','))
    FROM changed HAVING count(*) > 0
)
SELECT (SELECT count(*) FROM changed) AS n,
       (SELECT id::text FROM picked ORDER BY id DESC LIMIT 1) AS last,
       (SELECT count(*) FROM wake) AS woke
"""


def cancel_jobs(statuses: tuple[str, ...], where: str) -> str:
    return f"""
WITH {_batch(statuses, where)},
changed AS (
    UPDATE soniq_jobs AS j SET status = 'cancelled', finished_at = now()
    FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.awaited
),
told AS (SELECT pg_notify('{RESULTS_CHANNEL}', id::text) FROM changed WHERE awaited)
SELECT (SELECT count(*) FROM changed) AS n,
       (SELECT id::text FROM picked ORDER BY id DESC LIMIT 1) AS last,
       (SELECT count(*) FROM told) AS told
"""


def delete_jobs(statuses: tuple[str, ...], where: str) -> str:
    return f"""
WITH {_batch(statuses, where)},
changed AS (
    DELETE FROM soniq_jobs AS j USING picked WHERE j.id = picked.id
    RETURNING j.id, j.awaited
),
told AS (SELECT pg_notify('{RESULTS_CHANNEL}', id::text) FROM changed WHERE awaited)
SELECT (SELECT count(*) FROM changed) AS n,
       (SELECT id::text FROM picked ORDER BY id DESC LIMIT 1) AS last,
       (SELECT count(*) FROM told) AS told
"""


# The stats the public Soniq returns, per queue. Counting finished rows reads them all (an
# index-only scan where the visibility map allows); a dashboard should not poll it every second
# on a huge table (soniq_prom's queue gauges read only live rows).
QUEUE_STATS = """
SELECT queue, count(*) AS total,
       count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'processing') AS processing,
       count(*) FILTER (WHERE status = 'done') AS done,
       count(*) FILTER (WHERE status = 'dead_letter') AS dead_letter,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled
FROM soniq_jobs GROUP BY queue ORDER BY queue
"""

# get_result(wait=...): mark the job as awaited (its finish then notifies RESULTS_CHANNEL) and
# read where it stands, in one statement; the waiter LISTENs before sending it, so a finish
# that commits after this sees the mark and one that committed before is what this reads.
AWAIT_JOB = """
UPDATE soniq_jobs SET awaited = true WHERE id = $1
RETURNING status::text, result::text, last_error, attempts, errors::text
"""

READ_OUTCOME = """
SELECT status::text, result::text, last_error, attempts, errors::text
FROM soniq_jobs WHERE id = $1
"""

# Retention per state, one bounded batch per state per statement, by one worker at a time
# (others get held = false and delete nothing). A finished row was created before it finished,
# so ``created_at < cutoff`` bounds the scan of the (status, created_at) index to rows that may
# have expired. $1-$3: done, cancelled, dead-letter retention in seconds (0 keeps them).
PURGE_EXPIRED = f"""
WITH lock AS MATERIALIZED (SELECT pg_try_advisory_xact_lock({RETENTION_LOCK_KEY}) AS held),
done AS (
    SELECT id FROM soniq_jobs
    WHERE status = 'done' AND $1 > 0 AND (SELECT held FROM lock)
      AND created_at < now() - make_interval(secs => $1)
      AND finished_at < now() - make_interval(secs => $1)
    LIMIT $4 FOR UPDATE SKIP LOCKED
),
cancelled AS (
    SELECT id FROM soniq_jobs
    WHERE status = 'cancelled' AND $2 > 0 AND (SELECT held FROM lock)
      AND created_at < now() - make_interval(secs => $2)
      AND finished_at < now() - make_interval(secs => $2)
    LIMIT $4 FOR UPDATE SKIP LOCKED
),
dead AS (
    SELECT id FROM soniq_jobs
    WHERE status = 'dead_letter' AND $3 > 0 AND (SELECT held FROM lock)
      AND finished_at < now() - make_interval(secs => $3)
    LIMIT $4 FOR UPDATE SKIP LOCKED
),
gone AS (
    DELETE FROM soniq_jobs AS j
    USING (SELECT id FROM done UNION ALL SELECT id FROM cancelled UNION ALL SELECT id FROM dead)
          AS d
    WHERE j.id = d.id
    RETURNING j.status
)
SELECT (SELECT held FROM lock) AS held,
       count(*) FILTER (WHERE status = 'done') AS done,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE status = 'dead_letter') AS dead_letter
FROM gone
"""
