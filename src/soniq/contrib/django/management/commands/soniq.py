"""``python manage.py soniq <command>``: the ``soniq`` CLI for this project's app.

python manage.py soniq setup
python manage.py soniq worker --concurrency 4 --queues emails
python manage.py soniq status
python manage.py soniq dead-letter list
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

# The app as the CLI imports it, in this process or in the children of --processes: the
# module sets Django up first, as manage.py did here.
APP_PATH = "soniq.contrib.django.for_cli:app"
# Commands that take the app as their first argument; the others take --app.
_POSITIONAL = {"setup", "worker"}


class Command(BaseCommand):
    help = "Soniq's command line for this project: setup, worker, status, dead-letter."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("soniq_args", nargs=argparse.REMAINDER, metavar="COMMAND ...")

    def run_from_argv(self, argv: list[str]) -> None:
        # argv: manage.py soniq COMMAND ...; Django's own option parsing would take the
        # CLI's options for its own, so everything after "soniq" goes to the CLI as is.
        self.handle(soniq_args=argv[2:])

    def handle(self, *args: Any, **options: Any) -> None:
        from soniq.cli import cli

        argv = with_app(list(options["soniq_args"]))
        try:
            cli.main(args=argv, prog_name="manage.py soniq")
        except SystemExit as done:  # click ends every command so; call_command must return
            if done.code not in (0, None):
                raise


def with_app(argv: list[str]) -> list[str]:
    """``argv`` with this project's app where its command expects it."""
    if not argv or argv[0].startswith("-"):
        return argv  # --help, or options of the group
    if argv[0] in _POSITIONAL:
        return [argv[0], APP_PATH, *argv[1:]]
    if argv[0] == "dead-letter" and len(argv) > 1 and not argv[1].startswith("-"):
        return [*argv[:2], "--app", APP_PATH, *argv[2:]]
    return [argv[0], "--app", APP_PATH, *argv[1:]]
