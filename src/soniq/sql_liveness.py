"""The worker's liveness statements: registration, heartbeat, lease recovery and the
shutdown refund (run by :mod:`soniq.worker_store`, driven by :mod:`soniq.liveness`)."""

from __future__ import annotations

from .sql import RESULTS_CHANNEL, errors_append

REGISTER_WORKER = """
INSERT INTO soniq_workers (id, hostname, pid, queues, concurrency)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
"""

HEARTBEAT = "UPDATE soniq_workers SET heartbeat_at = now() WHERE id = $1 RETURNING 1"

DEREGISTER_WORKER = "DELETE FROM soniq_workers WHERE id = $1"

# Jobs whose worker stopped heartbeating go back to the queue. scheduled_at is left alone, so a
# recovered job keeps its place in line instead of waiting behind everything enqueued since.
# Three kinds of row, by what the lost worker had written:
# - started_at set: the attempt was running and is counted. When it was the last one the job goes
#   to the dead-letter queue, since a job that kills its worker every time must not loop forever.
# - started_at NULL: claimed ahead (prefetch); it may have started and even killed the worker
#   before its start was written. Its attempt is counted as used, so every run after a kill has
#   a higher attempt number, except when that would use up the job's attempts: a job's last
#   attempt never starts before its start is written (see Worker._fill_slots), so such a row
#   surely did not start and goes back uncounted. It is marked suspect either way: the next
#   worker writes its start before running it.
# - finished_at set while processing: the worker shut down with this attempt still running in a
#   thread and refunded it in advance (REFUND_HELD); it goes back as refunded.
RECOVER_LOST_JOBS = f"""
WITH lost AS (
    SELECT j.id,
           j.started_at IS NULL AS unreported,
           j.started_at IS NULL AND j.attempts + 1 < j.max_attempts AS charged,
           j.started_at IS NOT NULL AND j.finished_at IS NOT NULL AS refunded,
           j.started_at IS NOT NULL AND j.finished_at IS NULL
               AND j.attempts >= j.max_attempts AS exhausted
    FROM soniq_jobs AS j
    WHERE j.status = 'processing'
      AND NOT EXISTS (
          SELECT 1 FROM soniq_workers AS w
          WHERE w.id = j.worker_id AND w.heartbeat_at > now() - make_interval(secs => $1))
    FOR UPDATE OF j SKIP LOCKED
),
told AS (
    SELECT lost.*, j.worker_id AS lost_worker,
           j.attempts + (lost.unreported OR lost.refunded)::int AS attempt, CASE
        WHEN lost.charged
        THEN format('WorkerLost: worker %s stopped heartbeating holding attempt %s, claimed '
                    'ahead and perhaps started; counted', coalesce(j.worker_id, '?'),
                    j.attempts + 1)
        WHEN lost.unreported
        THEN format('WorkerLost: worker %s stopped heartbeating before attempt %s, the last, '
                    'started; not counted', coalesce(j.worker_id, '?'), j.attempts + 1)
        WHEN lost.refunded
        THEN format('WorkerLost: worker %s exited while attempt %s still ran in a thread; not '
                    'counted', coalesce(j.worker_id, '?'), j.attempts + 1)
        ELSE format('WorkerLost: worker %s stopped heartbeating during attempt %s'
                    || CASE WHEN lost.exhausted
                            THEN '; attempts exhausted (the job may be killing its worker)'
                            ELSE '' END,
                    coalesce(j.worker_id, '?'), j.attempts) END AS error
    FROM lost JOIN soniq_jobs AS j ON j.id = lost.id
)
UPDATE soniq_jobs AS j SET
    status      = (CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                        WHEN told.exhausted THEN 'dead_letter'
                        ELSE 'queued' END)::soniq_job_status,
    attempts    = j.attempts + told.charged::int,
    last_error  = told.error,
    -- The lost attempt joins the job's error history, counted or not (the message says).
    errors      = {errors_append("told.attempt", "told.lost_worker", "told.error", "NULL::text")},
    awaited     = CASE WHEN j.awaited AND told.exhausted
                       THEN (SELECT false FROM pg_notify('{RESULTS_CHANNEL}', j.id::text))
                       ELSE j.awaited END,
    finished_at = CASE WHEN told.exhausted OR j.cancel_requested_at IS NOT NULL THEN now() END,
    worker_id   = NULL,
    suspect     = j.suspect OR told.unreported
FROM told WHERE j.id = told.id
RETURNING j.id, j.job_name, j.status
"""

DELETE_DEAD_WORKERS = """
DELETE FROM soniq_workers WHERE heartbeat_at < now() - make_interval(secs => $1)
"""

# After an outage the worker may have lost a claim response in flight; anything it holds but
# is not running goes back without using up an attempt (only a recorded start counted one).
RELEASE_UNTRACKED = """
UPDATE soniq_jobs SET status = (CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                                      ELSE 'queued' END)::soniq_job_status,
                      attempts = attempts - (started_at IS NOT NULL AND finished_at IS NULL)::int,
                      worker_id = NULL, started_at = NULL,
                      finished_at = CASE WHEN cancel_requested_at IS NOT NULL THEN now() END
WHERE worker_id = $1 AND status = 'processing' AND id <> ALL($2::uuid[])
"""

# Shutdown: jobs whose attempt cannot be interrupted (a thread) stay held by the exiting worker
# with the attempt refunded in advance; lease recovery then returns them uncounted. finished_at,
# otherwise NULL while a job is processing, marks the refund as made, so that recovery knows it
# and a retried flush cannot refund twice.
REFUND_HELD = """
UPDATE soniq_jobs SET attempts = attempts - 1, finished_at = now()
WHERE worker_id = $1 AND status = 'processing' AND id = ANY($2::uuid[])
  AND started_at IS NOT NULL AND finished_at IS NULL
"""

# Names this worker does not know among the jobs next in line, for its warning. Only the head of
# the queue is read, in claim order, so a beat costs the same on a million-row backlog: jobs
# nobody here claims stay at the head and show up there soon enough.
UNKNOWN_READY_NAMES = """
SELECT DISTINCT job_name FROM (
    SELECT job_name FROM soniq_jobs
    WHERE status = 'queued' AND scheduled_at <= now()
      AND ($1::text[] IS NULL OR queue = ANY($1::text[]))
    ORDER BY priority, scheduled_at, seq
    LIMIT 1000
) AS head
WHERE job_name <> ALL($2::text[])
LIMIT 20
"""
