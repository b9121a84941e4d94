"""Soniq: background jobs in PostgreSQL, with tracing, metrics and logs built in."""

from .app import Soniq
from .backoff import Backoff
from .context import AttemptContext, JobContext, current_attempt
from .control import CancelResult, QueueControl, Snooze
from .errors import (
    ConfigurationError,
    DatabaseUnavailable,
    DuplicateJob,
    JobArgumentsError,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobTimeout,
    SchemaError,
    SoniqError,
    UnknownJobError,
)
from .fleet_role import FleetRole
from .jobs import JobInfo, JobStatus, Outcome, PendingJob
from .middleware import (
    CallNext,
    EnqueueContext,
    EnqueueNext,
    FunctionMiddleware,
    Middleware,
    MiddlewareChain,
    ObservingLayer,
)
from .queue_state import QueueCount, QueueState
from .registry import JobRegistry, JobSpec
from .settings import Settings
from .unique import EnqueueResult, Unique
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "AttemptContext",
    "Backoff",
    "CallNext",
    "CancelResult",
    "ConfigurationError",
    "DatabaseUnavailable",
    "DuplicateJob",
    "EnqueueContext",
    "EnqueueNext",
    "EnqueueResult",
    "FleetRole",
    "FunctionMiddleware",
    "JobArgumentsError",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobRegistry",
    "JobSpec",
    "JobStatus",
    "JobTimeout",
    "Middleware",
    "MiddlewareChain",
    "ObservingLayer",
    "Outcome",
    "PendingJob",
    "QueueControl",
    "QueueCount",
    "QueueState",
    "SchemaError",
    "Settings",
    "Snooze",
    "Soniq",
    "SoniqError",
    "Unique",
    "UnknownJobError",
    "Worker",
    "__version__",
    "current_attempt",
]
