"""The application object: registry, middleware chain, hooks, enqueue, and starting workers.

It stays thin: SQL lives in :mod:`soniq.sql` and the ``sql_*`` modules beside it, run by the store
modules (:class:`soniq.store.Store` and those DEVELOPERS.md lists), the worker in
:mod:`soniq.worker`, the chain in :mod:`soniq.middleware`; reading and managing jobs
(``get_job``, dead letters, ``list_jobs``...) is the mixin :mod:`soniq.management`, queue and
fleet operations the mixin :mod:`soniq.operations`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from .backoff import Backoff, as_backoff
from .control import check_max_snoozes
from .database import resolve_url
from .errors import ConfigurationError, JobArgumentsError
from .hooks import Hooks
from .instrumentation import instrument
from .logs.failures import FailureLogMiddleware
from .management import ManagesJobs
from .middleware import EnqueueContext, EnqueueNext, MiddlewareChain, PendingJob
from .operations import OperatesQueues
from .placement import new_job_id as new_job_id
from .placement import place
from .registry import JobRegistry, JobSpec, TraceParent, make_spec
from .settings import Settings, load_settings
from .store import Store
from .sync_enqueue import EnqueuesSync, SyncEnqueuer
from .unique import EnqueueResult, Unique, as_unique, key_for

if TYPE_CHECKING:
    from .schedules import Scheduler
    from .worker import Worker

F = TypeVar("F", bound=Callable[..., Any])


class Soniq(ManagesJobs, OperatesQueues, EnqueuesSync):
    """A job queue in PostgreSQL.

    ``database_url`` comes from the argument, else ``SONIQ_DATABASE_URL``, else an embedded
    PostgreSQL in a per-user folder. Other settings: see :class:`soniq.settings.Settings`.
    Nothing connects until the first call that needs the database.
    """

    def __init__(self, database_url: str | None = None, **settings: Any) -> None:
        self.settings: Settings = load_settings({"database_url": database_url, **settings})
        self.registry = JobRegistry()
        self.middleware = MiddlewareChain()
        self.middleware.add_builtin(FailureLogMiddleware())  # failures show with no telemetry on
        self.workers: list[Worker] = []
        # One bound method for the app's life: the chain's compiled enqueue side is keyed on it,
        # and handed back as is when no layer wraps enqueues (the fast path below).
        self._write_call: EnqueueNext = self._write
        # What the enqueue side ends in: the database writer, or one soniq.testing sets.
        self._writer: EnqueueNext = self._write_call
        self._scheduler: Scheduler | None = None
        self._connect_with(self.settings)

    def _connect_with(self, s: Settings) -> None:
        """Build the store (and enqueue_sync's side) from the connection settings in ``s``."""
        data_dir = s.data_dir
        if s.database_url:
            # Checked now, not at first use: a malformed URL fails where it is written.
            resolved = resolve_url(None, s.database_url, data_dir)
            self._store = self._make_store(lambda: resolved)
        else:
            self._store = self._make_store(lambda: resolve_url(None, None, data_dir))
        default = getattr(self, "_sync", None)
        self._sync = SyncEnqueuer(self._store, self.middleware, max_size=max(s.pool_max_size, 1))
        if default is not None:
            self._sync.default_connection = default.default_connection

    def _make_store(self, resolver: Callable[[], tuple[str, str]]) -> Store:
        s = self.settings
        return Store(
            resolver,
            min_size=s.pool_min_size,
            max_size=max(s.pool_max_size, s.pool_min_size),
            connect_timeout=s.connect_timeout,
            command_timeout=s.command_timeout,
            schema=s.db_schema,
            pgbouncer=s.pgbouncer,
            listen_url=s.listen_database_url,
        )

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Soniq:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop running workers and close the connection pool."""
        for worker in list(self.workers):
            worker.stop()
        await self._close_management()
        self._sync.close()
        await self._store.close()

    def configure(self, **settings: Any) -> None:
        """Change settings after construction (the CLI's flags override the app's; the Django
        contrib sets the database from Django's). Connection settings (the URL, pool, schema,
        pgbouncer...) can change only until the app first connects."""
        current = self.settings.model_dump(exclude_unset=True)
        new = load_settings({**current, **settings})
        changed = {k for k in _CONNECTION_SETTINGS if getattr(new, k) != getattr(self.settings, k)}
        if changed and self._store.url is not None:
            raise ConfigurationError(
                f"Cannot change {', '.join(sorted(changed))} of a Soniq app that has connected; "
                f"configure it before its first use"
            )
        self.settings = new
        if changed:
            self._connect_with(new)

    async def setup(self) -> None:
        """Create or migrate the Soniq tables (idempotent, safe to run concurrently)."""
        await self._store.setup()

    async def start(self) -> None:
        """Connect and check the schema now, so that an unreachable database or a missing
        ``soniq setup`` fails at start-up rather than at the first enqueue."""
        await self._store.check_schema()

    @property
    def database_url(self) -> str | None:
        """The masked URL in use, once connected."""
        return self._store.display_url if self._store.url else None

    async def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        """The asyncpg pool Soniq uses (created on first use)."""
        return await self._store.pool()

    # -- jobs ------------------------------------------------------------------------------
    def job(
        self,
        *,
        name: str | None = None,
        queue: str = "default",
        max_retries: int = 3,
        priority: int = 0,
        timeout: float | None = None,
        retry_backoff: Backoff | float | None = None,
        trace_parent: TraceParent | None = None,
        unique: bool | Unique | None = None,
        max_snoozes: int | None = None,
    ) -> Callable[[F], F]:
        """Register a job: ``@app.job()`` or ``@app.job(queue="emails", max_retries=5)``.

        ``unique``: True, or :class:`soniq.Unique`, to dedupe enqueues (docs/job-control.md);
        ``max_snoozes``: how often the job may return :class:`soniq.Snooze` before it is
        dead-lettered (None: no limit).
        """
        backoff = as_backoff(retry_backoff)
        unique_rule = as_unique(unique)
        snooze_limit = check_max_snoozes(max_snoozes)

        def decorate(func: F) -> F:
            spec = make_spec(
                func,
                name=name,
                queue=queue,
                max_retries=max_retries,
                priority=priority,
                timeout=timeout,
                backoff=backoff,
                trace_parent=trace_parent,
            )
            if unique_rule is not None or snooze_limit is not None:
                spec = dataclasses.replace(spec, unique=unique_rule, max_snoozes=snooze_limit)
            self.registry.add(spec)
            return func

        if callable(name):
            raise TypeError("Use @app.job() with parentheses")
        return decorate

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        timezone: str | None = None,
        schedule_args: dict[str, Any] | None = None,
        schedule_name: str | None = None,
        missed: str = "latest",
        overlap: bool = True,
        jitter: float = 0.0,
        **job_options: Any,
    ) -> Callable[[F], F]:
        """Register a job and a schedule for it: ``@app.periodic(cron="30 9 * * mon-fri",
        timezone="Europe/Berlin")`` or ``@app.periodic(every=30)``; any ``@app.job`` option
        too. Every worker fires it; see docs/schedules.md."""
        from .schedules import make_schedule

        register = self.job(**job_options)

        def decorate(func: F) -> F:
            known = {id(s.func) for s in self.registry}
            register(func)
            spec = self._spec_of(func)
            try:
                schedule = make_schedule(
                    spec,
                    name=schedule_name,
                    cron=cron,
                    every=every,
                    timezone_name=timezone,
                    args=schedule_args,
                    missed=missed,
                    overlap=overlap,
                    jitter=jitter,
                    source="code",
                )
                self.scheduler.declare(schedule)
            except Exception:
                if id(func) not in known:  # a refused schedule leaves no job behind either
                    self.registry.remove(spec.name)
                raise
            return func

        return decorate

    @property
    def scheduler(self) -> Scheduler:
        """Schedules in the database: add, pause, resume, remove, trigger, get, list."""
        if self._scheduler is None:
            from .schedules import Scheduler

            self._scheduler = Scheduler(self)
        return self._scheduler

    def _get_job_registry(self) -> JobRegistry:
        return self.registry

    # -- hooks -----------------------------------------------------------------------------
    @property
    def hooks(self) -> Hooks:
        """The registered hooks (the chain's innermost layer), for reading."""
        return self.middleware.hooks

    def before_job(self, func: F) -> F:
        """Run ``func(job_name, job_id, attempt)`` before each job function call."""
        self.middleware.add_hook("before_job", func)
        return func

    def after_job(self, func: F) -> F:
        """Run ``func(job_name, job_id, duration_ms)`` after each successful job call."""
        self.middleware.add_hook("after_job", func)
        return func

    def on_error(self, func: F) -> F:
        """Run ``func(job_name, job_id, error, attempt)`` when a job call raises."""
        self.middleware.add_hook("on_error", func)
        return func

    # -- instrumentation -------------------------------------------------------------------
    def instrument(
        self, *, otel: Any = False, prometheus: Any = False, logs: Any = False, **others: Any
    ) -> None:
        """Turn on telemetry layers: tracing (``otel``), ``prometheus`` metrics, structured
        ``logs``, or any other installed package's (``sentry=True``), each found by name among
        the ``soniq.instrumentations`` entry points. Each value is True (defaults), a config
        object or a dict of its options; a false value leaves that one alone. Calling again with
        no config or an equal one changes nothing; a different config replaces the layer."""
        instrument(self, {"otel": otel, "logs": logs, "prometheus": prometheus, **others})

    # -- enqueue ---------------------------------------------------------------------------
    async def enqueue(
        self,
        job: str | Callable[..., Any],
        *,
        queue: str | None = None,
        priority: int | None = None,
        scheduled_at: datetime | timedelta | float | None = None,
        connection: Any = None,
        dedup_key: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Write one job; returns its id. With ``connection=`` (asyncpg, psycopg
        ``AsyncConnection``, SQLAlchemy ``AsyncSession``/``AsyncConnection``: see
        :mod:`soniq.connections`), inside the caller's transaction.

        A unique job (``@app.job(unique=...)``, or ``dedup_key=`` for this call) that meets an
        existing one returns the existing job's id; ``enqueue_result`` says whether it did.
        """
        pending = self._one(job, kwargs, queue, priority, scheduled_at, dedup_key)
        call = self.middleware.enqueue_call(self._writer)
        # No enqueue middleware and the database writer: no context to build (unique jobs take
        # the writer's own path, through the context).
        if call is self._write_call and pending.unique is None:
            await self._store.insert((pending,), connection)
        else:
            await call(EnqueueContext([pending], batch=False, connection=connection))
        return pending.id

    async def enqueue_result(
        self,
        job: str | Callable[..., Any],
        *,
        queue: str | None = None,
        priority: int | None = None,
        scheduled_at: datetime | timedelta | float | None = None,
        connection: Any = None,
        dedup_key: str | None = None,
        **kwargs: Any,
    ) -> EnqueueResult:
        """As ``enqueue``, returning an :class:`EnqueueResult`: the id, and whether the job was
        deduplicated (the id is then the existing job's) or replaced the existing job's
        arguments and due time (``on_conflict="replace"``)."""
        pending = self._one(job, kwargs, queue, priority, scheduled_at, dedup_key)
        call = self.middleware.enqueue_call(self._writer)
        await call(EnqueueContext([pending], batch=False, connection=connection))
        return EnqueueResult(pending.id, pending.deduplicated, pending.replaced)

    async def enqueue_many(
        self,
        job: str | Callable[..., Any],
        kwargs_list: Iterable[Mapping[str, Any]],
        *,
        queue: str | None = None,
        priority: int | None = None,
        scheduled_at: datetime | timedelta | float | None = None,
        connection: Any = None,
    ) -> list[str]:
        """Write a batch of one job in one statement; returns the ids in order."""
        jobs = self._pending_many(job, kwargs_list, queue, priority, scheduled_at)
        if jobs:
            call = self.middleware.enqueue_call(self._writer)
            await call(EnqueueContext(jobs, batch=True, connection=connection))
        return [j.id for j in jobs]

    def _pending_many(
        self,
        job: str | Callable[..., Any],
        kwargs_list: Iterable[Mapping[str, Any]],
        queue: str | None,
        priority: int | None,
        scheduled_at: datetime | timedelta | float | None,
    ) -> list[PendingJob]:
        spec = self._spec_of(job)
        queue_, priority_, at, delay = place(spec, queue, priority, scheduled_at)
        jobs = []
        items = kwargs_list if isinstance(kwargs_list, Sequence) else list(kwargs_list)
        rand = os.urandom(10 * len(items)).hex()
        for i, kwargs in enumerate(items):
            if type(kwargs) is not dict and not isinstance(kwargs, Mapping):
                raise JobArgumentsError(
                    f"enqueue_many({spec.name!r}, ...): item {i} is {type(kwargs).__name__}, "
                    f"expected a dict of keyword arguments"
                )
            args = kwargs if type(kwargs) is dict else dict(kwargs)
            args_json = spec.bind(args)
            job_id = new_job_id(rand[20 * i : 20 * i + 20])
            pending = PendingJob(job_id, spec, queue_, args_json, priority_, at, delay)
            if spec.unique is not None:
                pending.unique = key_for(spec.name, spec.unique, args, None)
            jobs.append(pending)
        return jobs

    def _spec_of(self, job: str | Callable[..., Any]) -> JobSpec:
        if isinstance(job, str):
            return self.registry.spec(job)
        for spec in self.registry:
            if spec.func is job:
                return spec
        for spec in self.registry:  # registered wrapped (soniq.contrib.django's sync jobs)
            if getattr(spec.func, "__wrapped__", None) is job:
                return spec
        raise JobArgumentsError(
            f"{getattr(job, '__qualname__', job)!r} is not a registered job; decorate it with "
            f"@app.job() on this Soniq app, or pass the job's name"
        )

    def _one(
        self,
        job: str | Callable[..., Any],
        kwargs: dict[str, Any],
        queue: str | None,
        priority: int | None,
        scheduled_at: datetime | timedelta | float | None,
        dedup_key: str | None,
    ) -> PendingJob:
        """The checked pending job of one ``enqueue``/``enqueue_result`` call, with its unique
        key when the job (or ``dedup_key``) asks for one."""
        spec = self._spec_of(job)
        pending = self._pending(spec, kwargs, queue, priority, scheduled_at)
        if spec.unique is not None or dedup_key is not None:
            pending.unique = key_for(spec.name, spec.unique or _UNIQUE, kwargs, dedup_key)
        return pending

    def _pending(
        self,
        spec: JobSpec,
        kwargs: dict[str, Any],
        queue: str | None,
        priority: int | None,
        scheduled_at: datetime | timedelta | float | None,
    ) -> PendingJob:
        queue_, priority_, at, delay = place(spec, queue, priority, scheduled_at)
        return PendingJob(new_job_id(), spec, queue_, spec.bind(kwargs), priority_, at, delay)

    def _test_writer(self) -> EnqueueNext | None:
        """The writer soniq.testing set, if any (enqueue_sync runs the chain into it)."""
        return None if self._writer is self._write_call else self._writer

    @property
    def writer(self) -> EnqueueNext:
        """The enqueue side's innermost step: what stores the jobs (the database).

        :mod:`soniq.testing` sets another one (record the jobs, or run them at once) so that an
        enqueue in a test still passes through every enqueue middleware; setting None puts the
        database writer back.
        """
        return self._writer

    @writer.setter
    def writer(self, write: EnqueueNext | None) -> None:
        self._writer = self._write_call if write is None else write

    async def _write(self, ctx: EnqueueContext) -> None:
        if ctx.jobs and ctx.jobs[0].unique is not None:
            await self._store.control.insert_unique(ctx.jobs, ctx.connection)
        else:
            await self._store.insert(ctx.jobs, ctx.connection)

    # -- workers ---------------------------------------------------------------------------
    def worker(self, **options: Any) -> Worker:
        from .worker import Worker

        return Worker(self, **options)

    async def run_worker(
        self,
        concurrency: int | None = None,
        queues: list[str] | None = None,
        run_once: bool = False,
        *,
        install_signal_handlers: bool = True,
    ) -> None:
        """Run a worker until stopped (SIGTERM/SIGINT) or, with ``run_once``, until idle."""
        worker = self.worker(
            concurrency=concurrency,
            queues=queues,
            run_once=run_once,
            install_signal_handlers=install_signal_handlers,
        )
        await worker.run()

    def _worker_started(self, worker: Worker) -> None:
        self.workers.append(worker)

    def _worker_stopped(self, worker: Worker) -> None:
        if worker in self.workers:
            self.workers.remove(worker)


# The rule of an enqueue(dedup_key=...) for a job declared without one.
_UNIQUE = Unique()

# Settings the store is built from (see Soniq.configure).
_CONNECTION_SETTINGS = (
    "database_url",
    "data_dir",
    "pool_min_size",
    "pool_max_size",
    "connect_timeout",
    "command_timeout",
    "db_schema",
    "pgbouncer",
    "listen_database_url",
)
