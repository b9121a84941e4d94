"""``soniq queues``: pause, resume and limit queues for the whole fleet (stored in PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from .app import Soniq
from .control import QueueControl
from .errors import SoniqError

T = TypeVar("T")
N = TypeVar("N", int, float)

_app_option = click.option(
    "--app", "app_path", metavar="MODULE:APP", help="Soniq app to use (for its database URL)."
)
_url_option = click.option(
    "--database-url",
    envvar="SONIQ_DATABASE_URL",
    help="PostgreSQL URL (default: SONIQ_DATABASE_URL, else the embedded server).",
)


def _with_app(
    app_path: str | None, database_url: str | None, use: Callable[[Soniq], Awaitable[T]]
) -> T:
    from .cli_common import _app_from  # the main CLI's app loading

    async def go() -> T:
        async with _app_from(app_path, database_url) as app:
            return await use(app)

    try:
        return asyncio.run(go())
    except SoniqError as exc:
        raise click.ClickException(str(exc)) from exc


def describe(control: QueueControl) -> str:
    parts = ["paused" if control.paused else "running"]
    if control.concurrency is not None:
        parts.append(f"limit {control.concurrency}")
    if control.rate is not None:
        parts.append(f"rate {control.rate:g}/s")
    return ", ".join(parts)


def _or_none(value: str, parse: Callable[[str], N], expected: str) -> N | None:
    """A limit argument: ``parse(value)``, or None for 'none' (which removes the limit)."""
    if value.lower() == "none":
        return None
    try:
        return parse(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not {expected} or 'none'") from None


def _set(
    app_path: str | None,
    database_url: str | None,
    change: Callable[[Soniq], Awaitable[QueueControl]],
) -> None:
    """Apply one queue control and print the queue's controls as they now stand."""
    done = _with_app(app_path, database_url, change)
    click.echo(f"{done.name}: {describe(done)}")


@click.group(
    "queues",
    epilog="""\b
Examples:
  soniq queues list
  soniq queues pause emails
  soniq queues limit emails 5
  soniq queues rate emails 20
""",
)
def queues() -> None:
    """Pause, resume and limit queues across every worker."""


@queues.command(
    "list",
    epilog="""\b
Examples:
  soniq queues list --json
""",
)
@_app_option
@_url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def queues_list(app_path: str | None, database_url: str | None, as_json: bool) -> None:
    """Queues with controls: paused, concurrency limit, rate limit."""
    rows = _with_app(app_path, database_url, lambda app: app.queues())
    if as_json:
        click.echo(json.dumps([_as_dict(r) for r in rows], indent=2))
    elif not rows:
        click.echo("No queue has controls.")
    for row in [] if as_json else rows:
        click.echo(f"{row.name:<20}{describe(row)}")


@queues.command(
    "pause",
    epilog="""\b
Examples:
  soniq queues pause emails --app myapp.jobs:app
""",
)
@_app_option
@_url_option
@click.argument("name")
def queues_pause(app_path: str | None, database_url: str | None, name: str) -> None:
    """Stop claiming jobs of NAME (running jobs finish; enqueues still work)."""
    _set(app_path, database_url, lambda app: app.pause_queue(name))


@queues.command(
    "resume",
    epilog="""\b
Examples:
  soniq queues resume emails
""",
)
@_app_option
@_url_option
@click.argument("name")
def queues_resume(app_path: str | None, database_url: str | None, name: str) -> None:
    """Claim jobs of NAME again."""
    _set(app_path, database_url, lambda app: app.resume_queue(name))


@queues.command(
    "limit",
    epilog="""\b
Examples:
  soniq queues limit emails 5
  soniq queues limit emails none
""",
)
@_app_option
@_url_option
@click.argument("name")
@click.argument("limit", metavar="N|none")
def queues_limit(app_path: str | None, database_url: str | None, name: str, limit: str) -> None:
    """At most N jobs of NAME running at once across all workers ('none' removes it)."""
    n = _or_none(limit, int, "a whole number; give N (1 or more)")
    _set(app_path, database_url, lambda app: app.set_queue_limit(name, n))


@queues.command(
    "rate",
    epilog="""\b
Examples:
  soniq queues rate emails 20
  soniq queues rate emails none
""",
)
@_app_option
@_url_option
@click.argument("name")
@click.argument("rate", metavar="PER_SECOND|none")
def queues_rate(app_path: str | None, database_url: str | None, name: str, rate: str) -> None:
    """At most PER_SECOND jobs of NAME started per second across all workers."""
    r = _or_none(rate, float, "a number; give jobs per second")
    _set(app_path, database_url, lambda app: app.set_queue_rate(name, r))


def _as_dict(control: QueueControl) -> dict[str, Any]:
    return {
        "name": control.name,
        "paused": control.paused,
        "concurrency": control.concurrency,
        "rate": control.rate,
        "updated_at": control.updated_at.isoformat() if control.updated_at else None,
    }
