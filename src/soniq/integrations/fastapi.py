"""FastAPI (and Starlette): start and close Soniq with the web app, and optionally run a worker
in the same process.

    from fastapi import FastAPI
    from soniq.integrations.fastapi import lifespan

    api = FastAPI(lifespan=lifespan(soniq, run_worker=True, concurrency=4))

Nothing here imports FastAPI: a lifespan is a function of the web app returning an async
context manager, which is all FastAPI and Starlette ask for. The lifespan yields
``{"soniq": app}`` as the ASGI lifespan state (``request.state.soniq``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import Soniq

logger = logging.getLogger("soniq")

Lifespan = Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]


def lifespan(
    app: Soniq,
    *,
    run_worker: bool = False,
    concurrency: int | None = None,
    queues: list[str] | None = None,
    setup: bool = False,
) -> Lifespan:
    """A lifespan for ``FastAPI(lifespan=...)``: on start-up it connects and checks the schema
    (or, with ``setup=True``, creates or migrates it), so a wrong URL or a missing ``soniq
    setup`` fails the start, not the first request; with ``run_worker`` it starts a worker
    (``concurrency``, ``queues``) on the web server's event loop. On shutdown the worker stops
    (running jobs get the grace period) and Soniq's connections close.

    To combine it with a lifespan of your own, enter it inside yours:
    ``async with lifespan(soniq)(api): ... yield``.

    A worker in the web process shares its CPU and event loop with the requests: fine for
    light jobs and small deployments; run ``soniq worker`` processes for the rest. The web
    server's signal handling stays the server's (the worker installs none).
    """

    @contextlib.asynccontextmanager
    async def span(_web_app: Any) -> AsyncIterator[dict[str, Any]]:
        if setup:
            await app.setup()
        else:
            await app.start()
        task: asyncio.Task[None] | None = None
        worker = None
        if run_worker:
            worker = app.worker(
                concurrency=concurrency, queues=queues, install_signal_handlers=False
            )
            task = asyncio.create_task(worker.run(), name="soniq-worker")
            task.add_done_callback(_report_exit)
        try:
            yield {"soniq": app}
        finally:
            try:
                if worker is not None and task is not None:
                    worker.stop()
                    with contextlib.suppress(Exception):  # reported by _report_exit
                        await task
            finally:
                await app.close()

    return span


def _report_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "The Soniq worker in this web process stopped: %r",
            task.exception(),
            exc_info=task.exception(),
            extra={"event": "worker.crashed"},
        )
