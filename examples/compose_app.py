"""The application the Compose stack runs (deploy/compose.yaml).

Worker:    soniq worker examples.compose_app:app --metrics-port 9108 --instrument all
Producer:  python -m examples.compose_app --metrics-port 9109

The producer enqueues a steady trickle of orders, emails and reports. Some orders fail once and
succeed on their retry; a few fail every attempt and land in the dead-letter queue, so that
Jaeger, Prometheus and Grafana have retries and dead letters to show within a minute.

Job names are given explicitly: the producer runs this file as ``__main__`` and the worker
imports it as ``examples.compose_app``, and both must agree on what each job is called.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from typing import Any

from soniq import Backoff, JobContext, Soniq
from soniq.logs import configure_logging

# Settings come from SONIQ_* variables (SONIQ_DATABASE_URL, ...), set in compose.yaml.
app = Soniq()

# Every DEAD_LETTER_EVERY-th tick enqueues an order whose payment never goes through, and every
# RETRY_EVERY-th tick one that fails once; tick 0 does both, so they show up at once.
DEAD_LETTER_EVERY = 20
RETRY_EVERY = 7
REPORT_EVERY = 10
NEVER_SUCCEEDS = 1_000


class PaymentDeclined(Exception):
    """The payment provider said no (the demo's failure)."""


class MailServerBusy(Exception):
    """A transient SMTP failure (the demo's retried error)."""


@app.job(
    name="orders.process",
    queue="orders",
    max_retries=2,
    retry_backoff=Backoff(base=1.0, factor=2.0, max_delay=10.0),
)
async def process_order(order_id: int, ctx: JobContext, fail_attempts: int = 0) -> dict[str, Any]:
    """Charge an order; attempts up to ``fail_attempts`` are declined."""
    await asyncio.sleep(random.uniform(0.02, 0.25))
    if ctx.attempt <= fail_attempts:
        raise PaymentDeclined(f"payment for order {order_id} declined (attempt {ctx.attempt})")
    return {"order_id": order_id, "status": "paid"}


@app.job(name="emails.send", queue="emails", max_retries=3, retry_backoff=0.5)
def send_email(to: str, template: str, ctx: JobContext, fail_attempts: int = 0) -> None:
    """A plain ``def`` job: Soniq runs it in a thread, so blocking calls are fine here."""
    time.sleep(random.uniform(0.005, 0.05))
    if ctx.attempt <= fail_attempts:
        raise MailServerBusy(f"421 mail server busy, try again ({to})")


@app.job(name="reports.build", queue="reports", priority=5, timeout=10)
async def build_report(report_id: int, pages: int) -> int:
    """A slower, low-priority job, so that the duration panels show a spread."""
    await asyncio.sleep(pages * random.uniform(0.02, 0.06))
    return pages


@app.periodic(every=15, name="reports.digest", queue="reports")
async def send_digest(ctx: JobContext) -> None:
    """A digest every 15 s, fired by the workers: the dashboard's schedule panels have a line."""
    await asyncio.sleep(random.uniform(0.01, 0.05))


async def enqueue_tick(soniq: Soniq, tick: int) -> list[str]:
    """Enqueue one tick's worth of work; returns the job ids."""
    order_id = 10_000 + tick
    fail_attempts = 0
    if tick % DEAD_LETTER_EVERY == 0:
        fail_attempts = NEVER_SUCCEEDS
    elif tick % RETRY_EVERY == 0:
        fail_attempts = 1
    ids = [await soniq.enqueue(process_order, order_id=order_id, fail_attempts=fail_attempts)]
    ids.append(
        await soniq.enqueue(
            send_email,
            to=f"customer{order_id}@example.com",
            template="order-confirmation",
            fail_attempts=1 if tick % RETRY_EVERY == 3 else 0,
        )
    )
    if tick % REPORT_EVERY == 0:
        # A batch: one INSERT and one producer span for all of them.
        ids += await soniq.enqueue_many(
            build_report,
            [{"report_id": tick * 10 + i, "pages": 1 + (tick + i) % 8} for i in range(5)],
        )
    return ids


async def produce(
    soniq: Soniq, *, interval: float, ticks: int | None = None, stop: asyncio.Event | None = None
) -> int:
    """Enqueue a tick every ``interval`` seconds until ``stop`` is set or ``ticks`` ran."""
    stop = stop or asyncio.Event()
    tick = 0
    while not stop.is_set() and (ticks is None or tick < ticks):
        await enqueue_tick(soniq, tick)
        tick += 1
        # Sleep for the interval, but wake at once when asked to stop.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
    return tick


async def _wait_for_schema(soniq: Soniq, deadline_s: float = 60.0) -> None:
    # The Compose `setup` service creates the tables; wait for them rather than crash-looping.
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            await soniq.queue_status()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


async def run_producer(interval: float, metrics_port: int | None, metrics_host: str) -> None:
    log = logging.getLogger("soniq.producer")
    # Tracing (one `send <job>` span per enqueue) and enqueue counters for the producer, too.
    app.instrument(otel=True, prometheus=True)
    if metrics_port is not None:
        # soniq_prom registers its metrics with prometheus_client's default registry; this serves
        # that registry, so Prometheus sees soniq_jobs_enqueued_total from the producer.
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)
        log.info("Producer metrics on http://%s:%d/metrics", metrics_host, metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with app:
        await _wait_for_schema(app)
        log.info("Producing a tick every %.2fs", interval)
        ticks = await produce(app, interval=interval, stop=stop)
        log.info("Producer stopping after %d ticks", ticks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Enqueue a steady trickle of demo jobs.")
    parser.add_argument("--interval", type=float, default=0.5, help="Seconds between ticks.")
    parser.add_argument("--metrics-port", type=int, default=None, help="Serve /metrics here.")
    parser.add_argument("--metrics-host", default="0.0.0.0", help="Bind address for /metrics.")
    args = parser.parse_args(argv)
    # The same log format switch as the worker: SONIQ_LOG_FORMAT=json gives one object per line.
    configure_logging(os.environ.get("SONIQ_LOG_FORMAT", "text"), "INFO")
    asyncio.run(run_producer(args.interval, args.metrics_port, args.metrics_host))


if __name__ == "__main__":
    main()
