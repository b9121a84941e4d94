"""The hooks page's structured-logging example, runnable: one JSON log line per job start and
per completed job, on the ``soniq.hooks`` logger.

    SONIQ_DATABASE_URL=postgresql://localhost/myapp python examples/hooks/structured_logging.py

Without SONIQ_DATABASE_URL, Soniq starts an embedded PostgreSQL (pip install 'soniq[embedded]').
Everything between the two ``---`` markers is the page's code, unchanged; around it only the
imports, the app, a demo job and ``main``.
"""

import asyncio
import json
import logging

from soniq import Soniq

app = Soniq()

# --- from the hooks page, "Structured logging" ---
logger = logging.getLogger("soniq.hooks")


@app.before_job
async def structured_log_start(job_name, job_id, attempt):
    logger.info(
        json.dumps(
            {
                "event": "job_started",
                "job_name": job_name,
                "job_id": job_id,
                "attempt": attempt,
            }
        )
    )


@app.after_job
async def structured_log_done(job_name, job_id, duration_ms):
    logger.info(
        json.dumps(
            {
                "event": "job_completed",
                "job_name": job_name,
                "job_id": job_id,
                "duration_ms": duration_ms,
            }
        )
    )


# --- end of the page's code ---


@app.job()
async def send_welcome_email(user_id: int) -> str:
    await asyncio.sleep(0.01)
    return f"welcome mail sent to user {user_id}"


async def main() -> list[str]:
    """Enqueue two jobs and drain them with one worker; returns the job ids."""
    try:
        await app.setup()
        ids = await app.enqueue_many(send_welcome_email, [{"user_id": 1}, {"user_id": 2}])
        await app.run_worker(run_once=True, install_signal_handlers=False)
        return ids
    finally:
        await app.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
