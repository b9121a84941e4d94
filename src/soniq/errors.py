"""Every error Soniq raises on purpose, so callers can catch one family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class SoniqError(Exception):
    """Base class for errors raised by Soniq."""


class ConfigurationError(SoniqError, ValueError):
    """A setting or option is invalid; the message names the setting and the fix."""


class SchemaError(SoniqError):
    """The database has no Soniq schema, or an older one than this version needs."""


class DatabaseUnavailable(SoniqError, ConnectionError):
    """PostgreSQL could not be reached (wrong URL, server down, or timed out)."""


class UnknownJobError(SoniqError, LookupError):
    """A job name that is not in the registry was enqueued."""


class JobArgumentsError(SoniqError, TypeError):
    """Enqueue arguments do not bind to the job's signature or are not JSON-serialisable."""


class JobTimeout(SoniqError, TimeoutError):
    """A job ran longer than its ``timeout``."""


class JobNotFound(SoniqError, LookupError):
    """No job with the given id exists."""


class JobFailed(SoniqError):
    """The awaited job ended in the dead-letter queue: its attempts are used up."""

    def __init__(
        self, job_id: str, last_error: str | None, attempts: int, errors: Sequence[Any]
    ) -> None:
        self.job_id = job_id
        self.last_error = last_error
        self.attempts = attempts
        self.errors = errors  # every attempt's error, oldest first (see get_job)
        super().__init__(
            f"Job {job_id} failed after {attempts} attempt(s) and is in the dead-letter queue: "
            f"{last_error or 'no error recorded'}"
        )


class JobCancelled(SoniqError):
    """The awaited job was cancelled before it ran."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"Job {job_id} was cancelled")


class DuplicateJob(SoniqError):
    """A unique job with ``on_conflict="raise"`` met a job holding its key: ``existing_id``."""

    def __init__(self, message: str, existing_id: str) -> None:
        super().__init__(message)
        self.existing_id = existing_id
