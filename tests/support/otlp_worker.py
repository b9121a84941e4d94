"""What the OTLP tests share: a ``soniq worker`` process started from an app module the test
writes, stopped as an operator would (SIGTERM), and the producer side's OTLP exporters aimed
at the test's receiver (tests/support/otlp_receiver.py)."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.otlp_receiver import OtlpReceiver


def start_worker(
    app_dir: Path, database_url: str, *args: str, worker_app: str, **env: str
) -> subprocess.Popen[str]:
    """``python -m soniq worker <worker_app> <args>`` in ``app_dir``, with no ``OTEL_*`` of
    this process: only those in ``env`` configure it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.Popen(
        [sys.executable, "-m", "soniq", "worker", worker_app, *args],
        cwd=app_dir,
        env={**clean, "SONIQ_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def stop_worker(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, float]:
    """SIGTERM, then wait; returns (exit code, output, seconds it took to exit)."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        output, _ = await asyncio.to_thread(proc.communicate, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(f"worker did not exit within {timeout}s:\n{output}") from None
    return proc.returncode, output, time.monotonic() - started


# signal -> (exporter module suffix, class name, HTTP path)
_EXPORTERS = {
    "traces": ("trace_exporter", "OTLPSpanExporter", "/v1/traces"),
    "metrics": ("metric_exporter", "OTLPMetricExporter", "/v1/metrics"),
}


def otlp_exporter(signal_name: str, protocol: str, receiver: OtlpReceiver) -> Any:
    """The SDK's OTLP exporter of ``signal_name`` ("traces" or "metrics") over ``protocol``
    ("grpc" or "http/protobuf"), sending to ``receiver``."""
    module, cls, path = _EXPORTERS[signal_name]
    if protocol == "grpc":
        grpc = importlib.import_module(f"opentelemetry.exporter.otlp.proto.grpc.{module}")
        return getattr(grpc, cls)(endpoint=receiver.grpc_endpoint, insecure=True)
    http = importlib.import_module(f"opentelemetry.exporter.otlp.proto.http.{module}")
    return getattr(http, cls)(endpoint=f"{receiver.http_endpoint}{path}")
