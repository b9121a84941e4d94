"""The schema migrations, in order: ``MIGRATIONS[i]`` takes a database from version ``i``
to ``i + 1`` (``sql.SCHEMA_VERSION`` is their count). Run by ``Store.setup`` only, under one
transaction-scoped advisory lock."""

from __future__ import annotations

from .sql import NOTIFY_CHANNEL

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
    # 7: listing indexes keyed on what a listing filters, at no cost to the drain. Schema 4's
    # soniq_jobs_ended carried queue and job_name as INCLUDE columns, which an index scan can
    # only test after returning each entry to the executor (visibility map checked, tuple
    # formed, filter evaluated); as trailing key columns the same bytes are tested inside
    # the B-tree while it walks the page, about three times faster, and the entries
    # are exactly as wide (the key is unique at (created_at, id), so queue and job_name never
    # decide an entry's place). A job that succeeds still enters one listing index as it
    # finishes (soniq_jobs_done), but that index holds done jobs only, keyed by time first:
    # a finish inserts at the right edge of the index, where a B-tree fills its pages (90 %)
    # and caches the page to insert into, where soniq_jobs_ended put done jobs before the
    # dead letters and cancelled ones and split its pages half full. Dead-lettered and
    # cancelled jobs get soniq_jobs_failed in its place, which a plain drain never writes.
    # Deduplication is off: no two entries are equal (id is in the key), so a pass before
    # each page split would look for duplicates and find none. soniq_jobs_queued_created gets
    # queue and job_name as keys too, but under the "C" collation, which the listing's
    # condition on queued jobs names (JobFilter.where(byte_order=True)) and the claim's do
    # not: a key column is offered only to conditions of its collation, and with the claim's
    # job_name = ANY as an index condition a planner without statistics read every queued row
    # through this index and sorted them for each claim (tests/test_claim_plan.py). Equality
    # is the same under any deterministic collation, so the listing matches the same rows.
    """
    DROP INDEX IF EXISTS soniq_jobs_ended, soniq_jobs_queued_created;
    CREATE INDEX IF NOT EXISTS soniq_jobs_queued_created
        ON soniq_jobs (created_at, id, queue COLLATE "C", job_name COLLATE "C")
        WITH (deduplicate_items = off) WHERE status = 'queued';
    CREATE INDEX IF NOT EXISTS soniq_jobs_done
        ON soniq_jobs (created_at, id, queue, job_name) WITH (deduplicate_items = off)
        WHERE status = 'done';
    CREATE INDEX IF NOT EXISTS soniq_jobs_failed
        ON soniq_jobs (status, created_at, id, queue, job_name) WITH (deduplicate_items = off)
        WHERE status IN ('dead_letter', 'cancelled');
    """,
]
