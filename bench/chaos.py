"""The long chaos run: worker processes SIGKILLed and restarted at random over many jobs.

    .venv/bin/python bench/chaos.py --jobs 50000 --kills 40

Prints one summary line and every problem found (an overlap of two attempts of one job, a job
not done, a re-run no kill explains, counts that do not reconcile); exits 1 if there is any.
The same engine runs in the test suite as tests/test_reliability_chaos.py, shorter.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the worker app is in tests/apps
from tests.apps.benchdb import bench_database
from tests.apps.chaos import run_chaos


async def main(args: argparse.Namespace) -> int:
    async with bench_database("soniq_chaos") as url:
        with tempfile.TemporaryDirectory(prefix="soniq-chaos-") as folder:
            report = await run_chaos(
                url,
                Path(folder),
                jobs=args.jobs,
                workers=args.workers,
                concurrency=args.concurrency,
                lease=args.lease,
                kills=args.kills,
                pause=(args.min_pause, args.max_pause),
                deadline=args.deadline,
                seed=args.seed,
            )
    print(report.summary())
    for problem in report.problems[:50]:
        print("PROBLEM:", problem)
    return 1 if report.problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--lease", type=float, default=2.0, help="lease_seconds of the workers")
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--min-pause", type=float, default=0.3, help="seconds between kills")
    parser.add_argument("--max-pause", type=float, default=2.0)
    parser.add_argument("--deadline", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=None)
    sys.exit(asyncio.run(main(parser.parse_args())))
