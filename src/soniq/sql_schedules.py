"""The statements of periodic jobs (:mod:`soniq.schedules`), run by
:class:`soniq.schedules.store.ScheduleStore` only."""

from __future__ import annotations

from .sql import NOTIFY_CHANNEL, SCHEDULES_CHANNEL

# ---------------------------------------------------------------------------------------------
# Schedules (soniq.schedules). Run by soniq.schedules.store.ScheduleStore only. Fire times are
# decided on the database clock, like every other "due" in Soniq.

_SCHEDULE_COLUMNS = """
s.name, s.job_name, s.cron, s.every_s, s.timezone, s.args::text AS args, s.queue, s.priority,
s.max_attempts, s.missed, s.overlap, s.jitter_s, s.source, s.paused, s.next_run_at,
s.last_run_at, s.last_job_id::text AS last_job_id, s.fired_total, s.skipped_total,
s.missed_total, s.created_at, s.updated_at
"""

DB_NOW = "SELECT now()"

# Whether a live worker knows the schedule's job ($1: the lease in seconds).
_ORPHANED = """
NOT EXISTS (SELECT 1 FROM soniq_workers AS w
            WHERE w.heartbeat_at > now() - make_interval(secs => $1)
              AND s.job_name = ANY(w.job_names)) AS orphaned
"""

LIST_SCHEDULES = f"""
SELECT {_SCHEDULE_COLUMNS}, {_ORPHANED}, now() AS db_now
FROM soniq_schedules AS s ORDER BY s.name
"""

GET_SCHEDULE = f"""
SELECT {_SCHEDULE_COLUMNS}, {_ORPHANED}, now() AS db_now
FROM soniq_schedules AS s WHERE s.name = $2
"""

# A worker's schedules: those whose job it knows ($1), with the database's now, so it can
# sleep until each next fire time without asking again.
WORKER_SCHEDULES = f"""
SELECT {_SCHEDULE_COLUMNS}, now() AS db_now
FROM soniq_schedules AS s WHERE s.job_name = ANY($1::text[])
"""

# The job names a worker knows, for the orphan check in LIST_SCHEDULES.
SET_WORKER_JOB_NAMES = """
UPDATE soniq_workers SET job_names = $2
WHERE id = $1 AND job_names IS DISTINCT FROM $2
RETURNING 1
"""

# A schedule declared in code (@app.periodic), written by each worker as it starts. A changed
# timetable takes the next fire time computed for it ($14); an unchanged one keeps its own, so
# fires missed while no worker ran are still seen as missed. A paused schedule stays paused.
UPSERT_SCHEDULE = """
INSERT INTO soniq_schedules AS s (name, job_name, cron, every_s, timezone, args, queue, priority,
                                  max_attempts, missed, overlap, jitter_s, source, next_run_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (name) DO UPDATE SET
    job_name = EXCLUDED.job_name, cron = EXCLUDED.cron, every_s = EXCLUDED.every_s,
    timezone = EXCLUDED.timezone, args = EXCLUDED.args, queue = EXCLUDED.queue,
    priority = EXCLUDED.priority, max_attempts = EXCLUDED.max_attempts,
    missed = EXCLUDED.missed, overlap = EXCLUDED.overlap, jitter_s = EXCLUDED.jitter_s,
    source = EXCLUDED.source,
    next_run_at = CASE
        WHEN s.paused THEN NULL
        WHEN $15 OR s.next_run_at IS NULL
             OR (s.cron, s.every_s, s.timezone)
                IS DISTINCT FROM (EXCLUDED.cron, EXCLUDED.every_s, EXCLUDED.timezone)
        THEN EXCLUDED.next_run_at
        ELSE s.next_run_at END,
    updated_at = now()
WHERE $15 OR (s.job_name, s.cron, s.every_s, s.timezone, s.args, s.queue, s.priority,
              s.max_attempts, s.missed, s.overlap, s.jitter_s, s.source)
    IS DISTINCT FROM (EXCLUDED.job_name, EXCLUDED.cron, EXCLUDED.every_s, EXCLUDED.timezone,
                      EXCLUDED.args, EXCLUDED.queue, EXCLUDED.priority, EXCLUDED.max_attempts,
                      EXCLUDED.missed, EXCLUDED.overlap, EXCLUDED.jitter_s, EXCLUDED.source)
RETURNING 1
"""

NOTIFY_SCHEDULES = f"SELECT pg_notify('{SCHEDULES_CHANNEL}', $1)"

# The fire: the schedule row locked (workers due at the same moment queue here, and the ones
# after the first find next_run_at already moved on), with the database's now and whether the
# schedule's previous job is still queued or running (for overlap=False).
LOCK_SCHEDULE = f"""
SELECT {_SCHEDULE_COLUMNS}, now() AS db_now,
       coalesce(j.status IN ('queued', 'processing'), false) AS busy
FROM soniq_schedules AS s LEFT JOIN soniq_jobs AS j ON j.id = s.last_job_id
WHERE s.name = $1
FOR UPDATE OF s
"""

# The exactly-once key: a second insert of the same (schedule, fire time) does nothing, and
# the caller writes no job.
INSERT_FIRE = """
INSERT INTO soniq_schedule_fires (schedule_name, fire_time, job_id, result, worker_id)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING
RETURNING 1
"""

# Fire rows are needed only while a worker could still try that fire time (never once
# next_run_at has passed it); a day of them is kept for inspection.
PURGE_FIRES = """
DELETE FROM soniq_schedule_fires
WHERE schedule_name = $1 AND fire_time < $2::timestamptz - interval '1 day'
"""

ADVANCE_SCHEDULE = """
UPDATE soniq_schedules SET
    next_run_at = $2,
    last_run_at = coalesce($3, last_run_at),
    last_job_id = coalesce($4::uuid, last_job_id),
    fired_total = fired_total + $5,
    skipped_total = skipped_total + $6,
    missed_total = missed_total + $7
WHERE name = $1
"""

PAUSE_SCHEDULE = """
UPDATE soniq_schedules SET paused = true, next_run_at = NULL, updated_at = now()
WHERE name = $1 RETURNING 1
"""

# Resume: fires from the next fire time after now ($2, computed by the caller from the row
# locked with LOCK_SCHEDULE); the ones that passed while paused are not fired.
RESUME_SCHEDULE = """
UPDATE soniq_schedules SET paused = false, next_run_at = $2, updated_at = now()
WHERE name = $1 RETURNING 1
"""

REMOVE_SCHEDULE = "DELETE FROM soniq_schedules WHERE name = $1 RETURNING 1"

SET_LAST_JOB = "UPDATE soniq_schedules SET last_job_id = $2::uuid WHERE name = $1"

# `soniq schedules trigger` without the app's code: the job is written from the row alone.
TRIGGER_FROM_ROW = f"""
WITH job AS (
    INSERT INTO soniq_jobs (id, job_name, queue, args, priority, max_attempts, schedule_name,
                            fire_time)
    SELECT $2, s.job_name, s.queue, s.args, s.priority, s.max_attempts, s.name, now()
    FROM soniq_schedules AS s WHERE s.name = $1
    RETURNING id, queue
), mark AS (
    UPDATE soniq_schedules AS s SET last_job_id = job.id FROM job WHERE s.name = $1
)
SELECT job.id::text, pg_notify('{NOTIFY_CHANNEL}', job.queue) FROM job
"""

# For Prometheus: read by the one process of a fleet that reports queue state.
SCHEDULE_METRICS = """
SELECT s.name, s.fired_total, s.skipped_total, s.missed_total,
       extract(epoch FROM s.last_run_at)::float8 AS last_run_at,
       extract(epoch FROM s.next_run_at)::float8 AS next_run_at
FROM soniq_schedules AS s ORDER BY s.name
"""
