"""All SQL that Soniq sends, in one place.

Table and column names live here only. Only :mod:`soniq.store` (pool, schema, enqueue,
inspection) and :mod:`soniq.worker_store` (the worker's round trip and liveness) run these
statements; the rest of the code calls their methods.
"""

from __future__ import annotations

SCHEMA_VERSION = 6

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
# these NOTIFY channels get the schema's name appended (soniq.schema): list each table and type
# a migration creates, and each channel (tests/test_schema_option.py checks the tables).
SCHEMA_NAMES = (
    "soniq_jobs",
    "soniq_workers",
    "soniq_schema_version",
    "soniq_job_status",
    "soniq_schedules",
    "soniq_schedule_fires",
    "soniq_queues",
)
CHANNELS = (NOTIFY_CHANNEL, RESULTS_CHANNEL, SCHEDULES_CHANNEL, CONTROL_CHANNEL)

# Each entry migrates from version ``index`` to ``index + 1``.
MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE IF NOT EXISTS soniq_jobs (
        id              uuid PRIMARY KEY,
        seq             bigint GENERATED ALWAYS AS IDENTITY,
        job_name        text NOT NULL,
        queue           text NOT NULL,
        args            jsonb NOT NULL,
        status          text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued','processing','done','dead_letter','cancelled')),
        priority        integer NOT NULL DEFAULT 0,
        attempts        integer NOT NULL DEFAULT 0,
        max_attempts    integer NOT NULL CHECK (max_attempts >= 1),
        scheduled_at    timestamptz NOT NULL DEFAULT now(),
        created_at      timestamptz NOT NULL DEFAULT now(),
        started_at      timestamptz,
        finished_at     timestamptz,
        worker_id       text,
        last_error      text,
        traceback       text,
        result          jsonb,
        trace_context   jsonb,
        revived_at      timestamptz
    );

    -- Claiming one queue: an ordered scan that stops after LIMIT rows, however many are queued.
    CREATE INDEX IF NOT EXISTS soniq_jobs_claim_queue
        ON soniq_jobs (queue, priority, scheduled_at, seq) WHERE status = 'queued';
    -- Claiming across queues, and the same order for "all queues" workers.
    CREATE INDEX IF NOT EXISTS soniq_jobs_claim_any
        ON soniq_jobs (priority, scheduled_at, seq) WHERE status = 'queued';
    -- When the next delayed job or retry comes due, so an idle worker sleeps exactly that long.
    CREATE INDEX IF NOT EXISTS soniq_jobs_due
        ON soniq_jobs (scheduled_at) WHERE status = 'queued';
    -- Lease recovery and shutdown touch only in-flight rows.
    CREATE INDEX IF NOT EXISTS soniq_jobs_processing
        ON soniq_jobs (worker_id) WHERE status = 'processing';
    -- Dead letters are listed and retried by hand; retention purges finished rows by age.
    CREATE INDEX IF NOT EXISTS soniq_jobs_dead_letter
        ON soniq_jobs (finished_at) WHERE status = 'dead_letter';
    CREATE INDEX IF NOT EXISTS soniq_jobs_finished
        ON soniq_jobs (finished_at) WHERE status IN ('done', 'cancelled');

    CREATE TABLE IF NOT EXISTS soniq_workers (
        id            text PRIMARY KEY,
        hostname      text NOT NULL,
        pid           integer NOT NULL,
        queues        text[],
        concurrency   integer NOT NULL,
        started_at    timestamptz NOT NULL DEFAULT now(),
        heartbeat_at  timestamptz NOT NULL DEFAULT now()
    );

    -- One notification per INSERT statement (not per row), carrying the queues it touched;
    -- sent at commit, so a rolled-back transactional enqueue wakes nobody.
    CREATE OR REPLACE FUNCTION soniq_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{NOTIFY_CHANNEL}', string_agg(DISTINCT q.queue, ','))
        FROM new_rows AS q;
        RETURN NULL;
    END $$;

    DROP TRIGGER IF EXISTS soniq_jobs_notify ON soniq_jobs;
    CREATE TRIGGER soniq_jobs_notify AFTER INSERT ON soniq_jobs
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION soniq_notify_insert();
    """,
    # 2: prefetch, and a cheaper enqueue.
    # - A job held by a worker that died before the job's start was recorded goes back
    #   uncounted but ``suspect``; a worker records a suspect job's start before running it.
    # - The due index holds only rows that were ever scheduled later than created (delayed
    #   jobs, retries, jobs put back): a job enqueued ready, nearly all of them, costs one
    #   index entry less. The next-due queries carry the same predicate.
    # - The INSERT statements notify by themselves (see INSERT_JOB), so the statement
    #   trigger, its transition table and its plpgsql call are gone from every enqueue.
    """
    ALTER TABLE soniq_jobs ADD COLUMN IF NOT EXISTS suspect boolean NOT NULL DEFAULT false;
    DROP INDEX IF EXISTS soniq_jobs_due;
    CREATE INDEX soniq_jobs_due ON soniq_jobs (scheduled_at)
        WHERE status = 'queued' AND scheduled_at > created_at;
    DROP TRIGGER IF EXISTS soniq_jobs_notify ON soniq_jobs;
    DROP FUNCTION IF EXISTS soniq_notify_insert();
    """,
    # 3: status is an enum instead of text with a CHECK. PostgreSQL re-prepares a table's CHECK
    # expressions for every statement, and the two checks cost a single enqueue 10-14 us of a
    # ~140 us backend round trip; an enum keeps status to the five values at no cost per
    # statement. max_attempts >= 1 is enforced where it is written (JobSpec). The partial
    # indexes compare status with a literal and are rebuilt around the type change.
    """
    DO $$ BEGIN
        CREATE TYPE soniq_job_status AS ENUM
            ('queued', 'processing', 'done', 'dead_letter', 'cancelled');
    EXCEPTION WHEN duplicate_object THEN NULL;
    END $$;
    DROP INDEX IF EXISTS soniq_jobs_claim_queue, soniq_jobs_claim_any, soniq_jobs_due,
        soniq_jobs_processing, soniq_jobs_dead_letter, soniq_jobs_finished;
    ALTER TABLE soniq_jobs DROP CONSTRAINT IF EXISTS soniq_jobs_status_check;
    ALTER TABLE soniq_jobs DROP CONSTRAINT IF EXISTS soniq_jobs_max_attempts_check;
    ALTER TABLE soniq_jobs ALTER COLUMN status DROP DEFAULT;
    ALTER TABLE soniq_jobs
        ALTER COLUMN status TYPE soniq_job_status USING status::soniq_job_status;
    ALTER TABLE soniq_jobs ALTER COLUMN status SET DEFAULT 'queued';
    CREATE INDEX soniq_jobs_claim_queue
        ON soniq_jobs (queue, priority, scheduled_at, seq) WHERE status = 'queued';
    CREATE INDEX soniq_jobs_claim_any
        ON soniq_jobs (priority, scheduled_at, seq) WHERE status = 'queued';
    CREATE INDEX soniq_jobs_due ON soniq_jobs (scheduled_at)
        WHERE status = 'queued' AND scheduled_at > created_at;
    CREATE INDEX soniq_jobs_processing ON soniq_jobs (worker_id) WHERE status = 'processing';
    CREATE INDEX soniq_jobs_dead_letter ON soniq_jobs (finished_at) WHERE status = 'dead_letter';
    CREATE INDEX soniq_jobs_finished
        ON soniq_jobs (finished_at) WHERE status IN ('done', 'cancelled');
    """,
    # 4: managing jobs (issue 17).
    # - errors: every failed attempt (bounded, see _FINISH); NULL until the first failure, so
    #   a job that succeeds first time carries nothing more.
    # - awaited: someone waits on the result (get_result(wait=...)); only such a job's finish
    #   sends a notification, so the plain drain sends none.
    # - Listing newest first by each filter (see list_jobs below). Every index costs each row
    #   version it covers an entry, and a job has three (queued, running, finished): four
    #   indexes over all rows made a drain's database work twice as dear, and an index per
    #   filter over finished rows still +22 % WAL records and +20 % buffers per drained job
    #   (bench/drain_work.py). So a job that succeeds enters one index as it finishes, as it
    #   did before (soniq_jobs_ended replaces soniq_jobs_finished; the retention purge reads
    #   it now), and that index carries queue and job_name: a filter on them reads index
    #   entries only, never the table. Failed and cancelled jobs, which a plain drain never
    #   makes, have an index per filter. Queued rows: one index, entered at enqueue (a queue
    #   filter may use soniq_jobs_claim_queue). Running rows are few and sorted.
    """
    ALTER TABLE soniq_jobs ADD COLUMN IF NOT EXISTS errors jsonb;
    ALTER TABLE soniq_jobs ADD COLUMN IF NOT EXISTS awaited boolean NOT NULL DEFAULT false;
    DROP INDEX IF EXISTS soniq_jobs_finished;
    CREATE INDEX IF NOT EXISTS soniq_jobs_ended ON soniq_jobs (status, created_at, id)
        INCLUDE (queue, job_name) WHERE status IN ('done', 'dead_letter', 'cancelled');
    CREATE INDEX IF NOT EXISTS soniq_jobs_failed_queue
        ON soniq_jobs (queue, status, created_at, id)
        WHERE status IN ('dead_letter', 'cancelled');
    CREATE INDEX IF NOT EXISTS soniq_jobs_failed_name
        ON soniq_jobs (job_name, status, created_at, id)
        WHERE status IN ('dead_letter', 'cancelled');
    CREATE INDEX IF NOT EXISTS soniq_jobs_queued_created ON soniq_jobs (created_at, id)
        INCLUDE (queue, job_name) WHERE status = 'queued';
    """,
    # 5: periodic jobs (soniq.schedules). A schedule is a row; each fire time it produced is a
    # row of soniq_schedule_fires whose primary key (schedule, fire time) makes a second job for
    # the same fire time impossible, whatever the workers do. The job records its schedule and
    # fire time (NULL for other jobs: no cost to them) so the job can learn them. Workers list
    # the job names they know, so a schedule whose job no live worker knows shows as orphaned.
    """
    ALTER TABLE soniq_jobs ADD COLUMN IF NOT EXISTS schedule_name text;
    ALTER TABLE soniq_jobs ADD COLUMN IF NOT EXISTS fire_time timestamptz;
    ALTER TABLE soniq_workers ADD COLUMN IF NOT EXISTS job_names text[];
    CREATE TABLE IF NOT EXISTS soniq_schedules (
        name            text PRIMARY KEY,
        job_name        text NOT NULL,
        cron            text,
        every_s         float8 CHECK (every_s >= 1),
        timezone        text NOT NULL DEFAULT 'UTC',
        args            jsonb NOT NULL DEFAULT '{}',
        queue           text NOT NULL,
        priority        integer NOT NULL DEFAULT 0,
        max_attempts    integer NOT NULL DEFAULT 1,
        missed          text NOT NULL DEFAULT 'latest' CHECK (missed IN ('latest','skip','all')),
        overlap         boolean NOT NULL DEFAULT true,
        jitter_s        float8 NOT NULL DEFAULT 0 CHECK (jitter_s >= 0),
        source          text NOT NULL CHECK (source IN ('code', 'api')),
        paused          boolean NOT NULL DEFAULT false,
        next_run_at     timestamptz,
        last_run_at     timestamptz,
        last_job_id     uuid,
        fired_total     bigint NOT NULL DEFAULT 0,
        skipped_total   bigint NOT NULL DEFAULT 0,
        missed_total    bigint NOT NULL DEFAULT 0,
        created_at      timestamptz NOT NULL DEFAULT now(),
        updated_at      timestamptz NOT NULL DEFAULT now(),
        CHECK ((cron IS NULL) <> (every_s IS NULL))
    );
    CREATE TABLE IF NOT EXISTS soniq_schedule_fires (
        schedule_name   text NOT NULL REFERENCES soniq_schedules (name) ON DELETE CASCADE,
        fire_time       timestamptz NOT NULL,
        job_id          uuid,
        result          text NOT NULL CHECK (result IN ('fired', 'skipped_overlap')),
        worker_id       text,
        fired_at        timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (schedule_name, fire_time)
    );
    """,
    # 6: job control (soniq.unique, soniq.control).
    # - Unique jobs: a job holds its unique_key while its status is one of unique_states and
    #   unique_until (``within``) has not passed. The key is never cleared by the hot path
    #   (claim, finish): an enqueue that meets a holder no longer covered clears it then (see
    #   UNIQUE_CLEAR_STALE), so jobs without a key cost nothing and the index only ever holds
    #   rows that had one.
    # - snoozes counts Snooze results; cancel_requested_at marks a running job asked to stop.
    # - soniq_queues: per-queue pause, fleet-wide concurrency limit and rate limit. A queue
    #   without a row (nearly all) has no controls, and workers claim it as before.
    """
    ALTER TABLE soniq_jobs ADD COLUMN IF NOT EXISTS unique_key text;
    ALTER TABLE soniq_jobs ADD COLUMN IF NOT EXISTS unique_states soniq_job_status[];
    ALTER TABLE soniq_jobs ADD COLUMN IF NOT EXISTS unique_until timestamptz;
    ALTER TABLE soniq_jobs ADD COLUMN IF NOT EXISTS snoozes integer NOT NULL DEFAULT 0;
    ALTER TABLE soniq_jobs ADD COLUMN IF NOT EXISTS cancel_requested_at timestamptz;
    CREATE UNIQUE INDEX IF NOT EXISTS soniq_jobs_unique
        ON soniq_jobs (unique_key) WHERE unique_key IS NOT NULL;
    CREATE TABLE IF NOT EXISTS soniq_queues (
        name         text PRIMARY KEY,
        paused       boolean NOT NULL DEFAULT false,
        concurrency  integer CHECK (concurrency >= 1),
        rate         float8 CHECK (rate > 0),
        tokens       float8 NOT NULL DEFAULT 0,
        refilled_at  timestamptz NOT NULL DEFAULT now(),
        updated_at   timestamptz NOT NULL DEFAULT now()
    );

    -- Claim up to p_want jobs of one limited queue, in one round trip. The queue's
    -- transaction-level advisory lock serialises these claims across the fleet, and each
    -- statement of a plpgsql function takes a fresh snapshot: the count of the queue's
    -- processing rows below sees every claim committed before the lock was granted, so it is
    -- exact (a single SQL statement would count in a snapshot taken before it waited).
    -- p_finished: jobs of this worker that have returned but whose finish it has not written
    -- yet; they run no more, so their slots are free (the worker claims before it records).
    -- How many: what the concurrency leaves after every processing row of the queue (running
    -- or claimed ahead, a dead worker's too until its lease is recovered), and what the rate's
    -- token bucket (one second of burst) holds; none while paused. Rows are counted as started:
    -- a limited queue is never claimed ahead, which would hold its slots idle.
    CREATE OR REPLACE FUNCTION soniq_claim_limited(
        p_worker text, p_queue text, p_names text[], p_want integer, p_finished text[])
    RETURNS TABLE (id text, job_name text, queue text, args text, priority integer,
                   attempt integer, max_attempts integer, created_at timestamptz,
                   scheduled_at timestamptz, trace_context text, revived boolean,
                   queue_wait_s float8, counted boolean, suspect boolean, schedule_name text,
                   fire_time timestamptz, snoozes integer)
    LANGUAGE plpgsql AS $fn$
    #variable_conflict use_column
    DECLARE
        take integer;
    BEGIN
        PERFORM pg_advisory_xact_lock(1347307859, hashtext(p_queue));
        SELECT CASE WHEN q.paused THEN 0 ELSE least(
                   p_want,
                   coalesce(q.concurrency - (SELECT count(*) FROM soniq_jobs AS r
                                             WHERE r.status = 'processing'
                                               AND r.queue = p_queue
                                               AND r.id <> ALL(p_finished::uuid[])), p_want),
                   CASE WHEN q.rate IS NULL THEN p_want
                        ELSE floor(least(q.rate, q.tokens + q.rate
                                         * extract(epoch FROM now() - q.refilled_at)))::int
                   END) END
        INTO take FROM soniq_queues AS q WHERE q.name = p_queue;
        IF coalesce(take, 0) <= 0 THEN
            RETURN;
        END IF;
        RETURN QUERY
        WITH picked AS (
            SELECT s.tid, row_number() OVER () AS n FROM (
                SELECT c.ctid AS tid FROM soniq_jobs AS c
                WHERE c.status = 'queued' AND c.scheduled_at <= now() AND c.queue = p_queue
                  AND c.job_name = ANY(p_names)
                ORDER BY c.priority, c.scheduled_at, c.seq
                LIMIT take
                FOR UPDATE SKIP LOCKED
            ) AS s
        ),
        claimed AS (
            UPDATE soniq_jobs AS j SET
                status = 'processing', attempts = j.attempts + 1, started_at = now(),
                worker_id = p_worker
            FROM picked WHERE j.ctid = picked.tid
            RETURNING j.id::text AS id, j.job_name, j.queue, j.args::text AS args, j.priority,
                      j.attempts AS attempt, j.max_attempts, j.created_at, j.scheduled_at,
                      j.trace_context::text AS trace_context, j.revived_at IS NOT NULL AS revived,
                      extract(epoch FROM now() - j.scheduled_at)::float8 AS queue_wait_s,
                      true AS counted, j.suspect, j.schedule_name, j.fire_time, j.snoozes,
                      picked.n
        ),
        spent AS (
            UPDATE soniq_queues AS q SET
                tokens = least(q.rate, q.tokens
                               + q.rate * extract(epoch FROM now() - q.refilled_at))
                         - (SELECT count(*) FROM claimed),
                refilled_at = now()
            WHERE q.name = p_queue AND q.rate IS NOT NULL
        )
        SELECT c.id, c.job_name, c.queue, c.args, c.priority, c.attempt, c.max_attempts,
               c.created_at, c.scheduled_at, c.trace_context, c.revived, c.queue_wait_s,
               c.counted, c.suspect, c.schedule_name, c.fire_time, c.snoozes
        FROM claimed AS c ORDER BY c.n;
    END $fn$;
    """,
]

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
        -- A failure appends to the job's error history (see _ERRORS_APPEND); anything else
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


def _errors_append(attempt: str, worker: str, error: str, tb: str) -> str:
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
    errors_append=_errors_append("f.attempts", "$1::text", "f.error", "f.tb"),
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
    -- By the row's address: the row is locked, so it cannot move, and a join on id would let
    -- the planner scan the whole table once a claim is large (it costs index lookups dear).
    FROM picked WHERE j.ctid = picked.tid
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
    errors      = {_errors_append("told.attempt", "told.lost_worker", "told.error", "NULL::text")},
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

# The one process of a fleet that reports queue state holds this session advisory lock, so
# that sum() over all scraped processes counts every job once.
METRICS_LEADER_LOCK_KEY = 0x50_4E_49_52  # next to MIGRATION_LOCK_KEY, distinct from it

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

# Claim from one limited queue (see soniq_claim_limited in migration 5): worker, queue, runnable
# job names, most to claim, the worker's finished jobs not yet written.
CLAIM_LIMITED = "SELECT * FROM soniq_claim_limited($1, $2, $3, $4, $5)"


# The controlled claim: as finish_and_claim, leaving out every paused or limited queue (read in
# the statement itself, once: an InitPlan), so a stale view in the worker cannot claim them.
QUEUE_FILTER_UNCONTROLLED = """
              AND queue <> ALL(ARRAY(SELECT name FROM soniq_queues
                                     WHERE paused OR concurrency IS NOT NULL
                                        OR rate IS NOT NULL))"""


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

# ---------------------------------------------------------------------------------------------
# The fleet as people look at it (soniq_dashboard): workers, and the jobs of the last window.
# Both stay cheap on a table of millions: the workers table is small, and the window reads at
# most $2 ended jobs of each state, newest first, through soniq_jobs_ended (status, created_at).
# The window is on created_at, the key of that index (an index on finished_at would cost every
# drained job one more entry): jobs enqueued in the window that have ended.

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
