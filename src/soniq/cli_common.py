"""What the ``soniq`` commands share: loading the app, running a coroutine, common options."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from .app import Soniq
from .errors import SoniqError

T = TypeVar("T")


def load_app(path: str) -> Soniq:
    """Import ``module:attribute`` (the current directory is importable).

    A newcomer's first command often names the app wrongly, so a wrong path says which part
    is wrong and how to fix it: the module is not found (a file path given for a module name,
    or not run from the folder that holds it), the module is found but raised while importing
    (its own error, with the file and line, never taken for "not found"), the attribute is
    missing, or it is not a :class:`Soniq` (both list the Soniq instances the module has).
    """
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(
            f"{path!r} should look like 'package.module:app' (a module, a colon, the name of "
            f"the Soniq instance in it), e.g. 'myapp.jobs:app'",
            param_hint="MODULE:APP",
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = _import_app_module(module_name)
    found = getattr(module, attr, _MISSING)
    apps = [name for name, value in vars(module).items() if isinstance(value, Soniq)]
    if found is _MISSING:
        raise click.BadParameter(
            f"module {module_name!r} ({_where(module)}) has no attribute {attr!r}; "
            + _apps_hint(module_name, apps),
            param_hint="MODULE:APP",
        )
    if not isinstance(found, Soniq):
        raise click.BadParameter(
            f"{module_name}:{attr} is a {type(found).__name__}, not a soniq.Soniq app; "
            + _apps_hint(module_name, apps),
            param_hint="MODULE:APP",
        )
    return found


_MISSING = object()


def _import_app_module(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only when the missing module is the one asked for (or a package on its way): an
        # import that fails inside the user's module is that module's error, reported below.
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise click.BadParameter(
                f"module {module_name!r} not found (no {exc.name!r} in the current directory "
                f"{os.getcwd()} or on sys.path); {_module_hint(module_name)}",
                param_hint="MODULE:APP",
            ) from None
        raise _import_failed(module_name, exc) from exc
    except SoniqError as exc:
        # e.g. Soniq() at import time refusing SONIQ_DATABASE_URL or SONIQ_CONCURRENCY
        raise click.ClickException(f"{module_name}: {exc}") from exc
    except Exception as exc:
        raise _import_failed(module_name, exc) from exc


def _import_failed(module_name: str, exc: BaseException) -> click.ClickException:
    """The module exists but raised while being imported: name the error and where it was."""
    place = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        place = f" at {exc.filename}:{exc.lineno}"
    elif exc.__traceback__ is not None:
        last = traceback.extract_tb(exc.__traceback__)[-1]
        place = f" at {last.filename}:{last.lineno}"
    return click.ClickException(
        f"module {module_name!r} was found, but importing it raised "
        f"{type(exc).__name__}: {exc}{place}"
    )


def _module_hint(module_name: str) -> str:
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        dotted = module_name.removesuffix(".py").replace(os.sep, ".").replace("/", ".")
        return f"give a module name, not a file path: {dotted.strip('.')!r}"
    return "run soniq from the folder that holds it, or add that folder to PYTHONPATH"


def _where(module: Any) -> str:
    return str(getattr(module, "__file__", None) or "a namespace package")


def _apps_hint(module_name: str, apps: list[str]) -> str:
    if not apps:
        return "it defines no soniq.Soniq instance at module level (app = Soniq(...))"
    return "its Soniq apps: " + ", ".join(f"{module_name}:{name}" for name in apps)


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
