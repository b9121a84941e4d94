"""Every error Soniq raises on purpose, so callers can catch one family."""

from __future__ import annotations


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
