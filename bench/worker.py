"""One worker process of one system: ``python -m bench.worker SYSTEM URL MODE [options]``.

MODE ``drain`` runs until the queue is empty and reports when it got there; MODE ``serve``
runs until STOP and reports each job's enqueue-to-start latency. The process sets up
everything (imports, connections, prepared statements) before it says READY, so only the
work after GO is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from bench.common import emit, now, read_word, stdin_reader


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("system")
    parser.add_argument("url")
    parser.add_argument("mode", choices=["drain", "serve"])
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--config", default="b10", help="pgqueuer configuration")
    parser.add_argument(
        "--instrument", action="store_true", help="Soniq: all telemetry on (--telemetry full)"
    )
    parser.add_argument(
        "--telemetry",
        choices=["full", "production", "floor", "floor-production"],
        help="Soniq: full = traces sampled at 100 %%, metrics, JSON logs; production = "
        "parent-based 10 %% trace sampling, metrics, JSON logs at default levels; floor = "
        "only full's library calls (bench.telemetry_floor); floor-production = only "
        "production's",
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="drain: stop after this many jobs (Soniq only)"
    )
    parser.add_argument(
        "--marks", type=int, default=0, help="drain: report the time every N jobs (quarters)"
    )
    opts = parser.parse_args()

    latencies: list[float] = []
    marks: list[float] = []
    ran = 0
    reached = 0.0
    worker: Any = None

    async def job(payload: dict[str, Any]) -> None:
        nonlocal ran, reached
        ran += 1
        if opts.marks and ran % opts.marks == 0:
            marks.append(now())
        if ran == opts.limit:
            reached = now()
            worker.stop()
        t = payload.get("t")
        if t:
            latencies.append(time.time() - t)

    stdin = await stdin_reader()
    telemetry: Any = None
    if opts.system == "soniq":
        from bench.sys_soniq import Telemetry, make_app

        app = make_app(opts.url, job)
        profile = opts.telemetry or ("full" if opts.instrument else None)
        if profile is not None:
            telemetry = Telemetry(profile)
            missing = telemetry.install(app)
            if missing is not None:
                emit("READY")
                await read_word(stdin)
                emit("RESULT", {"na": missing})
                return
        await app.pool()
        worker = app.worker(
            concurrency=opts.concurrency,
            run_once=opts.mode == "drain" and not opts.limit,
            install_signal_handlers=False,
        )
        run = worker.run
    elif opts.system == "pgqueuer":
        from bench.sys_pgqueuer import PgQueuerWorker

        worker = PgQueuerWorker(opts.url, job, opts.config)
        await worker.prepare()
        run = worker.drain if opts.mode == "drain" else worker.serve
    else:
        from bench.sys_minimal import MinimalWorker

        worker = MinimalWorker(opts.url, job)
        run = worker.drain if opts.mode == "drain" else worker.serve

    emit("READY")
    if await read_word(stdin) != "GO":
        return
    started = now()
    if opts.mode == "drain":
        # CPU of every thread of this process (the span processor's too), per drain.
        cpu_started = time.process_time()
        await run()
        result = {
            "start": started,
            "end": reached or now(),
            "ran": ran,
            "marks": marks,
            "cpu": time.process_time() - cpu_started,
        }
        if telemetry is not None:
            result.update(telemetry.finish())
        emit("RESULT", result)
        return
    task = asyncio.create_task(run())
    word_task = asyncio.create_task(read_word(stdin))
    await asyncio.wait([task, word_task], return_when=asyncio.FIRST_COMPLETED)
    worker.stop()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(task, 30)
    if task.done() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    emit("RESULT", {"ran": ran, "latencies": latencies})


if __name__ == "__main__":
    asyncio.run(main())
