"""``soniq jobs``: list, show, retry, cancel and delete jobs from the shell.

An action on 5 or more jobs asks first; without a terminal to ask on it refuses unless given
``--yes``, so a script never changes thousands of jobs by surprise.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from .cli_common import _app_from, _run, app_option, url_option
from .job_filters import STATUSES, job_id
from .jobs import JobInfo
from .management import ManagesJobs

# Asking starts at this many jobs.
ASK_FROM = 5


@click.group(
    "jobs",
    epilog="""\b
Examples:
  soniq jobs list --status dead_letter --app myapp.jobs:app
  soniq jobs show 0193c2a4-5e1f-7a2b-9c3d-4e5f60718293
  soniq jobs retry --status dead_letter --name myapp.jobs.send_email --dry-run
""",
)
def jobs() -> None:
    """List, inspect, retry, cancel and delete jobs."""


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def _one_line(text: str | None, width: int) -> str:
    if not text:
        return "-"
    line = text.strip().splitlines()[0] if text.strip() else "-"
    return line if len(line) <= width else line[: width - 1] + "…"


@jobs.command(
    "list",
    epilog="""\b
Examples:
  soniq jobs list --app myapp.jobs:app
  soniq jobs list --queue emails --status queued,processing --limit 20
  soniq jobs list --status dead_letter --json
""",
)
@app_option
@url_option
@click.option("--queue", help="Only this queue.")
@click.option(
    "--status",
    help=f"Only these states, comma-separated: {', '.join(STATUSES)}.",
)
@click.option("--name", "job_name", help="Only jobs of this name.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per job).")
def list_command(
    app_path: str | None,
    database_url: str | None,
    queue: str | None,
    status: str | None,
    job_name: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Jobs newest first."""

    async def go() -> list[JobInfo]:
        async with _app_from(app_path, database_url) as app:
            return await app.list_jobs(queue=queue, status=status, job_name=job_name, limit=limit)

    rows = _run(go)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    if not rows:
        click.echo("No jobs match.")
        return
    click.echo(
        f"{'id':<36}  {'status':<11}  {'name':<24}  {'queue':<12}  {'tries':>5}  "
        f"{'created':<25}  last error"
    )
    for row in rows:
        click.echo(
            f"{row['id']:<36}  {row['status']:<11}  {row['job_name']:<24}  {row['queue']:<12}  "
            f"{row['attempts']:>2}/{row['max_attempts']:<2}  {_when(row['created_at']):<25}  "
            f"{_one_line(row['last_error'], 60)}"
        )


@jobs.command(
    "show",
    epilog="""\b
Examples:
  soniq jobs show 0193c2a4-5e1f-7a2b-9c3d-4e5f60718293
  soniq jobs show 0193c2a4-5e1f-7a2b-9c3d-4e5f60718293 --json
""",
)
@app_option
@url_option
@click.argument("job", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def show_command(app_path: str | None, database_url: str | None, job: str, as_json: bool) -> None:
    """Every field of a job and every failed attempt."""
    try:
        wanted = job_id(job)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ID") from None

    async def go() -> JobInfo | None:
        async with _app_from(app_path, database_url) as app:
            return await app.get_job(wanted)

    found = _run(go)
    if found is None:
        raise click.ClickException(f"no job with id {wanted}")
    row: dict[str, Any] = dict(found)
    if as_json:
        click.echo(json.dumps(row, default=str, indent=2))
        return
    errors = row.pop("errors")
    traceback = row.pop("traceback")
    for key, value in row.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        click.echo(f"{key + ':':<14}{'-' if value is None else value}")
    if not errors:
        click.echo("errors:       none")
    for entry in errors:
        click.echo(
            f"\nattempt {entry['attempt']} at {_when(entry['at'])} on {entry['worker_id'] or '?'}: "
            f"{entry['error_type']}: {entry['message']}"
        )
        if entry.get("traceback"):
            click.echo("    " + entry["traceback"].rstrip().replace("\n", "\n    "))
    if traceback and not errors:
        click.echo("\ntraceback:\n" + traceback.rstrip())


def _action_command(action: str, past: str, applies: str) -> click.Command:
    @click.command(
        action,
        help=f"{action.capitalize()} jobs by id, or every job matching the filters "
        f"({applies}). 5 or more jobs: asks first; without a terminal, only with --yes.",
        epilog=f"""\b
Examples:
  soniq jobs {action} 0193c2a4-5e1f-7a2b-9c3d-4e5f60718293
  soniq jobs {action} --queue emails --name myapp.jobs.send_email --dry-run
  soniq jobs {action} --status {"queued" if action == "cancel" else "dead_letter"} --yes
""",
    )
    @app_option
    @url_option
    @click.argument("ids", nargs=-1, metavar="[ID]...")
    @click.option("--queue", help="Every job of this queue.")
    @click.option("--status", help="Every job in these states, comma-separated.")
    @click.option("--name", "job_name", help="Every job of this name.")
    @click.option("--all", "every", is_flag=True, help="Every job (when no other filter).")
    @click.option("--dry-run", is_flag=True, help="Count the jobs; change nothing.")
    @click.option("--yes", "-y", is_flag=True, help="Do not ask.")
    def command(
        app_path: str | None,
        database_url: str | None,
        ids: Sequence[str],
        queue: str | None,
        status: str | None,
        job_name: str | None,
        every: bool,
        dry_run: bool,
        yes: bool,
    ) -> None:
        filtered = any(v is not None for v in (queue, status, job_name)) or every
        if ids and filtered:
            raise click.UsageError("give job ids or filters (--queue/--status/--name/--all)")
        if not ids and not filtered:
            raise click.UsageError(
                "give job ids, or filters (--queue/--status/--name), or --all for every job"
            )
        try:
            wanted = [job_id(i) for i in ids]
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="ID") from None
        filters: dict[str, Any] = {"queue": queue, "status": status, "job_name": job_name}
        if every:
            filters["all"] = True

        async def count(app: ManagesJobs) -> int:
            if wanted:
                return len(wanted)
            return await app.bulk_jobs(action, dry_run=True, **filters)

        async def go() -> tuple[int, int, list[str]]:
            async with _app_from(app_path, database_url) as app:
                n = await count(app)
                if dry_run or n == 0 or not _confirmed(action, n, yes):
                    return n, -1, []
                if not wanted:
                    return n, await app.bulk_jobs(action, **filters), []
                act = {"retry": app.retry_job, "cancel": app.cancel_job, "delete": app.delete_job}
                missed = [i for i in wanted if not await act[action](i)]
                return n, len(wanted) - len(missed), missed

        n, changed, missed = _run(go)
        if changed < 0 and not dry_run and n:
            return  # the person said no
        if dry_run:
            click.echo(f"Would {action} {n} job(s) (dry run: nothing changed).")
            return
        if n == 0:
            click.echo(f"No job to {action} ({applies}).")
            return
        click.echo(f"{past.capitalize()} {changed} job(s).")
        if missed:
            raise click.ClickException(
                f"not {past} (no such job, or not {applies}): {', '.join(missed)}"
            )

    return command


def _confirmed(action: str, n: int, yes: bool) -> bool:
    """Runs inside the event loop, but click.confirm only blocks on the terminal, where a
    person answers; nothing else is running meanwhile."""
    if yes or n < ASK_FROM:
        return True
    if not sys.stdin.isatty():
        raise click.ClickException(
            f"this would {action} {n} jobs; there is no terminal to ask on, so pass --yes to "
            f"go ahead (or --dry-run to count them)"
        )
    if click.confirm(f"{action.capitalize()} {n} jobs?", default=False):
        return True
    click.echo("Nothing changed.")
    return False


jobs.add_command(_action_command("retry", "retried", "dead-lettered, cancelled or done"))
jobs.add_command(_action_command("cancel", "cancelled", "queued"))
jobs.add_command(_action_command("delete", "deleted", "not running"))
