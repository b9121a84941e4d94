from soniq import Soniq
from tests.support.waiting import running_worker, wait_status


async def test_job_runs_and_result_is_stored(app: Soniq) -> None:
    @app.job()
    async def add(a: int, b: int) -> int:
        return a + b

    job_id = await app.enqueue(add, a=1, b=2)
    async with running_worker(app):
        job = await wait_status(app, job_id, "done")
    assert job["result"] == 3
    assert job["attempts"] == 1
