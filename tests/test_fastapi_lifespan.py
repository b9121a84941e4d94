"""soniq.integrations.fastapi.lifespan: Soniq starts and closes with a real FastAPI app, with
or without a worker in the same process."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from soniq import SchemaError, Soniq
from soniq.integrations.fastapi import lifespan
from tests.support.waiting import wait_until


def web_app(soniq: Soniq, **options: Any) -> FastAPI:
    api = FastAPI(lifespan=lifespan(soniq, **options))

    @soniq.job(name="web.double")
    async def double(x: int) -> int:
        return 2 * x

    @api.post("/double/{x}")
    async def enqueue(x: int) -> dict[str, str]:
        return {"job_id": await soniq.enqueue("web.double", x=x)}

    @api.get("/jobs/{job_id}")
    async def job(job_id: str) -> dict[str, Any]:
        found = await soniq.get_job(job_id)
        return {"status": None if found is None else str(found["status"])}

    return api


async def status(client: httpx.AsyncClient, job_id: str) -> str:
    return str((await client.get(f"/jobs/{job_id}")).json()["status"])


async def test_a_worker_in_the_web_process(clean_db: str) -> None:
    soniq = Soniq(clean_db, poll_interval=0.5, lease_seconds=3, grace_period=5)
    api = web_app(soniq, run_worker=True, concurrency=3)
    async with api.router.lifespan_context(api):
        await wait_until(lambda: soniq.workers, what="the worker to start")
        assert soniq.workers[0].concurrency == 3
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
            job_id = (await client.post("/double/21")).json()["job_id"]

            async def done() -> bool:
                return await status(client, job_id) == "done"

            await wait_until(done, what="the job to run in the web process")
        assert (await soniq.get_job(job_id) or {})["result"] == 42
        worker = soniq.workers[0]
    # Shut down with the web app: the worker is gone and the pool closed.
    assert soniq.workers == [] and worker.running_jobs == 0
    assert soniq._store._pool is None


async def test_without_a_worker_jobs_wait_for_one(clean_db: str) -> None:
    soniq = Soniq(clean_db)
    api = web_app(soniq)
    async with api.router.lifespan_context(api):
        assert soniq.workers == []
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
            job_id = (await client.post("/double/1")).json()["job_id"]
            assert await status(client, job_id) == "queued"


async def test_a_missing_schema_fails_the_start(empty_database_url: str) -> None:
    soniq = Soniq(empty_database_url)
    api = web_app(soniq, run_worker=True)
    with pytest.raises(SchemaError, match="soniq setup"):
        async with api.router.lifespan_context(api):
            pass
    # setup=True creates it instead.
    soniq = Soniq(empty_database_url)
    api = web_app(soniq, setup=True)
    async with api.router.lifespan_context(api):
        assert await soniq.queue_status() == []
    await soniq.close()


async def test_the_lifespan_state_holds_the_app(clean_db: str) -> None:
    soniq = Soniq(clean_db)
    # What a server puts in the ASGI lifespan state, and so in request.state.
    async with lifespan(soniq)(object()) as state:
        assert state == {"soniq": soniq}
