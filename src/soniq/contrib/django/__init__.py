"""Soniq for Django: ``"soniq.contrib.django"`` in ``INSTALLED_APPS``.

    # settings.py
    INSTALLED_APPS = [..., "soniq.contrib.django"]
    SONIQ = {"concurrency": 4}          # optional: Soniq settings, and the options below

    # shop/jobs.py (a ``jobs`` module in any installed app is imported at start-up)
    from soniq.contrib.django import app

    @app.job()
    def send_receipt(order_id: int) -> None: ...

    # shop/views.py
    with transaction.atomic():
        order = Order.objects.create(...)
        app.enqueue_sync(send_receipt, order_id=order.pk)   # on Django's connection

    python manage.py soniq setup | worker [-c 4] | status | dead-letter list ...

``app`` is a :class:`soniq.Soniq` whose database is Django's (``DATABASES[SONIQ["DATABASE"]]``),
configured when Django starts. ``app.enqueue_sync`` without ``connection=`` writes with
Django's connection for that database (the calling thread's), so inside
``transaction.atomic()`` the job commits or rolls back with the view's rows, and outside one it
commits at once (Django's autocommit). ``await app.enqueue`` (async views) uses Soniq's own
connections. See docs/web-apps.md.

``SONIQ`` keys in upper case are this contrib's options; the rest are Soniq settings
(``concurrency``, ``schema``, ``pgbouncer``, ``database_url``...):

- ``DATABASE``: the Django database alias (default ``"default"``);
- ``USE_DJANGO_CONNECTION``: enqueue_sync joins Django's connection (default True);
- ``AUTODISCOVER``: the module imported from each installed app (default ``"jobs"``; None: off);
- ``APP``: ``"module:attribute"`` of a Soniq app of your own to configure instead of ``app``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from ...app import Soniq
from ...context import current_attempt

F = TypeVar("F", bound=Callable[..., Any])


class DjangoSoniq(Soniq):
    """A Soniq app whose plain ``def`` jobs treat Django's database connections as a request
    does: the worker thread's connections are closed, when old (``CONN_MAX_AGE``, 0 by
    default) or broken, before and after each attempt, so threads neither reuse a dead
    connection nor keep one open for good."""

    def job(self, **options: Any) -> Callable[[F], F]:
        register = super().job(**options)

        def decorate(func: F) -> F:
            if inspect.iscoroutinefunction(func):
                return register(func)
            return register(_closing_django_connections(func))

        return decorate


def _closing_django_connections(func: F) -> F:
    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        if current_attempt.get(None) is None:
            # Called directly (say, in a view), not as a job: the caller's connections and
            # transaction are not ours to close.
            return func(*args, **kwargs)
        from django.db import close_old_connections

        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return run  # type: ignore[return-value]


#: The project's Soniq app; its database is set from Django's settings when Django starts.
app = DjangoSoniq()

__all__ = ["DjangoSoniq", "app"]
