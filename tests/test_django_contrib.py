"""Pieces of soniq.contrib.django that need no Django project (the example's tests cover the
rest: tests/test_django_example.py)."""

from __future__ import annotations

from soniq.contrib.django.conf import database_url
from soniq.contrib.django.management.commands.soniq import APP_PATH, with_app


def test_database_url_from_django_settings() -> None:
    assert (
        database_url(
            {
                "NAME": "shop",
                "USER": "web",
                "PASSWORD": "p@ss/w:rd",
                "HOST": "db.internal",
                "PORT": 6432,
                "OPTIONS": {"sslmode": "require", "pool": True},
            }
        )
        == "postgresql://web:p%40ss%2Fw%3Ard@db.internal:6432/shop?sslmode=require"
    )
    assert database_url({"NAME": "shop", "HOST": "/run/postgresql"}) == (
        "postgresql:///shop?host=%2Frun%2Fpostgresql"
    )
    assert database_url({"NAME": "shop", "USER": "u", "HOST": "::1"}) == "postgresql://u@[::1]/shop"


def test_manage_py_soniq_passes_the_projects_app() -> None:
    assert with_app(["worker", "-c", "4"]) == ["worker", APP_PATH, "-c", "4"]
    assert with_app(["setup"]) == ["setup", APP_PATH]
    assert with_app(["status", "--json"]) == ["status", "--app", APP_PATH, "--json"]
    assert with_app(["dead-letter", "list"]) == ["dead-letter", "list", "--app", APP_PATH]
    assert with_app(["--help"]) == ["--help"]
