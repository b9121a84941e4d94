"""The hooks page's Prometheus example, runnable: jobs started, their duration and failures,
counted per job name in prometheus_client's default registry.

    SONIQ_DATABASE_URL=postgresql://localhost/myapp python examples/hooks/prometheus_metrics.py

Without SONIQ_DATABASE_URL, Soniq starts an embedded PostgreSQL (pip install 'soniq[embedded]').
Everything between the two ``---`` markers is the page's code, unchanged; around it only the
imports, the app, demo jobs and ``main``, which prints the three metrics at the end. (Soniq's
own metrics, with ``app.instrument(prometheus=True)``, are named differently and do not clash.)
"""

import asyncio

import prometheus_client
from prometheus_client import Counter, Histogram

from soniq import Soniq

app = Soniq()

# --- from the hooks page, "Prometheus metrics" ---
jobs_started = Counter("soniq_jobs_started", "Jobs started", ["job_name"])
jobs_completed = Histogram("soniq_jobs_duration_ms", "Job duration", ["job_name"])
jobs_failed = Counter("soniq_jobs_failed", "Jobs failed", ["job_name"])


@app.before_job
async def track_start(job_name, job_id, attempt):
    jobs_started.labels(job_name=job_name).inc()


@app.after_job
async def track_duration(job_name, job_id, duration_ms):
    jobs_completed.labels(job_name=job_name).observe(duration_ms)


@app.on_error
async def track_failure(job_name, job_id, error, attempt):
    jobs_failed.labels(job_name=job_name).inc()


# --- end of the page's code ---


@app.job()
async def resize_image(image_id: int) -> None:
    await asyncio.sleep(0.01)


@app.job(max_retries=1, retry_backoff=0)
async def call_flaky_api() -> None:
    raise ConnectionError("upstream unavailable")


async def main() -> dict[str, list[str]]:
    """Three resizes that succeed, one call that fails twice (and is dead-lettered)."""
    try:
        await app.setup()
        resized = await app.enqueue_many(resize_image, [{"image_id": i} for i in range(3)])
        failed = [await app.enqueue(call_flaky_api)]
        await app.run_worker(run_once=True, install_signal_handlers=False)
        return {"resize_image": resized, "call_flaky_api": failed}
    finally:
        await app.close()


if __name__ == "__main__":
    asyncio.run(main())
    shown = ("soniq_jobs_started_total", "soniq_jobs_failed_total", "soniq_jobs_duration_ms_count")
    exposition = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    for line in exposition.splitlines():
        if line.startswith(shown):
            print(line)
