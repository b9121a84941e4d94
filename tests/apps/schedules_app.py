"""The app the schedule process tests run (``soniq worker tests.apps.schedules_app:app``): one
schedule firing every second, whose job does nothing but finish."""

from __future__ import annotations

from soniq import JobContext, Soniq

app = Soniq()


@app.periodic(every=1, schedule_name="tick", name="tick")
async def tick(ctx: JobContext) -> None:
    assert ctx.schedule == "tick" and ctx.fire_time is not None
