"""Soniq in one file: declare a job, enqueue it, run a worker until the queue is empty.

    SONIQ_DATABASE_URL=postgresql://localhost/myapp python examples/quickstart.py

Without SONIQ_DATABASE_URL, Soniq starts an embedded PostgreSQL (pip install 'soniq[embedded]').
"""

from __future__ import annotations

import asyncio

from soniq import Soniq

app = Soniq()


# An explicit name: run as a script this module is `__main__`, imported by a worker it is
# `examples.quickstart`, and both must agree on what the job is called.
@app.job(name="emails.send_welcome", queue="emails", max_retries=3)
async def send_welcome(user_id: int, address: str) -> str:
    # Your work goes here: call an API, render a template, write a file...
    return f"welcome mail sent to {address} (user {user_id})"


async def main() -> None:
    async with app:
        await app.setup()  # create the tables once (or run `soniq setup`)

        job_id = await app.enqueue(send_welcome, user_id=1, address="ada@example.com")
        print(f"enqueued {job_id}")

        # In production the worker is its own process: `soniq worker examples.quickstart:app`.
        # Here it runs until the queue is empty, then returns.
        await app.run_worker(run_once=True, install_signal_handlers=False)

        job = await app.get_job(job_id)
        assert job is not None
        print(f"{job['status']} after {job['attempts']} attempt(s): {job['result']}")


if __name__ == "__main__":
    asyncio.run(main())
