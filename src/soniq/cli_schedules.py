"""``soniq schedules``: list, pause, resume, trigger and remove schedules.

The database URL is all it needs (``--database-url`` or ``SONIQ_DATABASE_URL``): schedules live
in PostgreSQL, so operators can pause one without the app's code. ``--app`` uses an app's URL,
and lets ``trigger`` go through that app's enqueue chain (its tracing, for one).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from .cli_common import _app_from, _run, app_option, url_option


@click.group(
    "schedules",
    epilog="""\b
Examples:
  soniq schedules list --database-url postgresql://localhost/myapp
  soniq schedules pause nightly-report
  soniq schedules trigger nightly-report --app myapp.jobs:app
""",
)
def schedules() -> None:
    """Periodic jobs: list, pause, resume, trigger, remove."""


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


@schedules.command(
    "list",
    epilog="""\b
Examples:
  soniq schedules list --app myapp.jobs:app
  soniq schedules list --json
""",
)
@app_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def schedules_list(app_path: str | None, database_url: str | None, as_json: bool) -> None:
    """Every schedule, with its next and last fire time. ORPHANED: no live worker knows its
    job, so nothing fires it."""

    async def go() -> list[dict[str, Any]]:
        async with _app_from(app_path, database_url) as app:
            return await app.scheduler.list()

    rows = _run(go)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("No schedules.")
        return
    click.echo(f"{'name':<24} {'job':<28} {'timetable':<28} {'state':<9} {'next run':<26} last run")
    for row in rows:
        timetable = (
            f"{row['cron']} ({row['timezone']})" if row["cron"] else f"every {row['every']:g}s"
        )
        state = "paused" if row["paused"] else "ORPHANED" if row["orphaned"] else "active"
        click.echo(
            f"{row['name']:<24} {row['job_name']:<28} {timetable:<28} {state:<9} "
            f"{_when(row['next_run_at']):<26} {_when(row['last_run_at'])}"
        )


def _operation(verb: str, past: str, help_text: str) -> None:
    @schedules.command(
        verb,
        help=help_text,
        epilog=f"""\b
Examples:
  soniq schedules {verb} nightly-report
  soniq schedules {verb} nightly-report --database-url postgresql://localhost/myapp
""",
    )
    @app_option
    @url_option
    @click.argument("name")
    def command(app_path: str | None, database_url: str | None, name: str) -> None:
        async def go() -> None:
            async with _app_from(app_path, database_url) as app:
                await getattr(app.scheduler, verb)(name)

        _run(go)
        click.echo(f"Schedule {name} {past}.")


_operation("pause", "paused", "Stop firing NAME until it is resumed.")
_operation("resume", "resumed", "Fire NAME again, from its next fire time after now.")
_operation(
    "remove",
    "removed",
    "Delete NAME. One declared with @app.periodic comes back when a worker with it starts.",
)


@schedules.command(
    "trigger",
    epilog="""\b
Examples:
  soniq schedules trigger nightly-report --app myapp.jobs:app
  soniq schedules trigger nightly-report --database-url postgresql://localhost/myapp
""",
)
@app_option
@url_option
@click.argument("name")
def schedules_trigger(app_path: str | None, database_url: str | None, name: str) -> None:
    """Run NAME's job once now, outside its timetable; prints the job id."""

    async def go() -> str:
        async with _app_from(app_path, database_url) as app:
            return await app.scheduler.trigger(name)

    click.echo(_run(go))
