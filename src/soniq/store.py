"""Database access: the pools, the schema, enqueue and inspection.

The first of the store modules, the only ones that call ``execute``/``fetch`` (DEVELOPERS.md
lists them): :mod:`soniq.worker_store` (the worker's round trip and liveness, same pools),
:mod:`soniq.control_store`, :mod:`soniq.store_admin`, :mod:`soniq.sync_store` (``enqueue_sync``
on psycopg) and the others share its pools through it. What the app and the worker get back
are typed values (:mod:`soniq.jobs`, :mod:`soniq.fleet`, :mod:`soniq.queue_state`); ``fetch``
and ``fetchval`` serve the other store modules only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import asyncpg

from . import migrations, sql, sql_fleet
from .connections import ASYNCPG, Adapter, adapter_for, refused_data, wrong_side
from .database import mask_url
from .db_errors import BAD_DATA_ERRORS, CONNECTION_ERRORS
from .enqueue_connection import EnqueueConnection
from .errors import DatabaseUnavailable, SchemaError
from .fleet import JobStats, WorkerInfo
from .insert_sql import insert_statement, unstorable
from .jobs import ErrorEntry, JobInfo, JobStatus, PendingJob
from .queue_state import QueueState
from .schema import connection_class, lock_key, qualify

if TYPE_CHECKING:
    from .control_store import ControlStore
    from .middleware import Connection

logger = logging.getLogger("soniq")

# The claim walks a partial index in (priority, scheduled_at, seq) order and stops after LIMIT
# rows. A table the planner has no statistics for (new, and not yet reached by autovacuum)
# looks tiny to it, and it then prefers a bitmap scan that reads every queued row and sorts
# them: one claim of 200 jobs from a 20,000-job backlog took 98 ms instead of 2.5. Without
# bitmap scans the ordered index scan is the only cheap plan, statistics or not; the claim has
# no use for a bitmap scan anyway (it wants the first rows in index order). The setting is
# kept to the workers' round-trip connections: user code borrowing app.pool() plans as usual.
# The other statistics trap, an analyzed table's generic plan hash-joining the claimed rows to
# a scan of the whole table, is closed in the statement itself (sql.finish_and_claim), not by
# a setting: turning sequential scans or hash joins off changed the job-control claims' plans
# and made the finish a nested loop.
CLAIM_PLANNER_SETTINGS = {"enable_bitmapscan": "off"}
# Round trips of one worker are sequential; a few workers may share one app.
_CLAIM_POOL_SIZE = 4

SETUP_HINT = "run `soniq setup` (or `await app.setup()`) against this database"


class Store:
    def __init__(
        self,
        resolve_url: Callable[[], tuple[str, str]],
        *,
        min_size: int,
        max_size: int,
        connect_timeout: float,
        command_timeout: float,
        schema: str | None = None,
        pgbouncer: bool = False,
        listen_url: str | None = None,
    ) -> None:
        self._resolve_url = resolve_url
        #: The PostgreSQL schema of Soniq's tables; None: wherever the search_path finds them.
        self.schema = schema
        self._resolve_lock = threading.Lock()
        self.url: str | None = None
        self.display_url = "<not connected yet>"
        self._min_size = min_size
        self._max_size = max_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._claim_pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._pool_lock = asyncio.Lock()
        self._schema_checked = False
        #: Behind PgBouncer in transaction mode: no statement is prepared for later (each one
        #: may run on another server connection), no session setting or session lock.
        self.pgbouncer = pgbouncer
        self._listen_url = listen_url
        self._options: dict[str, Any] = {"connection_class": connection_class(schema)}
        if pgbouncer:
            self._options["statement_cache_size"] = 0
        self._enqueue_conn = EnqueueConnection(self)
        self._control: ControlStore | None = None

    async def resolve(self) -> str:
        """The URL, starting an embedded server first if that is where it comes from."""
        if self.url is None:
            # Starting an embedded server blocks for about a second: keep the loop free.
            return await asyncio.to_thread(self.resolve_sync)
        return self.url

    def resolve_sync(self) -> str:
        """:meth:`resolve` for a thread without an event loop (``enqueue_sync``)."""
        with self._resolve_lock:
            if self.url is None:
                url, source = self._resolve_url()
                self.url = url
                self.display_url = mask_url(url)
                logger.info("Soniq uses database %s (from %s)", self.display_url, source)
            return self.url

    @property
    def schema_checked(self) -> bool:
        return self._schema_checked

    def qualify(self, statement: str) -> str:
        """``statement`` as it must run on a connection that is not Soniq's own (those
        qualify what they are given: :mod:`soniq.schema`)."""
        return qualify(statement, self.schema)

    # -- connections -----------------------------------------------------------------------
    async def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                # The enqueue connection (see insert) is one of max_size.
                max_size = max(1, self._max_size - 1)
                self._pool = await self._create_pool(min(self._min_size, max_size), max_size)
        return self._pool

    async def claim_pool(self) -> asyncpg.Pool[asyncpg.Record]:
        """Connections for the workers' round trips (one each at a time), planned without
        bitmap scans: see :data:`CLAIM_PLANNER_SETTINGS`."""
        if self._claim_pool is not None:
            return self._claim_pool
        async with self._pool_lock:
            if self._claim_pool is None:
                self._claim_pool = await self._create_pool(
                    0, _CLAIM_POOL_SIZE, CLAIM_PLANNER_SETTINGS
                )
        return self._claim_pool

    async def _create_pool(
        self, min_size: int, max_size: int, settings: dict[str, str] | None = None
    ) -> asyncpg.Pool[asyncpg.Record]:
        url = await self.resolve()
        try:
            return await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                reset=_rollback_only,
                # PgBouncer refuses startup settings; its sessions are anyone's anyway.
                server_settings=None if self.pgbouncer else settings,
                **self._options,
            )
        except CONNECTION_ERRORS as exc:
            raise self.unavailable(exc) from exc

    async def connect(self, *, client_timeout: bool = True) -> asyncpg.Connection[asyncpg.Record]:
        """A dedicated connection outside the pool (for LISTEN, the enqueue connection).
        ``client_timeout=False``: no client timer per statement (the caller has the server
        enforce ``command_timeout`` instead)."""
        url = await self.resolve()
        try:
            return await asyncpg.connect(
                url,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout if client_timeout else None,
                **self._options,
            )
        except CONNECTION_ERRORS as exc:
            raise self.unavailable(exc) from exc

    @property
    def listens(self) -> bool:
        """Whether workers can LISTEN: not through PgBouncer unless a direct URL is set."""
        return not self.pgbouncer or self._listen_url is not None

    async def connect_listener(self) -> asyncpg.Connection[Any]:
        """A dedicated connection for LISTEN (on the direct URL behind PgBouncer)."""
        if self._listen_url is None:
            return await self.connect()
        try:
            conn: asyncpg.Connection[Any] = await asyncpg.connect(
                self._listen_url, timeout=self.connect_timeout, **self._options
            )
            return conn
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(
                f"Cannot reach PostgreSQL at {mask_url(self._listen_url)} "
                f"(listen_database_url): {type(exc).__name__}: {exc}"
            ) from exc

    def unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            f"Cannot reach PostgreSQL at {self.display_url}: {type(exc).__name__}: {exc}. "
            f"Check that the server is running and the URL (SONIQ_DATABASE_URL) is right"
        )

    async def close(self) -> None:
        await self._enqueue_conn.close()
        if self._claim_pool is not None:
            claim_pool, self._claim_pool = self._claim_pool, None
            await claim_pool.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        pool = await self.pool()
        try:
            return await pool.fetch(query, *args, timeout=self.command_timeout)
        except CONNECTION_ERRORS as exc:
            raise self.unavailable(exc) from exc
        except asyncpg.UndefinedTableError as exc:
            raise SchemaError(f"The Soniq tables are missing; {SETUP_HINT}") from exc

    async def fetchval(self, query: str, *args: Any) -> Any:
        rows = await self.fetch(query, *args)
        return rows[0][0] if rows else None

    # -- schema ----------------------------------------------------------------------------
    async def setup(self) -> int:
        """Create or migrate the tables; returns the number of migrations applied."""
        pool = await self.pool()
        async with pool.acquire() as conn, conn.transaction():
            # First the lock: two setups creating the same schema at once would collide.
            await conn.execute(sql.LOCK_MIGRATIONS, lock_key(sql.MIGRATION_LOCK_KEY, self.schema))
            if self.schema is not None:
                # Whatever a migration creates by a bare name (an index, a function) lands in
                # the schema; the tables are named qualified anyway.
                await conn.execute(sql.CREATE_SCHEMA.format(schema=self.schema))
                await conn.execute(sql.SET_LOCAL_SEARCH_PATH, self.schema)
            await conn.execute(sql.CREATE_VERSION_TABLE)
            version = await conn.fetchval(sql.READ_VERSION)
            applied = 0
            for target in range(version + 1, sql.SCHEMA_VERSION + 1):
                await conn.execute(migrations.MIGRATIONS[target - 1])
                await conn.execute(sql.RECORD_VERSION, target)
                applied += 1
        self._schema_checked = True
        if applied:
            logger.info("Soniq schema migrated to version %d", sql.SCHEMA_VERSION)
        return applied

    async def check_schema(self, conn: Connection | None = None) -> None:
        if self._schema_checked:
            return
        if conn is None:
            version = await self.fetchval(sql.CURRENT_VERSION)
        else:
            version = await conn.fetchval(self.qualify(sql.CURRENT_VERSION))
        self.judge_version(version)

    def judge_version(self, version: int | None) -> None:
        """Raise unless ``version`` (read with ``sql.CURRENT_VERSION``) is the one needed."""
        if version is None:
            raise SchemaError(f"The Soniq tables do not exist in {self.display_url}; {SETUP_HINT}")
        if version < sql.SCHEMA_VERSION:
            raise SchemaError(
                f"The Soniq schema in {self.display_url} is version {version}, this Soniq needs "
                f"{sql.SCHEMA_VERSION}; {SETUP_HINT}"
            )
        if version > sql.SCHEMA_VERSION:
            raise SchemaError(
                f"The Soniq schema in {self.display_url} is version {version}, newer than this "
                f"Soniq ({sql.SCHEMA_VERSION}) understands; upgrade the soniq package"
            )
        self._schema_checked = True

    # -- enqueue ---------------------------------------------------------------------------
    async def insert(self, jobs: Sequence[PendingJob], conn: Any) -> None:
        query, args = insert_statement(jobs)
        if conn is not None:
            adapter = adapter_for(conn)
            if adapter is not ASYNCPG:
                await self._insert_with(adapter, conn, jobs, query, args)
                return
        if not self._schema_checked:
            await self.check_schema(conn)
        try:
            if conn is not None:
                await conn.execute(self.qualify(query), *args)
            else:
                await self._execute(query, args)
        except BAD_DATA_ERRORS as exc:
            raise unstorable(jobs, exc) from None
        except CONNECTION_ERRORS as exc:
            if conn is not None:
                raise  # the caller's own connection: theirs to handle
            raise self.unavailable(exc) from exc

    async def _insert_with(
        self,
        adapter: Adapter,
        conn: Any,
        jobs: Sequence[PendingJob],
        query: str,
        args: tuple[Any, ...],
    ) -> None:
        """Write with a caller's connection of another driver (psycopg, SQLAlchemy)."""
        if not adapter.is_async:
            raise wrong_side(adapter, sync_call=False)
        if not self._schema_checked:
            self.judge_version(await adapter.fetchval(conn, self.qualify(sql.CURRENT_VERSION), ()))
        try:
            await adapter.execute(conn, self.qualify(query), args)
        except Exception as exc:
            if refused_data(exc):
                raise unstorable(jobs, exc) from None
            raise  # the caller's connection: theirs to handle

    async def _execute(self, query: str, args: tuple[Any, ...]) -> None:
        """Run an enqueue statement on Soniq's own connections."""
        # Behind PgBouncer the kept connection's prepared statements and statement_timeout
        # would live on whichever server connection it last had: the pool it is.
        if self._enqueue_conn.busy or self._max_size < 2 or self.pgbouncer:
            pool = await self.pool()
            await pool.execute(query, *args, timeout=self.command_timeout)
            return
        await self._enqueue_conn.execute(query, args)

    @property
    def control(self) -> ControlStore:
        """Job control's statements (unique jobs, snooze, cancel, queue controls)."""
        if self._control is None:
            from .control_store import ControlStore

            self._control = ControlStore(self)
        return self._control

    # -- inspection ------------------------------------------------------------------------
    async def get_job(self, job_id: str) -> JobInfo | None:
        rows = await self.fetch(sql.GET_JOB, job_id)
        return job_row_to_dict(rows[0]) if rows else None

    async def dead_letters(self, limit: int) -> list[JobInfo]:
        return [job_row_to_dict(r) for r in await self.fetch(sql.LIST_DEAD_LETTERS, limit)]

    async def retry_dead_letters(self, ids: Sequence[str] | None) -> list[str]:
        rows = await self.fetch(sql.RETRY_DEAD_LETTERS, list(ids) if ids is not None else None)
        if rows:
            await self.fetch(sql.NOTIFY, "*")
        return [r[0] for r in rows]

    async def queue_status(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.fetch(sql.QUEUE_STATUS)]

    # -- for plugins, public through Soniq.queue_state and Soniq.fleet_role ------------------
    async def list_workers(self, lease_seconds: float) -> list[WorkerInfo]:
        rows = await self.fetch(sql_fleet.LIST_WORKERS, lease_seconds)
        return [WorkerInfo(**dict(r)) for r in rows]  # type: ignore[typeddict-item]

    async def job_stats(self, window_s: float, sample: int) -> list[JobStats]:
        rows = await self.fetch(sql_fleet.JOB_STATS, window_s, sample)
        out: list[JobStats] = []
        for r in rows:
            exact = r["sampled"] < sample
            span = window_s if exact else max(1.0, r["sampled_s"] or window_s)
            out.append(
                JobStats(
                    queue=r["queue"],
                    job_name=r["job_name"],
                    done=r["done"],
                    dead_lettered=r["dead_lettered"],
                    per_minute=60.0 * r["done"] / span,
                    exact=exact,
                    run_p50_s=r["run_p50_s"],
                    run_p95_s=r["run_p95_s"],
                    wait_p50_s=r["wait_p50_s"],
                )
            )
        return out

    async def queue_state(self, lease_seconds: float) -> QueueState:
        return QueueState.from_rows(await self.fetch(sql.QUEUE_METRICS, lease_seconds))

    async def hold_advisory_lock(self, key: int) -> asyncpg.Connection[Any] | None:
        """A connection of its own holding the session advisory lock ``key``, or None when
        another session holds it. Probed through the pool first, so that a process that does
        not get the lock opens no connection (a pooled one cannot be kept: the pool's close()
        would wait for it forever)."""
        pool = await self.pool()
        try:
            async with pool.acquire(timeout=self.connect_timeout) as probe:
                if self.pgbouncer:
                    async with probe.transaction():
                        if not await probe.fetchval(sql.TRY_ADVISORY_XACT_LOCK, key):
                            return None
                else:
                    if not await probe.fetchval(sql.TRY_ADVISORY_LOCK, key):
                        return None
                    await probe.fetchval(sql.ADVISORY_UNLOCK, key)
        except CONNECTION_ERRORS as exc:
            raise self.unavailable(exc) from exc
        conn = await self.connect()
        try:
            if self.pgbouncer:
                # PgBouncer hands a session to other clients between transactions, so a session
                # lock would outlive this client on a stranger's session. A transaction left
                # open keeps its server connection, and its lock, until this connection closes.
                await conn.execute("BEGIN")
                won = await conn.fetchval(sql.TRY_ADVISORY_XACT_LOCK, key)
            else:
                won = await conn.fetchval(sql.TRY_ADVISORY_LOCK, key)
        except BaseException:
            conn.terminate()
            raise
        if not won:
            await conn.close()
            return None
        return conn

    # -- tests -----------------------------------------------------------------------------
    async def shift_times(self, seconds: float) -> None:
        """Make ``seconds`` pass at once for the data Soniq stored (``soniq.testing.Clock``).

        Every statement of ``sql.TIME_SHIFTS`` moves its table's times ``seconds`` into the
        past, all in one transaction: jobs' due, creation, start, finish and revival times
        (and whatever a feature storing times of its own adds there, e.g. schedules' next
        run). Worker heartbeats stay. Meant for test databases: on a live system it would make
        delayed jobs and retries run early.
        """
        pool = await self.pool()
        try:
            async with pool.acquire() as conn, conn.transaction():
                for statement in sql.TIME_SHIFTS:
                    await conn.execute(statement, float(seconds), timeout=self.command_timeout)
        except CONNECTION_ERRORS as exc:
            raise self.unavailable(exc) from exc

    async def erase_all(self) -> None:
        """Empty every Soniq table but the schema version: jobs, workers, and whatever later
        features store. For test databases only (the ``soniq_database`` fixture)."""
        tables = [r[0] for r in await self.fetch(sql.DATA_TABLES)]
        if tables:
            await self.fetch(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")


async def _rollback_only(conn: asyncpg.Connection[Any]) -> None:
    """Reset for connections going back to the pool.

    asyncpg's default reset sends ``RESET ALL; UNLISTEN *; CLOSE ALL; ...`` on every release,
    a second round trip for each enqueue and each worker round trip. asyncpg already rolls back
    a transaction left open before calling this; that is all Soniq's own statements need (its
    LISTEN runs on a connection outside the pool, its locks are transaction-scoped). Code that
    borrows ``app.pool()`` connections should likewise not leave session state behind.
    """


def job_row_to_dict(row: asyncpg.Record) -> JobInfo:
    out: Any = dict(row)
    out["args"] = json.loads(out["args"])
    out["result"] = json.loads(out["result"]) if out["result"] is not None else None
    out["status"] = JobStatus(out["status"])
    out["errors"] = parse_errors(out.get("errors"))
    tc = out.get("trace_context")
    out["trace_context"] = json.loads(tc) if tc else None
    return cast(JobInfo, out)


def parse_errors(text: str | None) -> list[ErrorEntry]:
    """The job's error history (``errors`` column), oldest first, times as datetimes."""
    if not text:
        return []
    entries: list[dict[str, Any]] = json.loads(text)
    for entry in entries:
        entry["at"] = datetime.fromisoformat(entry["at"])
    return cast(list[ErrorEntry], entries)
