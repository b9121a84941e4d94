"""What ``pgbouncer=True`` costs: single enqueues and a drain, the setting off and on, in one run.

    .venv/bin/python -m bench.pgbouncer_cost [--enqueues 1000] [--jobs 5000] [--rounds 3]

(from the repository root, like ``python -m bench``).

Three apps on one scratch database: ``direct`` (the default), ``direct+setting``
(``pgbouncer=True`` straight to PostgreSQL: what the setting itself costs, chiefly one more
round trip per statement, since nothing is prepared for later), and ``pgbouncer`` (the setting
through a real PgBouncer in transaction mode, 10 server connections; skipped when the
``pgbouncer`` program is missing). Single enqueues alternate in blocks of 50 between the apps;
drains (one worker, concurrency 10, ``run_once``) rotate their order each round. The table
shows medians and each one's ratio to ``direct``.

The database: ``BENCH_DATABASE_URL``, else ``SONIQ_TEST_DATABASE_URL``, else
postgresql://postgres@127.0.0.1:5432/postgres; a scratch database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Iterator

from tests.support.programs import find_program

from bench import common
from soniq import Soniq

JOB = "bench.noop"


def make_app(url: str, pgbouncer: bool) -> Soniq:
    app = Soniq(url, pgbouncer=pgbouncer, poll_interval=1.0)

    @app.job(name=JOB)
    async def noop(i: int) -> None:
        return None

    return app


@contextlib.contextmanager
def maybe_pgbouncer(url: str) -> Iterator[str | None]:
    if find_program("pgbouncer") is None:
        print("pgbouncer is not installed (apt-get install pgbouncer): its row is skipped")
        yield None
        return
    from tests.support.pgbouncer import pgbouncer

    with pgbouncer(url, pool_size=10) as bounced:
        yield bounced


async def run(opts: argparse.Namespace, url: str, bounced: str | None) -> None:
    apps = {"direct": make_app(url, False), "direct+setting": make_app(url, True)}
    if bounced is not None:
        apps["pgbouncer"] = make_app(bounced, True)
    await apps["direct"].setup()
    enqueue = {name: 0.0 for name in apps}
    drains: dict[str, list[float]] = {name: [] for name in apps}
    names = list(apps)
    for app in apps.values():  # warm-up: connections
        await app.enqueue(JOB, i=0)
    for block in range(0, opts.enqueues, 50):
        for name in names[block // 50 % len(names) :] + names[: block // 50 % len(names)]:
            app = apps[name]
            started = time.perf_counter()
            for i in range(50):
                await app.enqueue(JOB, i=i)
            enqueue[name] += time.perf_counter() - started
    for r in range(opts.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            result = await common.drain(
                apps[name], JOB, opts.jobs, 10, args=lambda i: {"i": i}, loader=apps["direct"]
            )
            drains[name].append(opts.jobs / result.seconds)
    print(
        f"{'':16} {'enqueue/s':>10} {'ratio':>6}   {'drain/s':>9} {'ratio':>6}"
        f"   ({opts.enqueues} single enqueues, drains of {opts.jobs}, {opts.rounds} rounds)"
    )
    base_e = opts.enqueues / enqueue["direct"]
    base_d = common.median(drains["direct"])
    for name in names:
        e = opts.enqueues / enqueue[name]
        d = common.median(drains[name])
        print(f"{name:16} {e:10.0f} {e / base_e:6.2f}   {d:9.0f} {d / base_d:6.2f}")
    for app in apps.values():
        await app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--enqueues", type=int, default=1000, help="single enqueues per app")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per drain")
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    admin = common.admin_url()
    url = asyncio.run(common.create_database(admin, "pgbouncer_cost"))
    try:
        with maybe_pgbouncer(url) as bounced:
            asyncio.run(run(opts, url, bounced))
    finally:
        asyncio.run(common.drop_database(admin, url))


if __name__ == "__main__":
    main()
