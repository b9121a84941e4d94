"""Soniq's testing kit: run jobs inline, capture and assert enqueues, drain a real database,
move the clock, collect telemetry. Every mode runs the app's real chain (telemetry layers,
middlewares, hooks) with the arguments as the database would hand them back. See
docs/testing.md.

The pytest fixtures (``soniq_database``, ``soniq_clock``) come with the package through the
``pytest11`` entry point (:mod:`soniq_pytest`); they do nothing until a test asks for them.
"""

from __future__ import annotations

from .attempts import WORKER_ID, EnqueuedJob
from .capture import CapturedJobs, capture
from .clock import Clock
from .drain import drain
from .inline import InlineRun, inline
from .memory import DEFAULT_MAX_RUNS
from .outcomes import DrainLimitExceeded, Outcome, OutcomeName, Outcomes
from .telemetry import Telemetry, capture_telemetry

__all__ = [
    "DEFAULT_MAX_RUNS",
    "WORKER_ID",
    "CapturedJobs",
    "Clock",
    "DrainLimitExceeded",
    "EnqueuedJob",
    "InlineRun",
    "Outcome",
    "OutcomeName",
    "Outcomes",
    "Telemetry",
    "capture",
    "capture_telemetry",
    "drain",
    "inline",
]
