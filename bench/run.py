"""Soniq against pgqueuer and a minimal asyncpg loop, on one PostgreSQL server, in one run.

    python -m bench            # full run (about ten minutes on two cores)
    python -m bench --quick    # smaller counts, fewer repetitions (about two minutes)

Each system gets its own fresh database on the same server. Every scenario is repeated and
the repetitions are interleaved (system order rotates each round), so a noisy neighbour hurts
all systems alike; the table shows medians and ratios of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import (
    WorkerProcess,
    admin_url,
    create_database,
    drop_database,
    median,
    now,
    percentile,
)
from bench.sys_minimal import Minimal
from bench.sys_pgqueuer import CONFIGS as PGQ_CONFIGS
from bench.sys_pgqueuer import PgQueuerSystem
from bench.sys_soniq import SoniqSystem

RESULTS_DIR = Path(__file__).parent / "results"


@dataclass
class Sizes:
    reps: int
    single: int
    batch: int
    drain: int
    latency_seconds: float
    latency_rate: float
    scale_reps: int
    scale_queued: int
    scale_finished: int


FULL = Sizes(
    reps=3,
    single=2000,
    batch=20_000,
    drain=20_000,
    latency_seconds=8.0,
    latency_rate=200.0,
    scale_reps=3,
    scale_queued=1_000_000,
    scale_finished=1_000_000,
)
QUICK = Sizes(
    reps=2,
    single=500,
    batch=5_000,
    drain=5_000,
    latency_seconds=3.0,
    latency_rate=200.0,
    scale_reps=1,
    scale_queued=200_000,
    scale_finished=200_000,
)

# A drain "variant" is one system in one configuration.
DRAIN_VARIANTS: list[tuple[str, str, list[str]]] = [
    ("soniq", "soniq", []),
    ("soniq+telemetry", "soniq", ["--instrument"]),
    *((f"pgqueuer[{name}]", "pgqueuer", ["--config", name]) for name in PGQ_CONFIGS),
    ("minimal", "minimal", []),
]

# The telemetry scenario (issue 20): the plain drain and two instrumented profiles, one process.
TELEMETRY_PROFILES: list[tuple[str, list[str]]] = [
    ("plain", []),
    ("full", ["--telemetry", "full"]),
    ("production", ["--telemetry", "production"]),
    # (c)'s floor in a drain: only profile (a)'s library calls, from one thin step.
    ("floor", ["--telemetry", "floor"]),
    # The same for (b): the most (b) could reach here with any instrumentation at all.
    ("floor_production", ["--telemetry", "floor-production"]),
]
FLOOR_LABEL = "floor: (a)'s library calls only, none of Soniq's layers"
FLOOR_PRODUCTION_LABEL = "(b)'s floor: (b)'s library calls only (its best ratio)"
TELEMETRY_TARGETS = {"full": 0.35, "production": 0.6, "own_us": 15.0}

System = SoniqSystem | PgQueuerSystem | Minimal


async def poll_until_zero(count: Callable[[], Awaitable[int]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and await count():  # noqa: ASYNC110 (a database count)
        await asyncio.sleep(0.05)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    def __init__(self, sizes: Sizes, only: set[str] | None, with_scale: bool) -> None:
        self.sizes = sizes
        self.only = only
        self.with_scale = with_scale
        self.admin = admin_url()
        self.urls: dict[str, str] = {}
        self.systems: dict[str, System] = {}
        # results[scenario][variant] -> list of samples (jobs/s, or latency lists)
        self.results: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        self.notes: dict[str, str] = {}
        # CPU microseconds per job of the worker process(es) in the last drain.
        self.last_cpu_us = 0.0
        self.telemetry_cpu: dict[str, list[float]] = defaultdict(list)
        self.telemetry_floor: dict[str, float] = {}

    def wanted(self, scenario: str) -> bool:
        return self.only is None or scenario in self.only

    # -- set-up ----------------------------------------------------------------------------
    async def open(self) -> None:
        makers: dict[str, Callable[[str], System]] = {
            "soniq": SoniqSystem,
            "pgqueuer": PgQueuerSystem,
            "minimal": Minimal,
        }
        for name, make in makers.items():
            url = await create_database(self.admin, name)
            self.urls[name] = url
            system = make(url)
            await system.open()
            await system.install()
            self.systems[name] = system

    async def close(self) -> None:
        for system in self.systems.values():
            await system.close()
        for url in self.urls.values():
            await drop_database(self.admin, url)

    async def analyze(self, name: str) -> None:
        # This server runs with autovacuum off; production ones analyse on their own.
        conn = await asyncpg.connect(self.urls[name])
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    async def preload(self, name: str, n: int) -> None:
        system = self.systems[name]
        await system.reset()
        chunk = 1000
        for start in range(0, n, chunk):
            await system.enqueue_batch([{"i": i} for i in range(start, min(n, start + chunk))])
        await self.analyze(name)

    # -- scenarios -------------------------------------------------------------------------
    async def enqueue(self, names: list[str], batch: int) -> dict[str, float]:
        """Enqueue rate per system. The work is cut into small blocks that alternate between
        the systems, so a slow patch of the shared disk (every single enqueue waits for a WAL
        flush) lands on all of them alike."""
        total = self.sizes.batch if batch > 1 else self.sizes.single
        per_block = 10 * batch if batch > 1 else 50
        spent = dict.fromkeys(names, 0.0)
        for name in names:
            system = self.systems[name]
            await system.reset()
            for i in range(20):  # warm the statement cache and the pool
                if batch > 1:
                    await system.enqueue_batch([{"i": -i}] * batch)
                else:
                    await system.enqueue_one({"i": -i})
        for block, start in enumerate(range(0, total, per_block)):
            turn = block % len(names)
            for name in names[turn:] + names[:turn]:
                system = self.systems[name]
                if batch > 1:
                    chunks = [
                        [{"i": i} for i in range(s, s + batch)]
                        for s in range(start, start + per_block, batch)
                    ]
                    t0 = time.perf_counter()
                    for chunk in chunks:
                        await system.enqueue_batch(chunk)
                else:
                    t0 = time.perf_counter()
                    for i in range(start, start + per_block):
                        await system.enqueue_one({"i": i})
                spent[name] += time.perf_counter() - t0
        done = len(range(0, total, per_block)) * per_block
        return {name: done / spent[name] for name in names}

    async def drain(self, variant: str, processes: int, n: int | None = None) -> float | str:
        _, system_name, extra = next(v for v in DRAIN_VARIANTS if v[0] == variant)
        n = n or self.sizes.drain
        await self.preload(system_name, n)
        if variant == "soniq" and processes == 1:
            quarters: list[float] = []
            rate = await self.run_drain(system_name, extra, processes, n, quarters=quarters)
            self.results["quarters"]["analyzed"].append(quarters)
            return rate
        return await self.run_drain(system_name, extra, processes, n)

    async def drain_unanalyzed(self) -> float:
        """Soniq draining into a table that has never had statistics: a fresh database whose
        jobs are queued with no ANALYZE after (this server has autovacuum off, as a new
        production table has none either until autovacuum first gets to it). The claim's plan
        must not depend on them: issue 13 asks for this drain within 15 % of the analysed one,
        quarter by quarter."""
        n = self.sizes.drain
        url = await create_database(self.admin, "soniq_fresh")
        system = SoniqSystem(url)
        try:
            await system.open()
            await system.install()
            for start in range(0, n, 1000):
                await system.enqueue_batch([{"i": i} for i in range(start, min(n, start + 1000))])
            quarters: list[float] = []
            rate = await self.run_drain("soniq", [], 1, n, system=system, quarters=quarters)
            self.results["quarters"]["never analyzed"].append(quarters)
            assert isinstance(rate, float)
            return rate
        finally:
            await system.close()
            await drop_database(self.admin, url)

    async def run_drain(
        self,
        system_name: str,
        extra: list[str],
        processes: int,
        n: int,
        backlog: bool = False,
        *,
        system: SoniqSystem | None = None,
        quarters: list[float] | None = None,
    ) -> float | str:
        """Jobs per second draining n jobs; with ``backlog`` more are queued than n and the
        (single) worker stops at the n-th. ``system`` drains another database of the system
        than its usual one; ``quarters`` (one process) receives the rate of each quarter of the
        drain."""
        url = system.url if system is not None else self.urls[system_name]
        if quarters is not None:
            extra = [*extra, "--marks", str(n // 4)]
        workers = [WorkerProcess([system_name, url, "drain", *extra]) for _ in range(processes)]
        try:
            for w in workers:
                await w.start()
            for w in workers:
                await w.wait_ready()
            t0 = now()
            for w in workers:
                w.send("GO")
            results = [await w.finish() for w in workers]
        finally:
            for w in workers:
                await w.kill()
        if any("na" in r for r in results):
            return "n/a: " + str(results[0].get("na"))
        elapsed = max(r["end"] for r in results) - t0
        if quarters is not None:
            times = [t0, *results[0]["marks"][:4]]
            quarters[:] = [(n // 4) / (b - a) for a, b in itertools.pairwise(times)]
        left = 0 if backlog else await (system or self.systems[system_name]).remaining()
        ran = sum(r["ran"] for r in results)
        if left or ran < n:
            raise RuntimeError(f"{system_name} drain left {left} jobs, ran {ran} of {n}")
        if "spans" in results[0]:
            # One job.done line per job, and one process span per attempt (sampled at 100 %)
            # or about a tenth of them (10 %), at least: fewer would mean telemetry was dropped
            # and the figure flattered.
            spans = sum(r["spans"] for r in results)
            lines = sum(r["log_lines"] for r in results)
            sampled = not any(arg.endswith("production") for arg in extra)
            wanted_spans = n if sampled else n // 20
            if spans < wanted_spans or lines < n or (not sampled and spans > n // 5):
                raise RuntimeError(f"telemetry dropped: {spans} spans, {lines} log lines")
        self.last_cpu_us = sum(r.get("cpu", 0.0) for r in results) / n * 1e6
        return n / elapsed

    async def latency(self, names: list[str]) -> dict[str, list[float]]:
        """Enqueue one job at a time at a steady rate into each system's running worker;
        returns enqueue-to-start latencies (seconds) per system.

        All workers run at once (an idle one costs nothing) and the producer feeds them in
        one-second turns, so a noisy neighbour hits all systems alike. Each system's first
        turn is a warm-up and is not recorded.
        """
        workers: dict[str, WorkerProcess] = {}
        for name in names:
            await self.systems[name].reset()
            extra = ["--config", "b10"] if name == "pgqueuer" else []
            workers[name] = WorkerProcess([name, self.urls[name], "serve", *extra])
        try:
            for w in workers.values():
                await w.start()
            for w in workers.values():
                await w.wait_ready()
            for w in workers.values():
                w.send("GO")
            await asyncio.sleep(0.3)  # let them reach their idle wait
            rate = self.sizes.latency_rate
            per_turn = int(rate)
            turns = 1 + max(1, round(self.sizes.latency_seconds))
            sent = dict.fromkeys(names, 0)
            for turn in range(turns):
                shift = turn % len(names)
                for name in names[shift:] + names[:shift]:
                    system = self.systems[name]
                    start = time.monotonic()
                    for i in range(per_turn):
                        delay = start + i / rate - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        # Warm-up jobs carry t=0 and are not recorded.
                        t = time.time() if turn else 0.0
                        await system.enqueue_one({"i": i, "t": t})
                    sent[name] += per_turn if turn else 0
                    # Let the last jobs of this turn start before the next system's turn.
                    await poll_until_zero(system.remaining, 30)
            for w in workers.values():
                w.send("STOP")
            results = {name: await w.finish() for name, w in workers.items()}
        finally:
            for w in workers.values():
                await w.kill()
        out: dict[str, list[float]] = {}
        for name, result in results.items():
            lat: list[float] = result["latencies"]
            if len(lat) < sent[name]:
                raise RuntimeError(f"{name}: only {len(lat)} of {sent[name]} latency samples")
            out[name] = lat
        return out

    # -- telemetry cost (Soniq only) --------------------------------------------------------
    async def telemetry(self, rep: int) -> None:
        """The plain drain and the two instrumented profiles, one process each, rotated."""
        turn = rep % len(TELEMETRY_PROFILES)
        for name, extra in TELEMETRY_PROFILES[turn:] + TELEMETRY_PROFILES[:turn]:
            await self.preload("soniq", self.sizes.drain)
            rate = await self.run_drain("soniq", extra, 1, self.sizes.drain)
            assert isinstance(rate, float)
            self.results["telemetry"][name].append(rate)
            self.telemetry_cpu[name].append(self.last_cpu_us)

    async def measure_telemetry_floor(self) -> None:
        """What the libraries alone cost per job of the full profile: one recorded SDK span
        and one JSON log record (bench/telemetry_floor.py), in this process; and the full
        profile's chain against the plain one in a tight loop, timed the same way."""
        from bench import telemetry_floor

        # Five interleaved rounds, the least of each: other load on the machine only ever adds
        # to a timing, and the four are subtracted from one another.
        calls = 5_000
        runs: dict[str, list[float]] = defaultdict(list)
        for _ in range(5):
            runs["span_us"].append(telemetry_floor.span_cost_us(calls))
            runs["log_record_us"].append(telemetry_floor.log_record_cost_us(calls))
            runs["libraries_us"].append(telemetry_floor.libraries_cost_us(calls))
            runs["chain_plain_us"].append(await telemetry_floor.chain_cost_us(False, calls))
            runs["chain_full_us"].append(await telemetry_floor.chain_cost_us(True, calls))
        self.telemetry_floor = {name: min(values) for name, values in runs.items()}

    # -- scale check (Soniq only) ----------------------------------------------------------
    async def scale(self) -> None:
        s = self.sizes
        soniq = self.systems["soniq"]
        assert isinstance(soniq, SoniqSystem)
        n = s.drain
        for rep in range(s.scale_reps):
            log(f"scale round {rep + 1}/{s.scale_reps}")
            await soniq.reset()
            await soniq.bulk_rows(n)
            await soniq.settle()
            limit = ["--limit", str(n)]
            self.results["scale"][f"{n:,} queued"].append(
                await self.run_drain("soniq", limit, 1, n)
            )
            await soniq.reset()
            await soniq.bulk_rows(s.scale_queued)
            await soniq.settle()
            self.results["scale"][f"{s.scale_queued:,} queued"].append(
                await self.run_drain("soniq", limit, 1, n, backlog=True)
            )
            # The rest of the million is still queued: drained 20k of it, not all of it.
            await soniq.reset()
            await soniq.bulk_rows(s.scale_finished, "done")
            await soniq.bulk_rows(s.scale_finished // 10, "dead_letter")
            await soniq.bulk_rows(n)
            await soniq.settle()
            label = f"{n:,} queued + {s.scale_finished:,} done + {s.scale_finished // 10:,} dead"
            self.results["scale"][label].append(await self.run_drain("soniq", limit, 1, n))
        await soniq.reset()

    # -- the run ---------------------------------------------------------------------------
    async def run(self) -> None:
        s = self.sizes
        names = ["soniq", "pgqueuer", "minimal"]
        variants = [v[0] for v in DRAIN_VARIANTS]
        for rep in range(s.reps):
            turn = rep % len(names)
            order = names[turn:] + names[:turn]
            vorder = variants[turn:] + variants[:turn]
            log(f"round {rep + 1}/{s.reps}")
            if self.wanted("enqueue"):
                for name, rate in (await self.enqueue(order, 1)).items():
                    self.results["enqueue one at a time"][name].append(rate)
                for name, rate in (await self.enqueue(order, 100)).items():
                    self.results["enqueue_many (100 per call)"][name].append(rate)
            if self.wanted("drain"):
                for processes in (1, 2):
                    key = f"drain {s.drain:,}, {processes} process{'es' if processes > 1 else ''}"
                    for variant in vorder:
                        got = await self.drain(variant, processes)
                        if isinstance(got, str):
                            self.notes[variant] = got
                        else:
                            self.results[key][variant].append(got)
                    if processes == 1:
                        self.results[key]["soniq, never analyzed"].append(
                            await self.drain_unanalyzed()
                        )
            if self.wanted("latency"):
                for name, samples in (await self.latency(order)).items():
                    self.results["latency"][name].append(samples)
            if self.wanted("telemetry"):
                await self.telemetry(rep)
            log("round done")
        if self.with_scale and self.wanted("scale"):
            await self.scale()
        if self.wanted("telemetry"):
            await self.measure_telemetry_floor()

    # -- report ----------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"throughput": {}, "latency": {}, "scale": {}, "notes": self.notes}
        for scenario, per in self.results.items():
            if scenario in ("latency", "scale", "quarters", "telemetry"):
                continue
            out["throughput"][scenario] = {
                v: {"median": median(samples), "samples": samples} for v, samples in per.items()
            }
        for name, runs in self.results.get("latency", {}).items():
            p50 = [percentile(r, 50) * 1000 for r in runs]
            p99 = [percentile(r, 99) * 1000 for r in runs]
            out["latency"][name] = {
                "p50_ms": median(p50),
                "p99_ms": median(p99),
                "p50_samples": p50,
                "p99_samples": p99,
            }
        for label, samples in self.results.get("scale", {}).items():
            out["scale"][label] = {"median": median(samples), "samples": samples}
        out["quarters"] = {
            label: [median([run[q] for run in runs]) for q in range(4)]
            for label, runs in self.results.get("quarters", {}).items()
            if runs and all(len(run) == 4 for run in runs)
        }
        rates = self.results.get("telemetry", {})
        if rates:
            tel: dict[str, Any] = {
                name: {
                    "median": median(rates[name]),
                    "samples": rates[name],
                    "cpu_us_per_job": median(self.telemetry_cpu[name]),
                    "cpu_samples": self.telemetry_cpu[name],
                }
                for name in rates
            }
            floor = self.telemetry_floor
            tel["floor_loop"] = floor
            plain = tel["plain"]
            tel["ratio_full"] = tel["full"]["median"] / plain["median"]
            tel["ratio_production"] = tel["production"]["median"] / plain["median"]
            tel["ratio_floor_production"] = tel["floor_production"]["median"] / plain["median"]
            # (c): profile (a)'s worker CPU per job less the floor drain's, round by round (each
            # round runs both, so a slow patch of the machine lands on both).
            pairs = zip(self.telemetry_cpu["full"], self.telemetry_cpu["floor"], strict=True)
            tel["own_us_samples"] = [full - lib for full, lib in pairs]
            tel["own_us"] = median(tel["own_us_samples"])
            if floor:
                libraries = floor["libraries_us"]
                tel["own_us_loop_floor"] = (
                    tel["full"]["cpu_us_per_job"] - plain["cpu_us_per_job"] - libraries
                )
                tel["own_us_chain"] = floor["chain_full_us"] - floor["chain_plain_us"] - libraries
                # The same with the floor taken apart (span alone + record alone), for comparison
                # with figures before the joint floor.
                tel["own_us_chain_apart"] = (
                    tel["own_us_chain"] + libraries - floor["span_us"] - floor["log_record_us"]
                )
            out["telemetry"] = tel
        return out


def best_pgq(row: dict[str, Any]) -> tuple[str, float] | None:
    found = [(v, d["median"]) for v, d in row.items() if v.startswith("pgqueuer")]
    return max(found, key=lambda x: x[1]) if found else None


def print_table(report: dict[str, Any], sizes: Sizes) -> str:
    lines: list[str] = []
    add = lines.append
    add("")
    add("Throughput, jobs/s (median of runs; ratios are Soniq / other)")
    head = (
        f"{'scenario':<34}{'soniq':>9}{'+telemetry':>12}{'pgqueuer':>10}{'minimal':>9}"
        f"{'vs pgq':>8}{'vs min':>8}{'tel/soniq':>10}"
    )
    add(head)
    add("-" * len(head))
    for scenario, row in report["throughput"].items():
        soniq = row.get("soniq", {}).get("median", float("nan"))
        tel = row.get("soniq+telemetry", {}).get("median")
        pgq = best_pgq(row) if scenario.startswith("drain") else None
        pgq_v = pgq[1] if pgq else row.get("pgqueuer", {}).get("median", float("nan"))
        mini = row.get("minimal", {}).get("median", float("nan"))
        tel_s = f"{tel:>12,.0f}" if tel is not None else f"{'n/a':>12}"
        ratio_t = f"{tel / soniq:>10.2f}" if tel is not None else f"{'':>10}"
        add(
            f"{scenario:<34}{soniq:>9,.0f}{tel_s}{pgq_v:>10,.0f}{mini:>9,.0f}"
            f"{soniq / pgq_v:>8.2f}{soniq / mini:>8.2f}{ratio_t}"
        )
        if pgq is not None:
            others = ", ".join(
                f"{v.split('[')[1][:-1]} {d['median']:,.0f}"
                for v, d in row.items()
                if v.startswith("pgqueuer")
            )
            add(f"{'':<4}pgqueuer configurations: {others} (best used)")
            c10 = row.get("pgqueuer[b5c10]", {}).get("median")
            if c10:
                add(f"{'':<4}Soniq / pgqueuer at concurrency 10 (b5c10): {soniq / c10:.2f}")
    if report["latency"]:
        add("")
        add(f"Enqueue-to-start latency at {sizes.latency_rate:.0f} jobs/s, ms (median of runs)")
        head = f"{'system':<12}{'p50':>8}{'p99':>8}{'p50/min':>9}{'p99/min':>9}"
        add(head)
        add("-" * len(head))
        lat = report["latency"]
        mini = lat.get("minimal")
        for name, d in lat.items():
            r50 = d["p50_ms"] / mini["p50_ms"] if mini else float("nan")
            r99 = d["p99_ms"] / mini["p99_ms"] if mini else float("nan")
            add(f"{name:<12}{d['p50_ms']:>8.2f}{d['p99_ms']:>8.2f}{r50:>9.2f}{r99:>9.2f}")
    if report["scale"]:
        add("")
        add(f"Scale: Soniq draining {sizes.drain:,} jobs, one process, jobs/s")
        base = None
        for label, d in report["scale"].items():
            base = base or d["median"]
            add(f"  {label:<58}{d['median']:>9,.0f}{d['median'] / base:>7.2f}x")
    quarters = report.get("quarters", {})
    if "analyzed" in quarters and "never analyzed" in quarters:
        add("")
        row = next(r for k, r in report["throughput"].items() if k.endswith("1 process"))
        plain, fresh = row["soniq"]["median"], row["soniq, never analyzed"]["median"]
        add(
            f"Soniq drain into a never-analyzed table: {fresh:,.0f} jobs/s, "
            f"{fresh / plain:.2f} of the analyzed drain ({plain:,.0f})"
        )
        add("Soniq drain by quarter, 1 process, jobs/s (median of runs)")
        for label in ("analyzed", "never analyzed"):
            add(f"  {label:<16}" + "".join(f"{r:>9,.0f}" for r in quarters[label]))
        ratios = [
            u / a for u, a in zip(quarters["never analyzed"], quarters["analyzed"], strict=True)
        ]
        add(f"  {'ratio':<16}" + "".join(f"{r:>9.2f}" for r in ratios))
    tel = report.get("telemetry")
    if tel:
        t = TELEMETRY_TARGETS
        plain, full, prod = tel["plain"], tel["full"], tel["production"]
        add("")
        add(f"Telemetry cost: draining {sizes.drain:,} no-op jobs, one process (median of runs)")
        head = f"{'profile':<58}{'jobs/s':>9}{'CPU us/job':>12}{'ratio':>8}"
        add(head)
        add("-" * len(head))
        add(f"{'plain':<58}{plain['median']:>9,.0f}{plain['cpu_us_per_job']:>12.1f}")
        add(
            f"{'(a) traces 100 % + metrics + JSON logs':<58}{full['median']:>9,.0f}"
            f"{full['cpu_us_per_job']:>12.1f}{tel['ratio_full']:>8.2f}"
            f"   target >= {t['full']}"
        )
        add(
            f"{'(b) parent-based 10 % + metrics + JSON logs (default lvl)':<58}"
            f"{prod['median']:>9,.0f}{prod['cpu_us_per_job']:>12.1f}"
            f"{tel['ratio_production']:>8.2f}   target >= {t['production']}"
        )
        best = tel["floor_production"]
        add(
            f"{FLOOR_PRODUCTION_LABEL:<58}{best['median']:>9,.0f}{best['cpu_us_per_job']:>12.1f}"
            f"{tel['ratio_floor_production']:>8.2f}"
        )
        lib = tel["floor"]
        add(f"{FLOOR_LABEL:<58}{lib['median']:>9,.0f}{lib['cpu_us_per_job']:>12.1f}")
        samples = ", ".join(f"{v:.1f}" for v in tel["own_us_samples"])
        add(
            f"(c) Soniq's own share of (a), target <= {t['own_us']:.0f} us: (a) less the floor, "
            f"worker CPU per job, each round: {samples}; median {tel['own_us']:.1f} us/job"
        )
        floor = tel.get("floor_loop")
        if floor:
            add(
                f"    tight loops in this process (best of 5): library floor "
                f"{floor['libraries_us']:.1f} us (a span and a record in one loop; apart "
                f"{floor['span_us']:.1f} + {floor['log_record_us']:.1f}); the chain alone "
                f"{floor['chain_full_us']:.1f} - {floor['chain_plain_us']:.1f} - floor = "
                f"{tel['own_us_chain']:.1f} us/attempt"
            )
            add(
                f"    the drain less the tight-loop floor: {full['cpu_us_per_job']:.1f} - "
                f"{plain['cpu_us_per_job']:.1f} - {floor['libraries_us']:.1f} = "
                f"{tel['own_us_loop_floor']:.1f} us/job (the libraries cost more in a drain "
                f"than in a loop: floor drain - plain = "
                f"{lib['cpu_us_per_job'] - plain['cpu_us_per_job']:.1f} us/job)"
            )
    for variant, why in report["notes"].items():
        add(f"note: {variant}: {why}")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {platform.system()}"


async def amain(opts: argparse.Namespace) -> None:
    sizes = QUICK if opts.quick else FULL
    if opts.reps:
        sizes.reps = opts.reps
    only = set(opts.only.split(",")) if opts.only else None
    bench = Bench(sizes, only, with_scale=not opts.no_scale)
    log(f"machine: {machine()}")
    await bench.open()
    conn = await asyncpg.connect(bench.admin)
    server = await conn.fetchval("SHOW server_version")
    await conn.close()
    log(f"PostgreSQL {server} at {bench.admin.rsplit('@', 1)[-1]}")
    t0 = time.monotonic()
    try:
        await bench.run()
    finally:
        await bench.close()
    report = bench.report()
    report["machine"] = machine()
    report["postgres"] = server
    report["seconds"] = time.monotonic() - t0
    report["sizes"] = vars(sizes)
    table = print_table(report, sizes)
    log(f"finished in {report['seconds']:.0f}s")
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS_DIR / f"{stamp}.json").write_text(json.dumps(report, indent=1))
    (RESULTS_DIR / f"{stamp}.txt").write_text(table + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, two rounds")
    parser.add_argument("--reps", type=int, help="rounds (default 3, quick 2)")
    parser.add_argument(
        "--only", help="comma-separated subset of: enqueue,drain,latency,telemetry,scale"
    )
    parser.add_argument("--no-scale", action="store_true", help="skip the 1M-row scale check")
    asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    main()
