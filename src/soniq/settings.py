"""Settings, read from keyword arguments first and ``SONIQ_*`` environment variables second.

pydantic-settings does the parsing, validation and environment lookup, so a misspelt or
out-of-range setting is caught once, here, with a message that names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigurationError
from .schema import check_name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SONIQ_", extra="forbid", frozen=True, populate_by_name=True
    )

    database_url: str | None = Field(
        None, description="PostgreSQL URL; unset means an embedded server under data_dir."
    )
    data_dir: Path | None = Field(
        None, description="Where the embedded PostgreSQL keeps its data (per-user default)."
    )
    # ``schema`` as Soniq's keyword and SONIQ_SCHEMA; the field has another name because
    # pydantic models have a ``schema`` attribute of their own.
    db_schema: str | None = Field(
        None,
        validation_alias=AliasChoices("soniq_schema"),
        description="PostgreSQL schema of Soniq's tables (e.g. 'jobs'), so that apps sharing a "
        "database keep apart; None: wherever the connection's search_path finds them.",
    )
    pgbouncer: bool = Field(
        False,
        description="Soniq reaches PostgreSQL through PgBouncer in transaction mode: it keeps no "
        "prepared statement or session setting across transactions and takes no session "
        "advisory lock; workers LISTEN on listen_database_url, or poll without it.",
    )
    listen_database_url: str | None = Field(
        None,
        description="A URL that reaches PostgreSQL directly (not through PgBouncer), for the "
        "workers' LISTEN connection when pgbouncer is on; unset: workers poll "
        "(poll_interval).",
    )
    pool_min_size: int = Field(1, ge=0)
    pool_max_size: int = Field(10, ge=1)
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to wait for PostgreSQL.")
    command_timeout: float = Field(30.0, gt=0, description="Seconds one statement may take.")

    concurrency: int = Field(10, ge=1, description="Jobs one worker runs at once.")
    queues: list[str] | None = Field(None, description="Queues a worker takes; None is all.")
    prefetch: int = Field(
        200,
        ge=0,
        description="Most jobs a worker claims ahead of its free slots, so fast jobs do not "
        "wait for a round trip; it claims about three round trips' worth of its start rate. "
        "0 turns it off. If a worker is killed, each job it held claimed ahead is counted as "
        "an attempt used (it may have started), but never the job's last attempt.",
    )
    thread_pool_size: int | None = Field(
        None, ge=1, description="Threads for plain `def` jobs; default: the concurrency."
    )
    poll_interval: float = Field(
        5.0, gt=0, description="Seconds between polls when LISTEN/NOTIFY is silent."
    )
    lease_seconds: float = Field(
        30.0, gt=0, description="A worker silent this long is dead; its jobs run again."
    )
    grace_period: float = Field(
        25.0, ge=0, description="Seconds running jobs get to finish on SIGTERM/SIGINT."
    )
    done_retention: float = Field(
        7 * 86400.0,
        ge=0,
        description="Seconds done jobs are kept after they finish before being purged; "
        "0 keeps them forever.",
    )
    cancelled_retention: float = Field(
        7 * 86400.0,
        ge=0,
        description="Seconds cancelled jobs are kept before being purged; 0 keeps them forever.",
    )
    dead_letter_retention: float = Field(
        0.0,
        ge=0,
        description="Seconds dead-lettered jobs are kept before being purged; 0 (the default) "
        "keeps them until retried or deleted, since each is a failure someone should see.",
    )

    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    log_format: Literal["json", "text"] = "text"

    @field_validator("db_schema")
    @classmethod
    def _schema_name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)

    @property
    def heartbeat_interval(self) -> float:
        # Three beats per lease: one lost beat never costs a live worker its jobs.
        return self.lease_seconds / 3


def load_settings(overrides: dict[str, Any]) -> Settings:
    """Build settings, turning validation failures into one readable error."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if "schema" in given:
        given["db_schema"] = given.pop("schema")
    unknown = sorted(set(given) - set(Settings.model_fields))
    if unknown:
        known = ", ".join(sorted(Settings.model_fields))
        raise TypeError(f"Unknown Soniq setting(s) {', '.join(unknown)}; known settings: {known}")
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(f"Invalid Soniq settings: {problems}") from None
