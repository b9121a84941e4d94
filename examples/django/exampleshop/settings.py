"""Settings of the example shop: PostgreSQL from EXAMPLE_DATABASE_URL, Soniq installed."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

_url = urlsplit(
    os.environ.get("EXAMPLE_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/soniq_shop")
)

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "exampleshop.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "soniq.contrib.django",
    "shop",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
    }
}

# Soniq: its database is DATABASES["default"]; these are Soniq settings (see the docs).
SONIQ = {
    "concurrency": 4,
    "poll_interval": 1.0,
}

# Points Soniq at the test database and creates its tables there.
TEST_RUNNER = "soniq.contrib.django.testing.SoniqTestRunner"
