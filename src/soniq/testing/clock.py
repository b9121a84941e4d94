"""A clock tests move forward: delayed jobs, retries' backoff and schedules come due at once.

``await clock.advance(seconds)`` moves :mod:`soniq.clock` (what the inline and capture modes,
and any Python-side "is it due?" code, read) and, for each app attached to it, the database's
idea of now for Soniq's data: every time Soniq stored moves ``seconds`` into the past
(:meth:`soniq.store.Store.shift_times`), so the unchanged SQL, comparing with ``now()``, sees
the later time. ``advance`` is a coroutine because of that database half.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, overload

from .. import clock
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..app import Soniq


class Clock:
    """Test time. Attach the apps whose database should follow (``Clock(app)`` or
    :meth:`attach`); inline and capture need none. :meth:`reset` (or leaving a ``with``
    block, or the ``soniq_clock`` fixture's end) puts the Python side back on real time."""

    def __init__(self, *attached: Soniq | str) -> None:
        self._apps: list[Soniq] = []
        self._urls: list[str] = []
        for target in attached:
            self.attach(target)

    @overload
    def attach(self, target: Soniq) -> Soniq: ...
    @overload
    def attach(self, target: str) -> str: ...
    def attach(self, target: Soniq | str) -> Soniq | str:
        """Make ``advance`` move time in a database too: an app's, or one given by its URL
        (the ``soniq_clock`` fixture attaches ``soniq_database`` by itself). Returns it."""
        if isinstance(target, str):
            if target not in self._urls:
                self._urls.append(target)
        elif target not in self._apps:
            self._apps.append(target)
        return target

    def now(self) -> datetime:
        return clock.now()

    def time(self) -> float:
        return clock.time()

    @property
    def offset(self) -> float:
        """Seconds this process's Soniq time is ahead of real time."""
        return clock.offset()

    async def advance(self, seconds: float | timedelta) -> None:
        """Let ``seconds`` pass for Soniq, without sleeping."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ConfigurationError(
                f"Clock.advance takes a number of seconds >= 0 or a timedelta, not {seconds!r}; "
                f"a clock only moves forward"
            )
        clock.advance(float(seconds))
        shifted: set[str] = set()  # two apps on one database: its times move once
        for app in self._apps:
            await app.pool()  # resolves the URL (and starts an embedded server if that is it)
            url = app._store.url
            if url is not None and url not in shifted:
                shifted.add(url)
                await app._store.shift_times(float(seconds))
        for url in self._urls:
            if url not in shifted:
                shifted.add(url)
                await _shift(url, float(seconds))

    def reset(self) -> None:
        """Python-side time back to real time (stored times are not moved back)."""
        clock.reset()

    def __enter__(self) -> Clock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.reset()


async def _shift(url: str, seconds: float) -> None:
    from ..app import Soniq

    app = Soniq(url)
    try:
        await app._store.shift_times(seconds)
    finally:
        await app.close()
