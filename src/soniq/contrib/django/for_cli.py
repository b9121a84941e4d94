"""The project's Soniq app for the ``soniq`` CLI (``manage.py soniq`` passes
``soniq.contrib.django.for_cli:app``): Django is set up first, from DJANGO_SETTINGS_MODULE,
so the app has Django's database and its jobs are registered, in this process and in the
worker processes ``--processes`` starts."""

from __future__ import annotations

import django
from django.apps import apps

if not apps.ready:
    django.setup()

from .conf import the_app

app = the_app()
