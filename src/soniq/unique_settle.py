"""How a batch of unique jobs is written, whatever the driver and the side (async or sync).

The rules live here once, without a connection: :func:`fold_batch` settles the duplicates
inside the batch, and :func:`settle` is the conversation with the database, a generator that
yields each statement (the ``$n`` text of :mod:`soniq.sql_control` and its arguments) and is
sent the rows it returned, read by position. The stores drive it: the control store on asyncpg
or an async caller's connection (:func:`drive_async`), the sync store on psycopg or a sync
caller's connection (:func:`drive_sync`), each inside one transaction or savepoint, so
``raise`` writes nothing at all. Nothing here runs a statement.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

from . import sql_control
from .errors import DuplicateJob, SoniqError

if TYPE_CHECKING:
    from .jobs import PendingJob
    from .unique import Unique

Statement = tuple[str, tuple[Any, ...]]
Rows = Sequence[Sequence[Any]]
Steps = Generator[Statement, Rows, None]
Followers = list[tuple["PendingJob", "PendingJob"]]

# Rounds of insert / read holders / clear stale before giving up: each round settles every job
# whose holder it saw, so more than two or three means holders keep changing under us.
ROUNDS = 20


def fold_batch(jobs: Sequence[PendingJob]) -> tuple[list[PendingJob], Followers]:
    """The first job of each key (to write) and each later one with its first (to take the
    first one's id once written). Under ``replace`` the first takes the last one's arguments
    and due time; under ``raise`` a key twice raises before anything is written."""
    first: dict[str, PendingJob] = {}
    followers: list[tuple[PendingJob, PendingJob]] = []
    for job in jobs:
        prior = first.get(_key(job))
        if prior is None:
            first[_key(job)] = job
            continue
        conflict = _rule(job).on_conflict
        if conflict == "raise":
            raise DuplicateJob(
                f"Job {job.job_name!r}: the batch holds the same unique key twice "
                f"({_key(job)!r}); nothing was written",
                prior.id,
            )
        if conflict == "replace":
            prior.args_json = job.args_json
            prior.scheduled_at, prior.delay_s = job.scheduled_at, job.delay_s
            job.replaced = True
        job.deduplicated = True
        followers.append((job, prior))
    return list(first.values()), followers


def take_ids(followers: Followers) -> None:
    """After the write: each duplicate inside the batch gets the id its first one ended with."""
    for job, prior in followers:
        job.id = prior.id


def settle(jobs: list[PendingJob]) -> Steps:
    """Write ``jobs`` (one per key), or find the holder each one meets and do what its rule
    says: take the holder's id, replace a queued holder's arguments, or raise."""
    pending = jobs
    for _ in range(ROUNDS):
        rows = yield sql_control.INSERT_UNIQUE_JOBS, _unique_arrays(pending)
        written = {r[0] for r in rows}
        left = [j for j in pending if j.id not in written]
        if not left:
            return
        # unique_key, id, status, stale
        rows = yield sql_control.UNIQUE_HOLDERS, ([_key(j) for j in left],)
        holders = {r[0]: r for r in rows}
        again: list[PendingJob] = []
        stale: list[str] = []
        replace: list[PendingJob] = []
        for job in left:
            holder = holders.get(_key(job))
            if holder is None:  # gone, or committed after this statement's snapshot
                again.append(job)
            elif holder[3]:
                stale.append(_key(job))
                again.append(job)
            elif _rule(job).on_conflict == "raise":
                raise DuplicateJob(
                    f"Job {job.job_name!r} is already {holder[2]} as {holder[1]} "
                    f"(unique key {_key(job)!r}); nothing was written",
                    holder[1],
                )
            elif _rule(job).on_conflict == "replace" and holder[2] == "queued":
                replace.append(job)
            else:
                job.id, job.deduplicated = holder[1], True
        if stale:
            yield sql_control.UNIQUE_CLEAR_STALE, (stale,)
        if replace:
            rows = yield sql_control.UNIQUE_REPLACE, _replace_arrays(replace)
            done = {r[0]: r[1] for r in rows}  # unique_key, id
            for job in replace:
                if _key(job) in done:
                    job.id, job.deduplicated, job.replaced = done[_key(job)], True, True
                else:
                    again.append(job)  # claimed meanwhile: look again
        if not again:
            return
        pending = again
    raise SoniqError(
        f"Could not settle {len(pending)} unique job(s) after {ROUNDS} tries: their "
        f"existing jobs kept changing state; try the enqueue again"
    )


def drive_sync(steps: Steps, run: Callable[[str, tuple[Any, ...]], Rows]) -> None:
    """Run ``steps`` with ``run(query, args) -> rows``, a blocking call."""
    try:
        query, args = next(steps)
        while True:
            query, args = steps.send(run(query, args))
    except StopIteration:
        return


async def drive_async(steps: Steps, run: Callable[[str, tuple[Any, ...]], Awaitable[Rows]]) -> None:
    """Run ``steps`` with ``await run(query, args) -> rows``."""
    try:
        query, args = next(steps)
        while True:
            query, args = steps.send(await run(query, args))
    except StopIteration:
        return


def _key(job: PendingJob) -> str:
    assert job.unique is not None
    return job.unique.key


def _rule(job: PendingJob) -> Unique:
    assert job.unique is not None
    return job.unique.rule


def _unique_arrays(jobs: Sequence[PendingJob]) -> tuple[list[Any], ...]:
    return (
        [j.id for j in jobs],
        [j.spec.name for j in jobs],
        [j.queue for j in jobs],
        [j.args_json for j in jobs],
        [j.priority for j in jobs],
        [j.spec.max_attempts for j in jobs],
        [j.scheduled_at for j in jobs],
        [j.delay_s for j in jobs],
        [json.dumps(j.trace_context) if j.trace_context else None for j in jobs],
        [_key(j) for j in jobs],
        [_rule(j).states_literal for j in jobs],
        [_rule(j).within_s for j in jobs],
    )


def _replace_arrays(jobs: Sequence[PendingJob]) -> tuple[Any, ...]:
    return (
        [_key(j) for j in jobs],
        [j.args_json for j in jobs],
        [j.scheduled_at for j in jobs],
        [j.delay_s for j in jobs],
        [_rule(j).within_s for j in jobs],
        ",".join(sorted({j.queue for j in jobs})),
    )
