"""The statements of job control: unique jobs, cancel, snooze, queue controls and the limited
claim (:mod:`soniq.unique`, :mod:`soniq.control`), run by the control store and the worker's."""

from __future__ import annotations

from .sql import CONTROL_CHANNEL, NOTIFY_CHANNEL, RESULTS_CHANNEL

# Job control (soniq.unique, soniq.control). Nothing here runs on the plain enqueue or claim
# path: unique jobs take these statements instead of INSERT_JOB*, and only workers that know
# of a paused or limited queue claim with the controlled variants.

# Unique jobs, all in one unnest form (single enqueues too: unique jobs are not the fast path).
# A conflict with a holder leaves the row out of RETURNING; the store then reads the holders
# (UNIQUE_HOLDERS), clears the stale ones (UNIQUE_CLEAR_STALE) and tries again. The statement
# waits for a holder inserted by a transaction still open, so concurrent producers and
# transactional enqueues (and their rollbacks) are decided by the index.
INSERT_UNIQUE_JOBS = f"""
INSERT INTO soniq_jobs (id, job_name, queue, args, priority, max_attempts, scheduled_at,
                        trace_context, unique_key, unique_states, unique_until)
SELECT j.id, j.job_name, j.queue, j.args::jsonb, j.priority, j.max_attempts,
       coalesce(j.at, now() + make_interval(secs => j.delay)), j.tc::jsonb, j.ukey,
       j.states::soniq_job_status[], now() + make_interval(secs => j.within)
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[],
            $7::timestamptz[], $8::float8[], $9::text[], $10::text[], $11::text[],
            $12::float8[])
     AS j(id, job_name, queue, args, priority, max_attempts, at, delay, tc, ukey, states,
          within),
     (SELECT pg_notify('{NOTIFY_CHANNEL}', string_agg(DISTINCT q, ','))
      FROM unnest($3::text[]) AS q) AS wake
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
RETURNING id::text
"""

# A holder is stale once its status is not one its key covers, or its ``within`` has passed.
_UNIQUE_STALE = "(status <> ALL(unique_states) OR unique_until <= now()) IS TRUE"

UNIQUE_HOLDERS = f"""
SELECT unique_key, id::text AS id, status::text AS status, {_UNIQUE_STALE} AS stale
FROM soniq_jobs WHERE unique_key = ANY($1::text[])
"""

# Re-checked under the row lock: a holder that became live again meanwhile keeps its key.
UNIQUE_CLEAR_STALE = f"""
UPDATE soniq_jobs SET unique_key = NULL
WHERE unique_key = ANY($1::text[]) AND {_UNIQUE_STALE}
"""

# on_conflict="replace": the queued holder takes the new arguments and due time (debounce).
UNIQUE_REPLACE = f"""
UPDATE soniq_jobs AS s SET
    args = r.args::jsonb,
    scheduled_at = coalesce(r.at, now() + make_interval(secs => r.delay)),
    unique_until = now() + make_interval(secs => r.within)
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[], $5::float8[])
     AS r(ukey, args, at, delay, within),
     (SELECT pg_notify('{NOTIFY_CHANNEL}', $6)) AS wake
WHERE s.unique_key = r.ukey AND s.status = 'queued'
  AND NOT (s.status <> ALL(s.unique_states) OR s.unique_until <= now()) IS TRUE
RETURNING s.unique_key, s.id::text
"""

# Cancel: a queued job at once; a running one is marked and its worker told (NOTIFY on the
# control channel; the mark also reaches a worker that missed it, at its next beat, and keeps
# the job from ever running again: finish, lease recovery and shutdown turn it to cancelled).
CANCEL_JOB = f"""
WITH target AS (SELECT id, status FROM soniq_jobs WHERE id = $1 FOR UPDATE),
queued AS (
    UPDATE soniq_jobs AS j SET status = 'cancelled', finished_at = now()
    FROM target WHERE j.id = target.id AND target.status = 'queued'
    RETURNING j.id, j.awaited
),
told AS (SELECT pg_notify('{RESULTS_CHANNEL}', id::text) FROM queued WHERE awaited),
running AS (
    UPDATE soniq_jobs AS j SET cancel_requested_at = coalesce(j.cancel_requested_at, now())
    FROM target WHERE j.id = target.id AND target.status = 'processing'
    RETURNING pg_notify('{CONTROL_CHANNEL}', 'cancel:' || j.id::text)
)
SELECT target.status::text AS status,
       (SELECT count(*) FROM queued) + (SELECT count(*) FROM running) AS changed,
       (SELECT count(*) FROM told) AS told
FROM target
"""

# A worker's running jobs that were asked to stop (for a worker whose LISTEN missed it).
CANCEL_REQUESTED = """
SELECT id::text FROM soniq_jobs
WHERE worker_id = $1 AND status = 'processing' AND cancel_requested_at IS NOT NULL
"""

# Snooze: the running attempt is refunded and the job goes back, due after $3 seconds, with
# one more snooze counted; past max_snoozes ($4) it is dead-lettered instead. Fenced as the
# finish is. $5 is the attempt number; its count becomes $5 - 1 (the attempt did not count).
SNOOZE_JOB = f"""
UPDATE soniq_jobs SET
    status = (CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                   WHEN snoozes + 1 > $4 THEN 'dead_letter'
                   ELSE 'queued' END)::soniq_job_status,
    snoozes = snoozes + 1,
    attempts = CASE WHEN snoozes + 1 > $4 THEN $5 ELSE $5 - 1 END,
    scheduled_at = CASE WHEN snoozes + 1 > $4 THEN scheduled_at
                        ELSE now() + make_interval(secs => $3) END,
    started_at = coalesce(started_at, now()),
    finished_at = CASE WHEN cancel_requested_at IS NOT NULL OR snoozes + 1 > $4 THEN now() END,
    last_error = CASE WHEN cancel_requested_at IS NULL AND snoozes + 1 > $4
                      THEN format('Snoozed %s times, more than max_snoozes (%s)%s',
                                  snoozes + 1, $4, coalesce(': ' || $6, ''))
                      ELSE last_error END,
    worker_id = NULL,
    suspect = false,
    -- A job someone awaits (get_result(wait=...)) tells of its end if this was it.
    awaited = CASE WHEN awaited AND (cancel_requested_at IS NOT NULL OR snoozes + 1 > $4)
                   THEN (SELECT false FROM pg_notify('{RESULTS_CHANNEL}', id::text))
                   ELSE awaited END
WHERE id = $1 AND status = 'processing' AND worker_id = $2
RETURNING status::text, snoozes, pg_notify('{NOTIFY_CHANNEL}', queue)
"""

# -- queues: pause, resume, limits ------------------------------------------------------------

# Queues with a control in force; what workers keep in view and refresh on NOTIFY.
QUEUE_CONTROLS = """
SELECT name, paused, concurrency, rate FROM soniq_queues
WHERE paused OR concurrency IS NOT NULL OR rate IS NOT NULL ORDER BY name
"""

LIST_QUEUES = """
SELECT name, paused, concurrency, rate, updated_at FROM soniq_queues ORDER BY name
"""

# $2 paused, $3 concurrency, $4 rate; $5/$6/$7 say which of them to set (the others are kept).
# Tells every worker (control channel) and wakes the queue (a resumed queue's jobs run now).
SET_QUEUE_CONTROL = f"""
WITH up AS (
    INSERT INTO soniq_queues AS q (name, paused, concurrency, rate)
    VALUES ($1, coalesce($2, false), $3, $4)
    ON CONFLICT (name) DO UPDATE SET
        paused = CASE WHEN $5 THEN excluded.paused ELSE q.paused END,
        concurrency = CASE WHEN $6 THEN excluded.concurrency ELSE q.concurrency END,
        rate = CASE WHEN $7 THEN excluded.rate ELSE q.rate END,
        updated_at = now()
    RETURNING q.name, q.paused, q.concurrency, q.rate, q.updated_at
)
SELECT up.*, pg_notify('{CONTROL_CHANNEL}', 'queues'), pg_notify('{NOTIFY_CHANNEL}', up.name)
FROM up
"""

# Claim from one limited queue (see soniq_claim_limited in the migration to version 6): worker,
# queue, runnable job names, most to claim, the worker's finished jobs not yet written.
CLAIM_LIMITED = "SELECT * FROM soniq_claim_limited($1, $2, $3, $4, $5)"


# The controlled claim: as finish_and_claim, leaving out every paused or limited queue (read in
# the statement itself, once: an InitPlan), so a stale view in the worker cannot claim them.
QUEUE_FILTER_UNCONTROLLED = """
              AND queue <> ALL(ARRAY(SELECT name FROM soniq_queues
                                     WHERE paused OR concurrency IS NOT NULL
                                        OR rate IS NOT NULL))"""
