"""What the ``soniq`` commands share: loading the app, running a coroutine, common options."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from .app import Soniq
from .errors import SoniqError

T = TypeVar("T")


def load_app(path: str) -> Soniq:
    """Import ``module:attribute`` (the current directory is importable)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(
            f"{path!r} should look like 'package.module:app'", param_hint="APP"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}", param_hint="APP") from exc
    except SoniqError as exc:
        # e.g. Soniq() at import time refusing SONIQ_DATABASE_URL or SONIQ_CONCURRENCY
        raise click.ClickException(f"{module_name}: {exc}") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, Soniq):
        raise click.BadParameter(
            f"{module_name}.{attr} is {type(app).__name__}, not a soniq.Soniq app", param_hint="APP"
        )
    return app


def _app_from(app_path: str | None, database_url: str | None) -> Soniq:
    if app_path:
        return load_app(app_path)
    return Soniq(database_url)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except SoniqError as exc:
        raise click.ClickException(str(exc)) from exc


app_option = click.option(
    "--app", "app_path", metavar="MODULE:APP", help="Soniq app to use (for its database URL)."
)
url_option = click.option(
    "--database-url",
    envvar="SONIQ_DATABASE_URL",
    help="PostgreSQL URL (default: SONIQ_DATABASE_URL, else the embedded server).",
)
