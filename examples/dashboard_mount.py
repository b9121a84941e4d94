"""The Soniq dashboard mounted inside a FastAPI app, beside the app's own routes.

    SONIQ_DASHBOARD_USER=ops SONIQ_DASHBOARD_PASSWORD=change-me \\
        uvicorn examples.dashboard_mount:web --host 127.0.0.1 --port 8000
    # then open http://127.0.0.1:8000/soniq/

The dashboard is read-only unless ``actions=True``; with actions on it needs the credentials
above (or SONIQ_DASHBOARD_TOKEN), and refuses to start without them.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from soniq import Soniq
from soniq_dashboard import create_app

soniq = Soniq(os.environ.get("SONIQ_DATABASE_URL"))


@soniq.job(queue="emails", max_retries=3)
async def send_welcome(to: str, password_hint: str = "") -> None:
    print(f"welcome mail to {to}")


def hide_secrets(job_name: str, args: dict[str, Any]) -> dict[str, Any]:
    """What the dashboard shows of a job's arguments: never a password hint."""
    return {k: ("***" if "password" in k else v) for k, v in args.items()}


web = FastAPI()
actions = bool(
    os.environ.get("SONIQ_DASHBOARD_PASSWORD") or os.environ.get("SONIQ_DASHBOARD_TOKEN")
)
web.mount(
    "/soniq",
    create_app(
        soniq,
        actions=actions,
        trace_url=os.environ.get(
            "SONIQ_DASHBOARD_TRACE_URL", "http://localhost:16686/trace/{trace_id}"
        ),
        redact=hide_secrets,
    ),
)


@web.get("/signup")
async def signup(email: str) -> dict[str, str]:
    job_id = await soniq.enqueue(send_welcome, to=email, password_hint="blue")
    return {"job_id": job_id}
