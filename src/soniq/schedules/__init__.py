"""Periodic jobs: cron and intervals, fired by the workers, exactly once per fire time.

``spec`` checks a schedule where it is written; ``timing`` says when it fires (pure functions
of a ``now``); ``runner`` is the firing loop every worker runs; ``api`` is ``app.scheduler``;
``store`` runs the schedules' statements. See docs/schedules.md.
"""

from __future__ import annotations

from .api import ScheduleNotFound, Scheduler
from .runner import ScheduleRunner
from .spec import ScheduleSpec, make_schedule
from .store import ScheduleState
from .timing import CATCH_UP_CAP, MISSED_AFTER, Plan, next_fire, plan

__all__ = [
    "CATCH_UP_CAP",
    "MISSED_AFTER",
    "Plan",
    "ScheduleNotFound",
    "ScheduleRunner",
    "ScheduleSpec",
    "ScheduleState",
    "Scheduler",
    "make_schedule",
    "next_fire",
    "plan",
]
