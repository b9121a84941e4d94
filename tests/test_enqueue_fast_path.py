"""The enqueue fast path: a kept connection with a watchdog, time-ordered ids, batch statements.

Speed itself is measured in bench/, not here; these tests hold the fast path to the same
promises as the slow one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest

from soniq import DatabaseUnavailable, JobArgumentsError, PendingJob, Soniq
from soniq.app import new_job_id
from tests.support.waiting import wait_until


def test_job_ids_are_uuid7_in_creation_order() -> None:
    first = [new_job_id() for _ in range(1000)]
    time.sleep(0.002)  # ids of a later millisecond sort after all of these
    later = new_job_id()
    for text in [*first, later]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert str(parsed) == text
    assert len(set(first)) == 1000
    assert all(later > earlier for earlier in first)
    millis = int(later.replace("-", "")[:12], 16)
    assert abs(millis - time.time() * 1000) < 5000


async def test_concurrent_enqueues_all_land(app: Soniq, db: asyncpg.Connection) -> None:
    @app.job(name="job")
    async def job(i: int) -> None:
        pass

    # One of them gets the kept connection, the others go through the pool meanwhile.
    ids = await asyncio.gather(*(app.enqueue("job", i=i) for i in range(40)))
    rows = await db.fetch("SELECT id::text, (args->>'i')::int AS i FROM soniq_jobs")
    assert {r["id"]: r["i"] for r in rows} == {job_id: i for i, job_id in enumerate(ids)}


async def test_enqueue_many_takes_any_iterable_and_keeps_order(
    app: Soniq, db: asyncpg.Connection
) -> None:
    @app.job(name="job")
    async def job(i: int) -> None:
        pass

    ids = await app.enqueue_many("job", ({"i": i} for i in range(250)))
    rows = await db.fetch("SELECT id::text, (args->>'i')::int AS i FROM soniq_jobs")
    assert {r["id"]: r["i"] for r in rows} == {job_id: i for i, job_id in enumerate(ids)}
    assert len(set(ids)) == 250


async def test_an_enqueue_that_hangs_fails_after_command_timeout(
    clean_db: str, db: asyncpg.Connection
) -> None:
    app = Soniq(clean_db, command_timeout=1.0)

    @app.job(name="job")
    async def job() -> None:
        pass

    try:
        await app.enqueue("job")  # the kept connection exists and is idle
        async with db.transaction():
            await db.execute("LOCK TABLE soniq_jobs IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match=r"command_timeout.*nothing was written"):
                await app.enqueue("job")
            waited = time.monotonic() - started

            async def cancelled() -> bool:
                waiting = await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                    "AND query LIKE '%INSERT INTO soniq_jobs%'"
                )
                return bool(waiting == 0)

            # The statement is cancelled on the server, not left waiting to commit once the lock
            # goes.
            await wait_until(cancelled, timeout=10, what="the stuck INSERT to be cancelled")
        assert 0.9 < waited < 10.0
        # The stuck connection was dropped; the next enqueue opens a new one.
        await app.enqueue("job")
        assert await db.fetchval("SELECT count(*) FROM soniq_jobs") == 2
    finally:
        await app.close()


class FreezingProxy:
    """A TCP proxy to PostgreSQL that can go silent (no data, no close): a network that drops
    packets without telling anyone."""

    def __init__(self, target: tuple[str, int] | Path) -> None:
        self.target = target  # host and port, or a Unix socket
        self.frozen = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if isinstance(self.target, Path):
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if self.frozen.is_set():
                    await asyncio.Event().wait()  # swallow it, say nothing, forever
                dst.write(data)
                await dst.drain()

        tasks = [
            asyncio.create_task(pump(reader, up_writer)),
            asyncio.create_task(pump(up_reader, writer)),
        ]
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            writer.close()
            up_writer.close()

    async def close(self) -> None:
        """Cut every connection (both ends see it closed) and stop listening."""
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()


def _unix_socket(folder: str) -> Path:
    [socket] = [p for p in Path(folder).glob(".s.PGSQL.*") if not p.name.endswith(".lock")]
    return socket


async def test_an_enqueue_on_a_silent_network_fails_instead_of_hanging(clean_db: str) -> None:
    parts = urlsplit(clean_db)
    query = dict(parse_qsl(parts.query))
    socket_dir = query.pop("host", "")
    if socket_dir.startswith("/"):
        # The embedded server the tests start on a machine without PostgreSQL listens on a
        # Unix socket only (postgresql://postgres:@/db?host=/folder).
        proxy = FreezingProxy(await asyncio.to_thread(_unix_socket, socket_dir))
    else:
        proxy = FreezingProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    await proxy.start()
    url = urlunsplit(
        parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}", query=urlencode(query))
    )
    app = Soniq(url, command_timeout=0.5, connect_timeout=1.0)

    @app.job(name="job")
    async def job() -> None:
        pass

    try:
        await app.enqueue("job")  # the kept connection is open, through the proxy
        proxy.frozen.set()
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            await app.enqueue("job")
        assert time.monotonic() - started < 10
    finally:
        await proxy.close()
        await app.close()


async def test_a_mixed_batch_goes_through_the_general_statement(
    app: Soniq, db: asyncpg.Connection
) -> None:
    @app.job(name="job")
    async def job(i: int) -> None:
        pass

    spec = app.registry.spec("job")
    # What an enqueue middleware could make of a batch: jobs for two queues.
    jobs = [
        PendingJob(new_job_id(), spec, "a" if i % 2 else "b", f'{{"i": {i}}}', i, None, 0.0)
        for i in range(6)
    ]
    woken: list[str] = []
    await db.add_listener("soniq_jobs", lambda *a: woken.append(a[3]))
    await app._store.insert(jobs, None)
    await wait_until(lambda: woken, what="the notification")
    rows = await db.fetch("SELECT id::text, queue, priority FROM soniq_jobs")
    assert {r["id"]: (r["queue"], r["priority"]) for r in rows} == {
        j.id: (j.queue, j.priority) for j in jobs
    }
    assert sorted(woken[0].split(",")) == ["a", "b"]


async def test_a_self_containing_argument_is_refused_like_any_unserialisable_one(
    app: Soniq, db: asyncpg.Connection
) -> None:
    @app.job(name="job")
    async def job(data: dict[str, object]) -> None:
        pass

    loop: dict[str, object] = {}
    loop["self"] = loop
    with pytest.raises(JobArgumentsError, match=r"'data'.*not JSON-serialisable"):
        await app.enqueue("job", data=loop)
    with pytest.raises(JobArgumentsError, match="'data'"):
        await app.enqueue_many("job", [{"data": {}}, {"data": loop}])
    assert await db.fetchval("SELECT count(*) FROM soniq_jobs") == 0
