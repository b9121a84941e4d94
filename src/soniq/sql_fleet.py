"""The statements behind ``app.list_workers()`` and ``app.job_stats()`` (:mod:`soniq.fleet`)."""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# The fleet as people look at it (soniq_dashboard): workers, and the jobs of the last window.
# Both stay cheap on a table of millions: the workers table is small, and the window reads at
# most $2 ended jobs of each state, newest first, through the listing indexes keyed by
# created_at (soniq_jobs_done, soniq_jobs_failed). The window is on created_at, their key (an
# index on finished_at would cost every drained job one more entry): jobs enqueued in the
# window that have ended.

LIST_WORKERS = """
SELECT id, hostname, pid, queues, concurrency, started_at, heartbeat_at,
       heartbeat_at > now() - make_interval(secs => $1) AS alive
FROM soniq_workers ORDER BY hostname, pid, id
"""

# Run time (finished - started) and queue wait (started - due) are read only from jobs that
# ran once: a retried job's started_at is its first attempt's and its due time its last
# retry's, so neither difference would mean one attempt.
JOB_STATS = """
WITH done AS (
    SELECT queue, job_name, attempts, created_at,
           extract(epoch FROM finished_at - started_at)::float8 AS run_s,
           extract(epoch FROM started_at - scheduled_at)::float8 AS wait_s
    FROM soniq_jobs
    WHERE status = 'done' AND created_at > now() - make_interval(secs => $1)
    ORDER BY created_at DESC LIMIT $2
), dead AS (
    SELECT queue, job_name FROM soniq_jobs
    WHERE status = 'dead_letter' AND created_at > now() - make_interval(secs => $1)
    ORDER BY created_at DESC LIMIT $2
), together AS (
    SELECT queue, job_name, 1 AS done, 0 AS dead, attempts, run_s, wait_s FROM done
    UNION ALL
    SELECT queue, job_name, 0, 1, NULL, NULL, NULL FROM dead
)
SELECT queue, job_name, sum(done)::int AS done, sum(dead)::int AS dead_lettered,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY run_s) FILTER (WHERE attempts = 1)
           AS run_p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY run_s) FILTER (WHERE attempts = 1)
           AS run_p95_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY wait_s) FILTER (WHERE attempts = 1)
           AS wait_p50_s,
       (SELECT count(*) FROM done)::int AS sampled,
       extract(epoch FROM now() - (SELECT min(created_at) FROM done))::float8 AS sampled_s
FROM together GROUP BY queue, job_name ORDER BY queue, job_name
"""
