"""A real run, end to end: jobs enqueued, a worker processing them with hooks printing, one job
failing, retrying with backoff and landing in the dead-letter queue.

With no SONIQ_DATABASE_URL set, Soniq starts an embedded PostgreSQL under your user data folder.
"""

from __future__ import annotations

import asyncio
import logging

from soniq import Backoff, JobContext, Soniq

app = Soniq()


@app.job(queue="emails")
async def send_welcome_email(user_id: int, address: str) -> str:
    await asyncio.sleep(0.05)
    return f"sent to {address}"


@app.job(max_retries=2, retry_backoff=Backoff(base=0.2, factor=2, max_delay=1))
def charge_card(order_id: int, ctx: JobContext) -> None:
    # A plain `def` job runs in a thread pool; this one always fails.
    raise RuntimeError(f"card declined for order {order_id} (attempt {ctx.attempt})")


# Ids are printed whole: they are time-ordered UUIDs (v7), so jobs made in the same moment share
# their first characters and only the whole id tells them apart.
@app.before_job
async def log_start(job_name: str, job_id: str, attempt: int) -> None:
    print(f"  before_job  {job_name} ({job_id}) attempt {attempt}")


@app.after_job
async def log_success(job_name: str, job_id: str, duration_ms: float) -> None:
    print(f"  after_job   {job_name} ({job_id}) in {duration_ms:.1f}ms")


@app.on_error
async def log_failure(job_name: str, job_id: str, error: str, attempt: int) -> None:
    meta = app._get_job_registry().get_job(job_name)
    final = meta is not None and attempt >= meta["max_retries"] + 1
    verdict = "-> dead-letter queue" if final else "-> will retry"
    print(f"  on_error    {job_name} ({job_id}) attempt {attempt}: {error} {verdict}")


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    async with app:
        await app.setup()
        print("Enqueueing 3 emails and 1 payment that will fail...")
        await app.enqueue_many(
            send_welcome_email,
            [{"user_id": i, "address": f"user{i}@example.com"} for i in range(3)],
        )
        failing = await app.enqueue(charge_card, order_id=42)

        worker = app.worker(concurrency=4)
        running = asyncio.create_task(worker.run())
        for _ in range(200):  # at most 20 s
            job = await app.get_job(failing)
            if job is not None and job["status"] == "dead_letter":
                break
            await asyncio.sleep(0.1)
        worker.stop()
        await running

        job = await app.get_job(failing)
        assert job is not None
        print(
            f"\nPayment job {failing} is {job['status']} after {job['attempts']} attempts: "
            f"{job['last_error']}"
        )
        for row in await app.queue_status():
            print(f"queue {row['queue']}: done={row['done']} dead_letter={row['dead_letter']}")
        print("\nTry: soniq status   |   soniq dead-letter list")
        print(f"     soniq dead-letter retry {failing}")


if __name__ == "__main__":
    asyncio.run(main())
