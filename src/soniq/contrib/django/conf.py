"""``settings.SONIQ`` and Django's database, turned into the Soniq app's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.utils.module_loading import import_string

from ...app import Soniq

_OPTIONS = {"DATABASE", "USE_DJANGO_CONNECTION", "AUTODISCOVER", "APP"}
# libpq connection options of Django's OPTIONS that belong in the URL's query.
_URL_OPTIONS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "application_name")


@dataclass(frozen=True)
class Options:
    database: str = "default"
    use_django_connection: bool = True
    autodiscover: str | None = "jobs"
    app: str | None = None


def the_app() -> Soniq:
    """The Soniq app this Django project uses (``SONIQ["APP"]`` or ``soniq.contrib.django.app``)."""
    path = options().app
    if path is None:
        from . import app

        return app
    found = import_string(path.replace(":", "."))
    if not isinstance(found, Soniq):
        raise ImproperlyConfigured(
            f'SONIQ["APP"] = {path!r} is a {type(found).__name__}, not a Soniq'
        )
    return found


def options() -> Options:
    raw: dict[str, Any] = getattr(settings, "SONIQ", None) or {}
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(f"SONIQ must be a dict, not {type(raw).__name__}")
    unknown = {k for k in raw if k.isupper()} - _OPTIONS
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown SONIQ option(s) {', '.join(sorted(unknown))}; the options are "
            f"{', '.join(sorted(_OPTIONS))}, and Soniq settings go in lower case"
        )
    return Options(
        database=raw.get("DATABASE", "default"),
        use_django_connection=bool(raw.get("USE_DJANGO_CONNECTION", True)),
        autodiscover=raw.get("AUTODISCOVER", "jobs"),
        app=raw.get("APP"),
    )


def configure() -> Options:
    """Point the app at Django's database and apply the settings in ``SONIQ``."""
    opts = options()
    raw: dict[str, Any] = getattr(settings, "SONIQ", None) or {}
    if opts.database not in settings.DATABASES:
        raise ImproperlyConfigured(
            f'SONIQ["DATABASE"] = {opts.database!r} is not in DATABASES '
            f"({', '.join(settings.DATABASES)})"
        )
    db = settings.DATABASES[opts.database]
    if "postgresql" not in db.get("ENGINE", ""):
        raise ImproperlyConfigured(
            f"Soniq needs PostgreSQL; DATABASES[{opts.database!r}] uses {db.get('ENGINE')!r}"
        )
    soniq_settings = {k: v for k, v in raw.items() if not k.isupper()}
    soniq_settings.setdefault("database_url", database_url(db))
    app = the_app()
    app.configure(**soniq_settings)
    if opts.use_django_connection:
        alias = opts.database
        # connections[alias] is the calling thread's connection, as Django's ORM uses it.
        app.set_sync_connection(lambda: connections[alias])
    return opts


def database_url(db: dict[str, Any]) -> str:
    """A PostgreSQL URL for Django's database settings (for Soniq's own connections)."""
    user = quote(str(db.get("USER") or ""), safe="")
    password = quote(str(db.get("PASSWORD") or ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = str(db.get("HOST") or "")
    if ":" in host and not host.startswith("["):  # an IPv6 address
        host = f"[{host}]"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    name = quote(str(db.get("NAME") or ""), safe="")
    query = {k: str(v) for k, v in (db.get("OPTIONS") or {}).items() if k in _URL_OPTIONS}
    if host.startswith("/"):  # a Unix socket folder
        query["host"] = host
        host = ""
    return f"postgresql://{auth}{host}{port}/{name}" + (f"?{urlencode(query)}" if query else "")
