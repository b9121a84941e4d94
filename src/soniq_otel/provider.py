"""Where spans go: the application's tracer provider, or one built from ``OTEL_*`` variables.

The SDK and the OTLP exporters read almost every variable themselves (sampler, resource,
endpoint, headers, timeouts, batch sizes); this module only picks the exporter and protocol,
which the SDK leaves to its auto-configuration entry points, and bounds the time spent flushing.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from soniq.errors import ConfigurationError

logger = logging.getLogger("soniq.otel")

# The OpenTelemetry specification's default; Jaeger and the Collector accept both.
DEFAULT_PROTOCOL = "http/protobuf"

_lock = threading.Lock()


def global_or_built(service_name: str, flush_timeout: float) -> trace.TracerProvider:
    """The global provider if the application set one; else build one and make it global, so
    spans users start inside jobs go to the same place."""
    with _lock:
        current = trace.get_tracer_provider()
        if not isinstance(current, trace.ProxyTracerProvider):
            return current
        built = build_tracer_provider(service_name, flush_timeout)
        trace.set_tracer_provider(built)
        logger.info("Soniq tracing: no tracer provider was set; built one from OTEL_* variables")
        return trace.get_tracer_provider()


def build_tracer_provider(
    service_name: str = "soniq", flush_timeout: float = 5.0
) -> trace.TracerProvider:
    """A provider configured from the standard environment variables.

    ``OTEL_SDK_DISABLED``, ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``,
    ``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``),
    ``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`` (``http/protobuf`` or ``grpc``) and the exporters'
    own ``OTEL_EXPORTER_OTLP_*`` and ``OTEL_BSP_*`` variables.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return trace.NoOpTracerProvider()
    exporters = [_exporter(name) for name in _exporter_names()]
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    # Not the SDK's own exit hook: that one waits for a stuck exporter for up to 30 s.
    provider = SdkTracerProvider(resource=resource, shutdown_on_exit=False)
    for exporter in exporters:
        # Export runs on the processor's own thread: a slow or dead collector costs a job
        # nothing, and when the queue is full spans are dropped rather than waited for.
        provider.add_span_processor(BatchSpanProcessor(exporter))
    atexit.register(_flush_at_exit, provider, flush_timeout)
    return provider


def _exporter_names() -> list[str]:
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    return [n for n in names if n != "none"]


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={name!r} is not supported by Soniq's tracing; use otlp, "
            f"console or none, or set up a tracer provider yourself"
        )
    protocol = (
        (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or DEFAULT_PROTOCOL
        )
        .strip()
        .lower()
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter()
    raise ConfigurationError(
        f"OTLP protocol {protocol!r} (OTEL_EXPORTER_OTLP_PROTOCOL) is not supported; "
        f"use grpc or http/protobuf"
    )


def flush_in_thread(
    provider: trace.TracerProvider, timeout: float, on_done: Callable[[], None] | None = None
) -> threading.Event | None:
    """Start ``provider.force_flush`` on a daemon thread; the event is set when it returns.

    The SDK's batch processor exports on the calling thread and ignores the timeout while an
    exporter hangs, so the only bound that holds is not waiting for the thread.
    """
    force_flush: Callable[[int], object] | None = getattr(provider, "force_flush", None)
    if force_flush is None:
        return None
    done = threading.Event()

    def run() -> None:
        try:
            force_flush(max(1, int(timeout * 1000)))
        except Exception:
            logger.exception("Soniq tracing: flushing spans failed")
        finally:
            done.set()
            if on_done is not None:
                on_done()

    threading.Thread(target=run, name="soniq-otel-flush", daemon=True).start()
    return done


async def flush(provider: trace.TracerProvider, timeout: float) -> bool:
    """Export what is buffered, waiting at most ``timeout`` seconds; True if it finished."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        # RuntimeError: the loop closed while the exporter was still busy; nobody is waiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, finished)

    if flush_in_thread(provider, timeout, wake) is None:
        return True
    try:
        await asyncio.wait_for(finished, timeout)
    except asyncio.TimeoutError:
        logger.warning(
            "Soniq tracing: spans not exported within %.3gs of worker shutdown; the exporter "
            "is slow or unreachable, and what it still holds may be lost",
            timeout,
        )
        return False
    return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _flush_at_exit(provider: trace.TracerProvider, timeout: float) -> None:
    done = flush_in_thread(provider, timeout)
    if done is not None and not done.wait(timeout):
        logger.warning("Soniq tracing: spans not exported within %.3gs at exit", timeout)
