"""Job data (soniq.jobs) on its own: the enums behave as their text, the outcome -> status
translation, and the records a finished attempt leaves. No database."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import asyncpg
import pytest

from soniq import Backoff, sql
from soniq.context import AttemptContext
from soniq.jobs import ClaimedJob, FinishedAttempt, JobStatus, Outcome, status_after
from soniq.registry import JobSpec, make_spec


def test_enums_compare_hash_format_and_serialise_as_their_text() -> None:
    assert Outcome.RETRY == "retry"
    assert {"retry": 1}[Outcome.RETRY] == 1  # metrics count outcomes in str-keyed dicts
    assert f"{Outcome.DEAD_LETTER}" == "dead_letter"
    assert "%s" % JobStatus.QUEUED == "queued"  # noqa: UP031 - logging formats this way
    assert str(JobStatus.DONE) == "done"
    assert json.dumps({"outcome": Outcome.DONE}) == '{"outcome": "done"}'
    assert JobStatus("cancelled") is JobStatus.CANCELLED


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (Outcome.DONE, JobStatus.DONE),
        (Outcome.RETRY, JobStatus.QUEUED),
        (Outcome.DEAD_LETTER, JobStatus.DEAD_LETTER),
        ("retry", JobStatus.QUEUED),
        (None, JobStatus.DEAD_LETTER),
    ],
)
def test_status_after_an_outcome(outcome: Outcome | str | None, status: JobStatus) -> None:
    assert status_after(outcome) is status


def _spec() -> JobSpec:
    async def job() -> None:
        return None

    return make_spec(
        job,
        name="t.job",
        queue="default",
        max_retries=2,
        priority=0,
        timeout=None,
        backoff=Backoff(base=1.0, jitter=0.0),
        trace_parent=None,
    )


def _ctx(attempt: int) -> AttemptContext:
    now = datetime.now(timezone.utc)
    return AttemptContext(
        job_id="j1",
        job_name="t.job",
        queue="default",
        attempt=attempt,
        max_attempts=3,
        priority=0,
        args={},
        enqueued_at=now,
        scheduled_at=now,
        queue_wait_s=0.0,
        worker_id="w",
        spec=_spec(),
        trace_context={"soniq-previous-attempt": "00-ab"},
    )


def _raised() -> ValueError:
    try:
        raise ValueError("bad input")
    except ValueError as exc:
        return exc


def test_a_failed_attempt_with_attempts_left_is_queued_with_its_delay() -> None:
    ctx = _ctx(attempt=1)
    exc = _raised()
    ctx.settle_failure(exc)
    record = FinishedAttempt.failed(ctx, exc)
    assert record.status is JobStatus.QUEUED
    assert record.delay_s == ctx.retry_delay and record.delay_s > 0
    assert record.error == "ValueError: bad input"
    assert record.traceback is not None and "bad input" in record.traceback
    assert json.loads(record.trace_context or "") == {"soniq-previous-attempt": "00-ab"}
    assert record.attempt == 1 and record.refund == 0


def test_a_failed_last_attempt_is_dead_lettered_without_a_delay() -> None:
    ctx = _ctx(attempt=3)
    exc = _raised()
    ctx.settle_failure(exc)
    record = FinishedAttempt.failed(ctx, exc)
    assert record.status is JobStatus.DEAD_LETTER
    assert record.delay_s == 0.0


def test_a_put_back_attempt_is_refunded() -> None:
    record = FinishedAttempt.put_back("j1", 2)
    assert (record.status, record.refund, record.attempt) == (JobStatus.QUEUED, 1, 2)


def test_a_storable_record_drops_its_result_and_escapes_its_texts() -> None:
    record = FinishedAttempt(
        "j1", JobStatus.DEAD_LETTER, result="1", error="a\x00b", traceback="\ud800", attempt=3
    )
    safe = record.storable()
    assert (safe.result, safe.error, safe.traceback) == (None, "a\\x00b", "\\ud800")
    assert (safe.status, safe.attempt) == (JobStatus.DEAD_LETTER, 3)


def test_a_claimed_job_reads_the_claim_columns_in_their_order() -> None:
    columns = [c.strip().removeprefix("claimed.") for c in sql._CLAIMED_OUT.split(",")]
    assert list(ClaimedJob.FIELDS) == columns


async def test_a_claimed_job_is_a_typed_row_whose_start_may_be_written_first(
    db: asyncpg.Connection,
) -> None:
    query = """
        SELECT 'j1' AS id, 't.job' AS job_name, 'default' AS queue, '{}' AS args, 0 AS priority,
               a.attempt, 3 AS max_attempts, now() AS created_at, now() AS scheduled_at,
               NULL::text AS trace_context, false AS revived, 0.5::float8 AS queue_wait_s,
               false AS counted, a.suspect
        FROM (VALUES (1, false), (1, true), (3, false)) AS a(attempt, suspect)
    """
    plain, suspect, last = await db.fetch(query, record_class=ClaimedJob)
    assert (plain.id, plain.job_name, plain.attempt, plain.queue_wait_s) == ("j1", "t.job", 1, 0.5)
    assert plain["queue"] == plain.queue == "default"
    assert not plain.start_written_first
    assert suspect.start_written_first
    assert last.start_written_first  # its last attempt


def test_every_list_of_states_and_outcomes_is_the_one_in_jobs() -> None:
    from soniq import unique
    from soniq.testing.outcomes import OUTCOME_NAMES

    assert set(OUTCOME_NAMES) == {o.value for o in Outcome}
    assert tuple(s.value for s in JobStatus) == unique.STATES
