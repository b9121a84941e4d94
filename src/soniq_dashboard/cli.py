"""``soniq dashboard MODULE:APP``: serve the dashboard with uvicorn.

Found by the ``soniq`` command through the ``soniq.commands`` entry point, so the core never
imports the dashboard; this module imports only click until the command runs, and names the
extra to install when the web stack is missing.
"""

from __future__ import annotations

import click


@click.command("dashboard")
@click.argument("app_path", metavar="MODULE:APP")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=6161, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--actions/--read-only",
    default=False,
    show_default=True,
    help="Allow retry, delete, pause and trigger (needs SONIQ_DASHBOARD_TOKEN, or "
    "SONIQ_DASHBOARD_USER and SONIQ_DASHBOARD_PASSWORD).",
)
@click.option(
    "--trace-url",
    envvar="SONIQ_DASHBOARD_TRACE_URL",
    help="Trace link template, e.g. http://localhost:16686/trace/{trace_id}.",
)
def command(app_path: str, host: str, port: int, actions: bool, trace_url: str | None) -> None:
    """Serve the web dashboard of a Soniq app.

    \b
    Example:
      soniq dashboard myapp.jobs:app --port 6161
      SONIQ_DASHBOARD_PASSWORD=... SONIQ_DASHBOARD_USER=ops \\
        soniq dashboard myapp.jobs:app --actions
    """
    try:
        import uvicorn

        from . import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs its extra ({exc.name} is missing): pip install 'soniq[dashboard]'"
        ) from None
    from soniq import SoniqError
    from soniq.cli_common import load_app

    app = load_app(app_path)
    try:
        web = create_app(app, actions=actions, trace_url=trace_url)
    except SoniqError as exc:
        raise click.ClickException(str(exc)) from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"Listening on {host}: reachable from other machines"
            + ("" if actions else " (read-only)"),
            err=True,
        )
    uvicorn.run(web, host=host, port=port, log_level="info")
