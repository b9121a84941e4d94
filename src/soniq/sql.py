"""The core SQL that Soniq sends: enqueue, the worker's round trip, inspection, queue state.

Table and column names live here and in the ``sql_*`` modules beside it (one per concern).
Only the store modules (:mod:`soniq.store`, :mod:`soniq.worker_store` and the others
DEVELOPERS.md lists) run these statements; the rest of the code calls their methods.
"""

from __future__ import annotations

SCHEMA_VERSION = 7

# One advisory lock key for migrations, so two processes running ``soniq setup`` at once
# serialise instead of racing on CREATE statements.
MIGRATION_LOCK_KEY = 0x50_4E_49_51  # "SONIQ"-ish, arbitrary but stable

NOTIFY_CHANNEL = "soniq_jobs"
# A finished job someone awaits (get_result(wait=...)); the payload is its id.
RESULTS_CHANNEL = "soniq_results"

# Schedule changes (add, pause, resume, remove, a deploy's upsert); the payload is the name.
SCHEDULES_CHANNEL = "soniq_schedules"
# Job control (soniq.control): "cancel:<job id>" asks the worker running that job to stop it;
# "queues" says a queue was paused, resumed or limited, so workers read soniq_queues again.
CONTROL_CHANNEL = "soniq_control"

# With Soniq(schema=...), these names are qualified with the schema in every statement, and
# these NOTIFY channels get the schema's name appended (soniq.schema): list each table, type and
# function a migration creates, and each channel (tests/test_schema_option.py checks them). A
# function left out would be called by its bare name, found through the caller's search_path:
# not found at all, or another app's (public) function, claiming that app's jobs.
SCHEMA_NAMES = (
    "soniq_jobs",
    "soniq_workers",
    "soniq_schema_version",
    "soniq_job_status",
    "soniq_schedules",
    "soniq_schedule_fires",
    "soniq_queues",
    "soniq_claim_limited",
    # Created by migration 1, dropped by 2: listed so both name the same function.
    "soniq_notify_insert",
)
CHANNELS = (NOTIFY_CHANNEL, RESULTS_CHANNEL, SCHEDULES_CHANNEL, CONTROL_CHANNEL)


CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS soniq_schema_version (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""

CURRENT_VERSION = """
SELECT CASE WHEN to_regclass('soniq_schema_version') IS NULL THEN NULL
            ELSE (SELECT coalesce(max(version), 0) FROM soniq_schema_version) END
"""

# to_regclass keeps this statement valid before the table exists.
READ_VERSION = "SELECT coalesce(max(version), 0) FROM soniq_schema_version"

RECORD_VERSION = "INSERT INTO soniq_schema_version (version) VALUES ($1)"

LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock($1)"

# Soniq(schema=...): the schema (its name checked by soniq.schema.check_name), and bare names
# in the migrations resolved into it for the migration's transaction only.
CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {schema}"
SET_LOCAL_SEARCH_PATH = "SELECT set_config('search_path', $1, true)"

# ---------------------------------------------------------------------------------------------
# Enqueue. scheduled_at: an absolute time ($7) wins, else now() + delay seconds ($8), both
# evaluated on the database clock so workers and producers never disagree about "due".
#
# Each INSERT notifies the queues it touched, in the same statement (a one-row subquery in its
# FROM, so nothing is returned): pg_notify is transactional, so the notification goes out at
# commit and a rolled-back transactional enqueue wakes nobody; identical payloads within a
# transaction are folded into one.

INSERT_JOB = f"""
INSERT INTO soniq_jobs (id, job_name, queue, args, priority, max_attempts, scheduled_at,
                        trace_context)
SELECT $1, $2, $3, $4::jsonb, $5, $6, coalesce($7, now() + make_interval(secs => $8)),
       $9::jsonb
FROM (SELECT pg_notify('{NOTIFY_CHANNEL}', $3)) AS wake
"""

# The usual single enqueue: ready now, no trace context; the column defaults fill the rest.
INSERT_READY_JOB = f"""
INSERT INTO soniq_jobs (id, job_name, queue, args, priority, max_attempts)
SELECT $1, $2, $3, $4::jsonb, $5, $6
FROM (SELECT pg_notify('{NOTIFY_CHANNEL}', $3)) AS wake
"""

INSERT_JOBS = f"""
INSERT INTO soniq_jobs (id, job_name, queue, args, priority, max_attempts, scheduled_at,
                        trace_context)
SELECT j.id, j.job_name, j.queue, j.args::jsonb, j.priority, j.max_attempts,
       coalesce(j.at, now() + make_interval(secs => j.delay)), j.tc::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[],
            $7::timestamptz[], $8::float8[], $9::text[])
     AS j(id, job_name, queue, args, priority, max_attempts, at, delay, tc),
     (SELECT pg_notify('{NOTIFY_CHANNEL}', string_agg(DISTINCT q, ','))
      FROM unnest($3::text[]) AS q) AS wake
"""

# A schedule's fire (or trigger): the job records its schedule and fire time.
INSERT_SCHEDULED_JOB = f"""
INSERT INTO soniq_jobs (id, job_name, queue, args, priority, max_attempts, scheduled_at,
                        trace_context, schedule_name, fire_time)
SELECT $1, $2, $3, $4::jsonb, $5, $6, coalesce($7, now() + make_interval(secs => $8)),
       $9::jsonb, $10, $11
FROM (SELECT pg_notify('{NOTIFY_CHANNEL}', $3)) AS wake
"""

# enqueue_many's usual case: one job name, queue, priority and schedule for the whole batch,
# so only ids, arguments and trace contexts travel as arrays.
INSERT_UNIFORM_JOBS = f"""
INSERT INTO soniq_jobs (id, job_name, queue, args, priority, max_attempts, scheduled_at,
                        trace_context)
SELECT j.id, $4, $5, j.args::jsonb, $6, $7, coalesce($8, now() + make_interval(secs => $9)),
       j.tc::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS j(id, args, tc),
     (SELECT pg_notify('{NOTIFY_CHANNEL}', $5)) AS wake
"""

# ---------------------------------------------------------------------------------------------
# Worker: one round trip records what happened since the last one and claims the next batch.
#
# A claim takes up to $9 rows. The first $13 of them (the worker's free slots) start at once:
# their attempt is counted in the claim itself. The rest are claimed ahead (prefetch): they
# are the worker's, but their attempt is not counted and started_at stays NULL until the
# worker reports their start in a later round trip. So the row itself says whether its start
# is known, and lease recovery can tell a job that was running (counted) from one that was
# only waiting in a dead worker's buffer (put back uncounted).
#
# The record half carries, per job, its new status (NULL: it only started) and its absolute
# attempt count ($2-$8 and $12; plain successes alone in $14-$15), so resending a round trip
# whose answer was lost changes nothing. It is fenced on (status, worker_id): a worker that lost
# its lease cannot overwrite a row that another worker has since claimed.

_FINISH_TEMPLATE = """
fin AS (
    UPDATE soniq_jobs AS j SET
        -- A job asked to stop (CANCEL_JOB) never goes back to the queue.
        status       = CASE WHEN f.status = 'queued' AND j.cancel_requested_at IS NOT NULL
                            THEN 'cancelled'
                            ELSE coalesce(f.status::soniq_job_status, j.status) END,
        result       = f.result::jsonb,
        last_error   = coalesce(f.error, j.last_error),
        traceback    = coalesce(f.tb, j.traceback),
        scheduled_at = CASE WHEN f.status = 'queued'
                            THEN now() + make_interval(secs => f.delay)
                            ELSE j.scheduled_at END,
        attempts     = f.attempts,
        started_at   = coalesce(j.started_at, now()),
        finished_at  = CASE WHEN f.status IN ('done', 'dead_letter', 'cancelled')
                              OR (f.status = 'queued' AND j.cancel_requested_at IS NOT NULL)
                            THEN now() END,
        worker_id    = CASE WHEN f.status IS NULL THEN j.worker_id END,
        suspect      = f.status IS NULL AND j.suspect,
        trace_context = coalesce(f.tc::jsonb, j.trace_context),
        -- A failure appends to the job's error history (see errors_append); anything else
        -- leaves it alone, so a success costs one CASE.
        errors       = CASE WHEN f.error IS NULL THEN j.errors ELSE {errors_append} END,
        -- Only a job someone awaits tells of its end (get_result(wait=...)).
        awaited      = CASE WHEN j.awaited AND (f.status IN ('done', 'dead_letter', 'cancelled')
                                                 OR (f.status = 'queued'
                                                     AND j.cancel_requested_at IS NOT NULL))
                            THEN (SELECT false FROM pg_notify('{results}', j.id::text))
                            ELSE j.awaited END
    FROM (
        SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                             $7::float8[], $8::int[], $12::text[])
        UNION ALL
        -- Most records are successes without a result: ids and attempts as two comma-joined
        -- texts (asyncpg inspects every element of an array parameter; a text it sends as is).
        SELECT id, 'done', NULL, NULL, NULL, 0, attempts, NULL
        FROM unnest(string_to_array($14, ',')::uuid[], string_to_array($15, ',')::int[])
             AS d(id, attempts)
    ) AS f(id, status, result, error, tb, delay, attempts, tc)
    WHERE j.id = f.id AND j.status = 'processing' AND j.worker_id = $1
    RETURNING 1
)"""


def errors_append(attempt: str, worker: str, error: str, tb: str) -> str:
    """SQL appending one failed attempt to ``j.errors``: the last ERRORS_KEPT entries, each
    message and traceback capped (a traceback keeps its end, where the error is). Writing
    the same attempt of the same worker again (a round trip resent) adds nothing."""
    entry = f"""jsonb_build_object(
            'attempt', {attempt}, 'at', now(), 'worker_id', {worker},
            'error_type', split_part({error}, ': ', 1),
            'message', left(CASE WHEN strpos({error}, ': ') > 0
                                 THEN substr({error}, strpos({error}, ': ') + 2)
                                 ELSE {error} END, {ERROR_MESSAGE_CAP}),
            'traceback', right({tb}, {ERROR_TRACEBACK_CAP}))"""
    return f"""(
        SELECT CASE WHEN e.last ->> 'attempt' = ({attempt})::text
                         AND e.last ->> 'worker_id' IS NOT DISTINCT FROM ({worker})::text
                    THEN j.errors
                    WHEN jsonb_array_length(e.kept) >= {ERRORS_KEPT}
                    THEN (e.kept - 0) || jsonb_build_array({entry})
                    ELSE e.kept || jsonb_build_array({entry}) END
        FROM (SELECT coalesce(j.errors, '[]'::jsonb) AS kept, j.errors -> -1 AS last) AS e)"""


# Every attempt's error on the job, bounded: the newest ERRORS_KEPT attempts, each message and
# traceback cut to these many characters.
ERRORS_KEPT = 20
ERROR_MESSAGE_CAP = 2000
ERROR_TRACEBACK_CAP = 8000

_FINISH = _FINISH_TEMPLATE.format(
    errors_append=errors_append("f.attempts", "$1::text", "f.error", "f.tb"),
    results=RESULTS_CHANNEL,
)

# ``attempt`` is the number of the attempt the worker is about to run, counted or not yet.
_CLAIMED_COLUMNS = """
    j.id::text AS id, j.job_name, j.queue, j.args::text AS args, j.priority,
    j.attempts + (NOT picked.counted)::int AS attempt, j.max_attempts, j.created_at,
    j.scheduled_at, j.trace_context::text AS trace_context, j.revived_at IS NOT NULL AS revived,
    extract(epoch FROM now() - j.scheduled_at)::float8 AS queue_wait_s,
    picked.counted, j.suspect, picked.n, j.schedule_name, j.fire_time, j.snoozes
"""

# What the worker reads of each claimed row (n only orders them).
_CLAIMED_OUT = """
    claimed.id, claimed.job_name, claimed.queue, claimed.args, claimed.priority,
    claimed.attempt, claimed.max_attempts, claimed.created_at, claimed.scheduled_at,
    claimed.trace_context, claimed.revived, claimed.queue_wait_s, claimed.counted,
    claimed.suspect, claimed.schedule_name, claimed.fire_time, claimed.snoozes"""


def finish_and_claim(queue_filter: str, with_due: bool = False) -> str:
    """The worker's round trip. ``queue_filter`` is one of the QUEUE_FILTER_* fragments.

    ``with_due``: a claim that comes back short also says when the next delayed job or retry
    the worker could run comes due, so an idle worker needs no second round trip to know how
    long to sleep. Workers use it when their last claim was short (planning it costs about as
    much again, so busy workers, whose claims come back full, leave it out).
    """
    index_order = "priority, scheduled_at, seq"
    claim = f"""
WITH {_FINISH},
picked AS (
    SELECT tid, n, n <= $13 AS counted FROM (
        -- Numbered as the ordered scan delivers them (no second sort): which rows count as
        -- started first only decides start order within the batch, never correctness.
        SELECT tid, row_number() OVER () AS n FROM (
            SELECT ctid AS tid FROM soniq_jobs
            WHERE status = 'queued' AND scheduled_at <= now() {queue_filter}
              AND job_name = ANY($10::text[])
            ORDER BY {index_order}
            LIMIT $9
            FOR UPDATE SKIP LOCKED
        ) AS locked
    ) AS numbered
),
claimed AS (
    UPDATE soniq_jobs AS j SET
        status = 'processing',
        attempts = j.attempts + picked.counted::int,
        started_at = CASE WHEN picked.counted THEN now() END,
        worker_id = $1
    -- By the row's address: the row is locked, so it cannot move. The array form is what
    -- makes it a TID scan in every plan: a prepared statement's generic plan guesses a LIMIT
    -- $9 claim at a tenth of the table and would hash-join it to a scan of the whole table.
    FROM picked WHERE j.ctid = ANY(ARRAY(SELECT tid FROM picked)) AND j.ctid = picked.tid
    RETURNING {_CLAIMED_COLUMNS}
)"""
    if not with_due:
        return claim + f"\nSELECT {_CLAIMED_OUT}\nFROM claimed ORDER BY claimed.n\n"
    # With nothing claimed, one row of NULLs carries just the due time.
    return (
        claim
        + f""",
due AS (
    SELECT CASE WHEN (SELECT count(*) FROM claimed) < $9 THEN (
        SELECT extract(epoch FROM min(scheduled_at) - now())::float8 FROM soniq_jobs
        WHERE status = 'queued' AND scheduled_at > now() AND scheduled_at > created_at
          {queue_filter} AND job_name = ANY($10::text[])
    ) END AS next_due_s
)
SELECT {_CLAIMED_OUT}, due.next_due_s
FROM due LEFT JOIN claimed ON true ORDER BY claimed.n
"""
    )


# $11 is the queue list; it is bound (as NULL) even where unused so every variant takes the
# same arguments.
QUEUE_FILTER_ONE = "AND queue = ($11::text[])[1]"
QUEUE_FILTER_MANY = "AND queue = ANY($11::text[])"
QUEUE_FILTER_ALL = "AND ($11::text[] IS NULL OR TRUE)"

# Seconds until the next delayed job or retry this worker could run comes due (after a
# claim without ``with_due`` came back short).
NEXT_DUE = """
SELECT extract(epoch FROM min(scheduled_at) - now())::float8
FROM soniq_jobs
WHERE status = 'queued' AND scheduled_at > now() AND scheduled_at > created_at
  AND ($1::text[] IS NULL OR queue = ANY($1::text[])) AND job_name = ANY($2::text[])
"""

# ---------------------------------------------------------------------------------------------
# Inspection and operations.

_JOB_COLUMNS = """
id::text AS id, job_name, args::text AS args, status::text AS status, attempts, max_attempts,
queue, priority, scheduled_at, last_error, traceback, result::text AS result, created_at,
started_at, finished_at, worker_id, errors::text AS errors, trace_context::text AS trace_context
"""

# The shape get_job, list_jobs and the dead-letter listing return (see docs/managing-jobs.md).
JOB_COLUMNS = _JOB_COLUMNS

GET_JOB = f"SELECT {_JOB_COLUMNS} FROM soniq_jobs WHERE id = $1"

LIST_DEAD_LETTERS = f"""
SELECT {_JOB_COLUMNS} FROM soniq_jobs WHERE status = 'dead_letter'
ORDER BY finished_at DESC LIMIT $1
"""

# A job put back from the dead-letter queue starts over with fresh attempts.
RETRY_DEAD_LETTERS = """
UPDATE soniq_jobs SET status = 'queued', attempts = 0, scheduled_at = now(),
                      finished_at = NULL, revived_at = now(), worker_id = NULL
WHERE status = 'dead_letter' AND ($1::uuid[] IS NULL OR id = ANY($1::uuid[]))
RETURNING id::text
"""

# pg_notify for revived jobs: UPDATE does not fire the insert trigger.
NOTIFY = f"SELECT pg_notify('{NOTIFY_CHANNEL}', $1)"

QUEUE_STATUS = """
SELECT queue,
       count(*) FILTER (WHERE status = 'queued' AND scheduled_at <= now()) AS ready,
       count(*) FILTER (WHERE status = 'queued' AND scheduled_at > now()) AS scheduled,
       count(*) FILTER (WHERE status = 'processing') AS processing,
       count(*) FILTER (WHERE status = 'done') AS done,
       count(*) FILTER (WHERE status = 'dead_letter') AS dead_letter,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       extract(epoch FROM now() - min(scheduled_at)
               FILTER (WHERE status = 'queued' AND scheduled_at <= now()))::float8
           AS oldest_ready_age_s
FROM soniq_jobs GROUP BY queue ORDER BY queue
"""

LIVE_WORKERS = """
SELECT count(*) FROM soniq_workers WHERE heartbeat_at > now() - make_interval(secs => $1)
"""

# ---------------------------------------------------------------------------------------------
# Queue state for metrics (soniq_prom), scraped every few seconds forever: one statement that
# reads only live rows through the partial indexes (queued, processing, dead_letter) and never
# touches the done rows, however many millions retention keeps. $1 is the lease in seconds.
QUEUE_METRICS = """
WITH queued AS (
    SELECT queue,
           count(*) FILTER (WHERE scheduled_at <= now()) AS ready,
           count(*) FILTER (WHERE scheduled_at > now()) AS scheduled,
           min(scheduled_at) FILTER (WHERE scheduled_at <= now()) AS oldest_ready
    FROM soniq_jobs WHERE status = 'queued' GROUP BY queue
)
SELECT queue, 'ready' AS state, ready AS jobs,
       extract(epoch FROM now() - oldest_ready)::float8 AS oldest_ready_age_s
FROM queued
UNION ALL
SELECT queue, 'scheduled', scheduled, NULL FROM queued
UNION ALL
SELECT queue, 'processing', count(*), NULL FROM soniq_jobs
WHERE status = 'processing' GROUP BY queue
UNION ALL
SELECT queue, 'dead_letter', count(*), NULL FROM soniq_jobs
WHERE status = 'dead_letter' GROUP BY queue
UNION ALL
SELECT NULL, 'workers_live', count(*), NULL FROM soniq_workers
WHERE heartbeat_at > now() - make_interval(secs => $1)
UNION ALL
SELECT name, 'paused', paused::int, NULL FROM soniq_queues
WHERE paused OR concurrency IS NOT NULL OR rate IS NOT NULL
UNION ALL
SELECT name, 'concurrency_limit', concurrency, NULL FROM soniq_queues
WHERE concurrency IS NOT NULL
"""


TRY_ADVISORY_LOCK = "SELECT pg_try_advisory_lock($1)"

ADVISORY_UNLOCK = "SELECT pg_advisory_unlock($1)"

# ---------------------------------------------------------------------------------------------
# Tests only: soniq.testing.Clock makes time pass for Soniq's data by moving every time Soniq
# stored back by as much, so each comparison with the database's now() (due, lease ages,
# retention, trace parent age) sees the later time while the statements of the hot path stay
# as they are. Worker heartbeats are left alone: they are liveness, not data, and moving them
# would make live workers look dead. Each statement takes the seconds as $1; a feature that
# stores times of its own (a schedule's next run) appends its statement here.
TIME_SHIFTS: list[str] = [
    """
UPDATE soniq_jobs SET
    scheduled_at = scheduled_at - make_interval(secs => $1),
    created_at   = created_at - make_interval(secs => $1),
    started_at   = started_at - make_interval(secs => $1),
    finished_at  = finished_at - make_interval(secs => $1),
    revived_at   = revived_at - make_interval(secs => $1)
""",
]

# Tests only: empty every Soniq table but the schema version (the soniq_database fixture).
# Found by name, so a table a later migration adds is emptied too.
DATA_TABLES = """
SELECT quote_ident(tablename) FROM pg_tables
WHERE schemaname = current_schema() AND tablename LIKE 'soniq\\_%'
  AND tablename <> 'soniq_schema_version'
"""

# soniq.testing.Clock moves time forward by shifting stored times back by $1 seconds; these are
# the schedules' times. The fire keys are dropped rather than shifted (a shifted key could meet
# an older one mid-statement): next_run_at, moved under the schedule's row lock, already keeps a
# fire time from being tried twice, and the fires from here on get their keys again.
# Running workers are told (NOTIFY), so they sleep until the moved fire times.
SHIFT_SCHEDULE_TIMES = f"""
WITH forget AS (DELETE FROM soniq_schedule_fires)
UPDATE soniq_schedules SET next_run_at = next_run_at - make_interval(secs => $1),
                           last_run_at = last_run_at - make_interval(secs => $1)
FROM (SELECT pg_notify('{SCHEDULES_CHANNEL}', '*')) AS wake
"""

TIME_SHIFTS.append(SHIFT_SCHEDULE_TIMES)
# The testing clock (TIME_SHIFTS above) moves the times job control stores too: a unique key's
# ``within``, a cancel request's time, and a rate limit's token bucket.
TIME_SHIFTS.append(
    """
UPDATE soniq_jobs SET
    unique_until        = unique_until - make_interval(secs => $1),
    cancel_requested_at = cancel_requested_at - make_interval(secs => $1)
WHERE unique_until IS NOT NULL OR cancel_requested_at IS NOT NULL
"""
)
TIME_SHIFTS.append("UPDATE soniq_queues SET refilled_at = refilled_at - make_interval(secs => $1)")

# Behind PgBouncer (transaction mode), the fleet role's lock is taken in a transaction its
# holder keeps open (see Store.hold_advisory_lock).
TRY_ADVISORY_XACT_LOCK = "SELECT pg_try_advisory_xact_lock($1)"
