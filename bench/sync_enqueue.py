"""enqueue_sync against await enqueue: single enqueues per second, in one run.

    .venv/bin/python -m bench.sync_enqueue [--jobs 3000] [--block 50] [--otel] [--unique]

(from the repository root, like ``python -m bench``).

Both sides run on the main thread, one call after another: ``await app.enqueue(...)`` inside
an event loop, and ``app.enqueue_sync(...)`` with none (what a Django or Flask view does).
They alternate in blocks of ``--block`` jobs, as ``python -m bench --only enqueue`` does
between systems, since single enqueues wait on the WAL flush of a disk other processes share.
After one discarded warm-up block each, the rate of each side is its jobs over its total time;
the script prints both and their ratio (the target is >= 0.8). ``--otel`` turns tracing on for
both (a producer span per enqueue, so the sync side runs the chain on its thread's loop).
``--unique`` makes the job unique (``unique=True``, every enqueue a new key): job control's
statements in a transaction, on both sides.

The database: ``BENCH_DATABASE_URL``, else ``SONIQ_TEST_DATABASE_URL``, else
postgresql://postgres@127.0.0.1:5432/postgres; a scratch database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time

from bench import common
from soniq import Soniq

JOB = "bench.noop"


def make_app(url: str, otel: bool, unique: bool) -> Soniq:
    app = Soniq(url)

    @app.job(name=JOB, unique=unique or None)
    async def noop(i: int, s: str) -> None:
        return None

    if otel:
        from opentelemetry.sdk.trace import TracerProvider

        from soniq_otel import OtelConfig

        app.instrument(otel=OtelConfig(tracer_provider=TracerProvider()))
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per side")
    parser.add_argument("--block", type=int, default=50, help="jobs per alternation")
    parser.add_argument("--otel", action="store_true", help="tracing on for both sides")
    parser.add_argument("--unique", action="store_true", help="a unique job (new keys)")
    opts = parser.parse_args()

    admin = common.admin_url()
    loop = asyncio.new_event_loop()
    url = loop.run_until_complete(common.create_database(admin, "sync_enqueue"))
    try:
        app = make_app(url, opts.otel, opts.unique)
        loop.run_until_complete(app.setup())

        numbers = itertools.count()  # every job its own arguments: with --unique, its own key

        async def async_block(n: int) -> float:
            start = time.perf_counter()
            for _ in range(n):
                await app.enqueue(JOB, i=next(numbers), s="payload")
            return time.perf_counter() - start

        def sync_block(n: int) -> float:
            start = time.perf_counter()
            for _ in range(n):
                app.enqueue_sync(JOB, i=next(numbers), s="payload")
            return time.perf_counter() - start

        loop.run_until_complete(async_block(opts.block))  # warm-up: connections, statements
        sync_block(opts.block)
        spent = {"async": 0.0, "sync": 0.0}
        done = 0
        while done < opts.jobs:
            n = min(opts.block, opts.jobs - done)
            if (done // opts.block) % 2:  # alternate which side goes first
                spent["sync"] += sync_block(n)
                spent["async"] += loop.run_until_complete(async_block(n))
            else:
                spent["async"] += loop.run_until_complete(async_block(n))
                spent["sync"] += sync_block(n)
            done += n
        rate = {side: opts.jobs / s for side, s in spent.items()}
        label = " (tracing on)" if opts.otel else ""
        label += " (unique job)" if opts.unique else ""
        print(f"enqueue one at a time{label}, {opts.jobs} jobs per side, blocks of {opts.block}")
        print(f"  await app.enqueue   {rate['async']:8.0f} jobs/s")
        print(f"  app.enqueue_sync    {rate['sync']:8.0f} jobs/s")
        print(f"  sync / async        {rate['sync'] / rate['async']:8.2f}")
        loop.run_until_complete(app.close())
    finally:
        loop.run_until_complete(common.drop_database(admin, url))
        loop.close()


if __name__ == "__main__":
    main()
