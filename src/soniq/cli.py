"""The ``soniq`` command. click does the parsing, help text and errors."""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from . import instrumentation
from .cli_common import _app_from, _run, app_option, load_app, url_option
from .cli_jobs import jobs
from .cli_queues import describe, queues
from .cli_schedules import schedules
from .control import QueueControl
from .errors import SoniqError
from .jobs import JobInfo
from .logs import configure_logging

logger = logging.getLogger("soniq")


LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False)

MAIN_EPILOG = """\b
Examples:
  soniq setup myapp.jobs:app              create or migrate the tables
  soniq worker myapp.jobs:app -c 10       run a worker (its failures are logged)
  soniq status                            jobs per queue and state
  soniq jobs list --status dead_letter    jobs, with their whole ids
  soniq schedules list                    periodic jobs and their next run
  soniq dead-letter list                  failed jobs, with their whole ids
  soniq dead-letter retry --all           run them again
  soniq queues pause emails               stop claiming from a queue, fleet-wide
  soniq dashboard myapp.jobs:app          the web dashboard (pip install 'soniq[dashboard]')

MODULE:APP is the module that defines your jobs and the name of the Soniq instance in it, as
in `from myapp.jobs import app`. The database comes from --database-url, SONIQ_DATABASE_URL or
the app; without any, an embedded PostgreSQL. Each command's --help shows more.
"""


@click.group(epilog=MAIN_EPILOG)
@click.option(
    "--log-level", type=LEVELS, default="INFO", show_default=True, help="Python logging level."
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log format (default: SONIQ_LOG_FORMAT, else text).",
)
@click.pass_context
def cli(ctx: click.Context, log_level: str, log_format: str | None) -> None:
    """Soniq: background jobs in PostgreSQL."""
    fmt = log_format or os.environ.get("SONIQ_LOG_FORMAT", "text")
    ctx.obj = {"log_format": fmt, "log_level": log_level.upper()}
    try:
        configure_logging(fmt, log_level.upper())
    except ValueError as exc:  # a bad SONIQ_LOG_FORMAT or level
        raise click.UsageError(str(exc)) from None


@cli.command(
    epilog="""\b
Examples:
  soniq setup myapp.jobs:app
  soniq setup --database-url postgresql://user@db.example.com/myapp
  SONIQ_DATABASE_URL=postgresql://localhost/myapp soniq setup
"""
)
@click.argument("app_path", required=False, metavar="[MODULE:APP]")
@url_option
def setup(app_path: str | None, database_url: str | None) -> None:
    """Create or migrate the Soniq tables."""

    async def go() -> None:
        async with _app_from(app_path, database_url) as app:
            await app.setup()

    _run(go)
    click.echo("Soniq schema is up to date.")


@cli.command(
    epilog="""\b
Examples:
  soniq worker myapp.jobs:app
  soniq worker myapp.jobs:app --concurrency 20 --queues emails,default
  soniq worker myapp.jobs:app --processes 4 --metrics-port 9108 --instrument all
  soniq worker myapp.jobs:app --log-level WARNING --log-format json

Failed attempts are logged at WARNING and moves to the dead-letter queue at ERROR (with the
traceback) even with no --instrument; successes are logged only with --instrument logs.
"""
)
@click.argument("app_path", metavar="MODULE:APP")
@click.option("--concurrency", "-c", type=int, help="Jobs run at once per process.")
@click.option("--queues", "-q", help="Comma-separated queues to take (default: all).")
@click.option(
    "--processes",
    "-p",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes to run.",
)
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Serve /metrics on this port.")
@click.option("--metrics-host", help="Bind address for /metrics (default 127.0.0.1).")
@click.option("--lease-seconds", type=float, help="Seconds of silence before a worker is dead.")
@click.option("--grace-period", type=float, help="Seconds running jobs get on SIGTERM.")
@click.option(
    "--instrument",
    "instrument",
    multiple=True,
    metavar="NAME",
    help="Turn on telemetry (repeatable): otel, prometheus, logs, all (those three), or the "
    "name of another installed instrumentation.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log format (overrides the one given before the command).",
)
@click.option(
    "--log-level",
    type=LEVELS,
    default=None,
    help="Python logging level, e.g. WARNING to show only failures (default: INFO, or the "
    "level given before the command).",
)
@click.pass_context
def worker(
    ctx: click.Context,
    app_path: str,
    concurrency: int | None,
    queues: str | None,
    processes: int,
    metrics_port: int | None,
    metrics_host: str | None,
    lease_seconds: float | None,
    grace_period: float | None,
    instrument: Sequence[str],
    log_format: str | None,
    log_level: str | None,
) -> None:
    """Run a worker for the app at MODULE:APP (e.g. myapp.jobs:app)."""
    if log_format is not None or log_level is not None:
        ctx.obj["log_format"] = log_format or ctx.obj["log_format"]
        ctx.obj["log_level"] = (log_level or ctx.obj["log_level"]).upper()
        configure_logging(ctx.obj["log_format"], ctx.obj["log_level"])
    if concurrency is not None and concurrency < 1:
        raise click.BadParameter("must be a positive integer", param_hint="--concurrency")
    if processes > 1:
        sys.exit(_run_processes(processes, app_path, metrics_port, metrics_host))
    app = load_app(app_path)
    overrides: dict[str, Any] = {
        "metrics_port": metrics_port,
        "metrics_host": metrics_host,
        "lease_seconds": lease_seconds,
        "grace_period": grace_period,
        "log_format": ctx.obj["log_format"],
    }
    app.configure(**{k: v for k, v in overrides.items() if v is not None})
    wanted = set(instrument)
    # A metrics port from the flag, SONIQ_METRICS_PORT or the app's settings turns metrics on.
    serve_metrics = app.settings.metrics_port is not None
    if "all" in wanted:
        wanted = (wanted - {"all"}) | {"otel", "prometheus", "logs"}
    if serve_metrics:
        wanted.add("prometheus")
    try:
        app.instrument(**dict.fromkeys(sorted(wanted), True))
    except SoniqError as exc:
        raise click.BadParameter(str(exc), param_hint="--instrument") from exc
    queue_list = [q for q in queues.split(",") if q.strip()] if queues else None

    held: frozenset[str] = frozenset()

    async def go() -> None:
        nonlocal held
        try:
            worker = app.worker(concurrency=concurrency, queues=queue_list)
            await worker.run()
            held = worker.held_jobs
        finally:
            await app.close()

    _run(go)
    if held:
        # Threads still run those jobs and Python would wait for them at exit, long after
        # their lease ran out and another worker took them. End the process (and the threads)
        # now; exit hooks still run so telemetry is flushed.
        atexit._run_exitfuncs()
        logging.shutdown()
        os._exit(0)


def _run_processes(
    count: int, app_path: str, metrics_port: int | None, metrics_host: str | None
) -> int:
    """Start ``count`` copies of this command without ``--processes``; forward signals.

    With a metrics port (flag or setting), this process serves the children's metrics merged
    from one endpoint (prometheus_client's multiprocess mode) and reports the queue state
    once; the children serve nothing themselves.
    """
    children: list[subprocess.Popen[bytes]] = []
    signalled: list[int] = []

    def forward(sig: int, _frame: Any) -> None:
        signalled.append(sig)
        for child in children:
            if child.poll() is None:
                child.send_signal(sig)

    # Installed before anything starts: a signal meanwhile stops the children already started
    # and starts no more, and the metrics directory is still cleaned up.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    exporter = None
    try:
        app = load_app(app_path)  # fails here, once, rather than in each child
        app.configure(
            **{
                k: v
                for k, v in {"metrics_port": metrics_port, "metrics_host": metrics_host}.items()
                if v is not None
            }
        )
        env = dict(os.environ)
        if app.settings.metrics_port is not None:
            # The metrics port is the Prometheus instrumentation's: found by its entry point,
            # like app.instrument(prometheus=...), never imported by name.
            entry = instrumentation.find(["prometheus"])["prometheus"]
            prometheus: Any = instrumentation.load(entry)
            try:
                exporter = prometheus.serve_process_group(
                    app, app.settings.metrics_host, app.settings.metrics_port
                )
            except OSError as exc:
                raise click.ClickException(str(exc)) from exc
            env.update(exporter.child_env())
            logger.info(
                "Serving Prometheus metrics of %d worker processes on %s",
                count,
                exporter.url,
                extra={"event": "metrics.serving", "url": exporter.url},
            )
        args = _strip_processes(sys.argv[1:])
        for i in range(count):
            if signalled:
                break
            # Own sessions: a Ctrl-C at the terminal reaches the children once, through us,
            # not twice (a second SIGINT makes a worker exit at once).
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "soniq", *args],
                    env={**env, "SONIQ_WORKER_PROCESS_INDEX": str(i)},
                    start_new_session=True,
                )
            )
        codes = [0] * len(children)

        def reap(index: int, child: subprocess.Popen[bytes]) -> None:
            codes[index] = child.wait()
            if exporter is not None:
                exporter.process_exited(child.pid)  # its running jobs and slots are gone

        reapers = [
            threading.Thread(target=reap, args=(i, child), daemon=True)
            for i, child in enumerate(children)
        ]
        for reaper in reapers:
            reaper.start()
        for reaper in reapers:
            reaper.join()
        # A child killed by signal N reports -N; exit as a shell would (128 + N).
        return max((128 - code if code < 0 else code for code in codes), default=0)
    finally:
        if exporter is not None:
            exporter.close()


def _strip_processes(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--processes", "-p"):
            skip = True
            continue
        if arg.startswith("--processes="):
            continue
        out.append(arg)
    return out


@cli.command(
    epilog="""\b
Examples:
  soniq status --app myapp.jobs:app
  soniq status --database-url postgresql://localhost/myapp --json
"""
)
@app_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(app_path: str | None, database_url: str | None, as_json: bool) -> None:
    """Jobs per queue and status, and the age of the oldest ready job."""

    async def go() -> tuple[list[dict[str, Any]], list[QueueControl]]:
        async with _app_from(app_path, database_url) as app:
            return await app.queue_status(), await app.queues()

    rows, controls = _run(go)
    by_name = {c.name: c for c in controls if c.controlled}
    if as_json:
        for row in rows:
            control = by_name.get(row["queue"], QueueControl(row["queue"]))
            row.update(paused=control.paused, concurrency=control.concurrency, rate=control.rate)
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows and not by_name:
        click.echo("No jobs.")
        return
    cols = ["ready", "scheduled", "processing", "done", "dead_letter", "cancelled"]
    click.echo(
        f"{'queue':<20}" + "".join(f"{c:>12}" for c in cols) + f"{'oldest ready':>14}  control"
    )
    for row in rows:
        age = row["oldest_ready_age_s"]
        held = by_name.pop(row["queue"], None)
        click.echo(
            f"{row['queue']:<20}"
            + "".join(f"{row[c]:>12}" for c in cols)
            + f"{(f'{age:.1f}s' if age is not None else '-'):>14}"
            + (f"  {describe(held)}" if held else "")
        )
    for control in by_name.values():  # controlled queues holding no jobs
        click.echo(
            f"{control.name:<20}" + "".join(f"{0:>12}" for c in cols) + f"{'-':>14}"
            f"  {describe(control)}"
        )


@cli.group(
    "dead-letter",
    epilog="""\b
Examples:
  soniq dead-letter list --app myapp.jobs:app
  soniq dead-letter retry 0193c2a4-5e1f-7a2b-9c3d-4e5f60718293
  soniq dead-letter retry --all
""",
)
def dead_letter() -> None:
    """Inspect and retry jobs in the dead-letter queue."""


@dead_letter.command(
    "list",
    epilog="""\b
Examples:
  soniq dead-letter list --app myapp.jobs:app
  soniq dead-letter list --limit 20

Each job's line starts with its whole id, to give to `soniq dead-letter retry`; its attempts'
errors follow, indented.
""",
)
@app_option
@url_option
@click.option("--limit", type=int, default=100, show_default=True, help="Most jobs to list.")
def dead_letter_list(app_path: str | None, database_url: str | None, limit: int) -> None:
    """List dead-lettered jobs, newest first."""

    async def go() -> list[JobInfo]:
        async with _app_from(app_path, database_url) as app:
            return await app.list_dead_letters(limit)

    rows = _run(go)
    if not rows:
        click.echo("The dead-letter queue is empty.")
    for row in rows:
        finished: datetime | None = row["finished_at"]
        click.echo(
            f"{row['id']}  {row['job_name']}  queue={row['queue']}  attempts={row['attempts']}"
            f"  at={finished.isoformat() if finished else '-'}  error={row['last_error']}"
        )
        for entry in row["errors"]:  # every attempt's error, oldest first
            first_line = (entry["message"] or "").split("\n")[0]
            click.echo(
                f"    attempt {entry['attempt']} at {entry['at'].isoformat(timespec='seconds')}"
                f": {entry['error_type']}: {first_line}"
            )


@dead_letter.command(
    "retry",
    epilog="""\b
Examples:
  soniq dead-letter retry 0193c2a4-5e1f-7a2b-9c3d-4e5f60718293
  soniq dead-letter retry --all --app myapp.jobs:app
""",
)
@app_option
@url_option
@click.argument("ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead-lettered job.")
def dead_letter_retry(
    app_path: str | None, database_url: str | None, ids: tuple[str, ...], retry_all: bool
) -> None:
    """Put dead-lettered jobs back in their queues with fresh attempts."""
    if bool(ids) == retry_all:
        raise click.UsageError("give job ids or --all (not both)")

    async def go() -> list[str]:
        async with _app_from(app_path, database_url) as app:
            if retry_all:
                return await app.retry_all_dead_letters()
            done = []
            for job_id in ids:
                if await app.retry_dead_letter(job_id):
                    done.append(job_id)
            return done

    retried = _run(go)
    missing = sorted(set(ids) - set(retried))
    click.echo(f"Requeued {len(retried)} job(s).")
    if missing:
        raise click.ClickException(f"not in the dead-letter queue: {', '.join(missing)}")


cli.add_command(jobs)
cli.add_command(schedules)
cli.add_command(queues)


def add_plugin_commands(group: click.Group) -> None:
    """Subcommands that live in optional packages (``soniq dashboard``), declared in the
    ``soniq.commands`` entry-point group, so the core imports none of them. One whose extra
    is not installed still shows, and says what to install."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="soniq.commands"):
        if ep.name in group.commands:
            continue
        try:
            command = ep.load()
        except ImportError as exc:
            command = _missing_extra(ep.name, exc)
        group.add_command(command, ep.name)


def _missing_extra(name: str, exc: ImportError) -> click.Command:
    @click.command(name, help=f"(needs: pip install 'soniq[{name}]')")
    def missing() -> None:
        raise click.ClickException(
            f"`soniq {name}` needs its extra ({exc.name or exc} is missing): "
            f"pip install 'soniq[{name}]'"
        )

    return missing


def main() -> None:
    add_plugin_commands(cli)
    cli()
