"""Where spans, metrics and log records go: the application's providers, or ones built from
``OTEL_*`` variables.

The SDK and the OTLP exporters read almost every variable themselves (sampler, resource,
endpoint, headers, timeouts, batch sizes, export interval); this module only picks the
exporter and protocol, which the SDK leaves to its auto-configuration entry points, and bounds
the time spent flushing.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from soniq.errors import ConfigurationError

logger = logging.getLogger("soniq.otel")

# The OpenTelemetry specification's default; Jaeger and the Collector accept both.
DEFAULT_PROTOCOL = "http/protobuf"

_lock = threading.Lock()


def _resource(service_name: str) -> Resource:
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    return resource


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _protocol(signal: str) -> str:
    return (
        (
            os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or DEFAULT_PROTOCOL
        )
        .strip()
        .lower()
    )


def _unsupported_protocol(protocol: str) -> ConfigurationError:
    return ConfigurationError(
        f"OTLP protocol {protocol!r} (OTEL_EXPORTER_OTLP_PROTOCOL) is not supported; "
        f"use grpc or http/protobuf"
    )


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
    if _sdk_disabled():
        return trace.NoOpTracerProvider()
    exporters = [_exporter(name) for name in _exporter_names()]
    resource = _resource(service_name)
    # Not the SDK's own exit hook: that one waits for a stuck exporter for up to 30 s.
    provider = SdkTracerProvider(resource=resource, shutdown_on_exit=False)
    for exporter in exporters:
        # Export runs on the processor's own thread: a slow or dead collector costs a job
        # nothing, and when the queue is full spans are dropped rather than waited for.
        provider.add_span_processor(BatchSpanProcessor(exporter))
    atexit.register(_flush_at_exit, provider, flush_timeout)
    return provider


def _exporter_names() -> list[str]:
    return _names("OTEL_TRACES_EXPORTER")


def _exporter(name: str) -> SpanExporter:
    exporter: SpanExporter = _chosen("traces", name, ConsoleSpanExporter)
    return exporter


# signal -> the module of its OTLP exporter (in each protocol's package) and the class
_OTLP = {
    "traces": ("trace_exporter", "OTLPSpanExporter"),
    "metrics": ("metric_exporter", "OTLPMetricExporter"),
    "logs": ("_log_exporter", "OTLPLogExporter"),
}
_PROTOCOL_PACKAGES = {
    "grpc": "opentelemetry.exporter.otlp.proto.grpc",
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http",
}


def _chosen(signal: str, name: str, console: Callable[[], Any]) -> Any:
    """The exporter ``OTEL_<SIGNAL>_EXPORTER`` names: ``console``, or ``otlp`` over the
    protocol ``OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL`` names (the exporter reads the rest of
    its variables itself)."""
    if name == "console":
        return console()
    if name != "otlp":
        raise ConfigurationError(
            f"OTEL_{signal.upper()}_EXPORTER={name!r} is not supported by Soniq; use otlp, "
            f"console or none, or set up a provider for {signal} yourself"
        )
    protocol = _protocol(signal)
    package = _PROTOCOL_PACKAGES.get(protocol)
    if package is None:
        raise _unsupported_protocol(protocol)
    module, cls = _OTLP[signal]
    return getattr(importlib.import_module(f"{package}.{module}"), cls)()


# -- metrics -----------------------------------------------------------------------------------
def global_or_built_meter_provider(service_name: str, flush_timeout: float) -> Any:
    """The global meter provider if the application set one; else one built from ``OTEL_*``
    variables (then made global, so the job code's own instruments export with Soniq's)."""
    from opentelemetry import metrics

    with _lock:
        current = metrics.get_meter_provider()
        # The API hands out a proxy until a provider is set; its class is not public.
        if type(current).__name__ != "_ProxyMeterProvider":
            return current
        built = build_meter_provider(service_name, flush_timeout)
        metrics.set_meter_provider(built)
        logger.info("Soniq metrics: no meter provider was set; built one from OTEL_* variables")
        return metrics.get_meter_provider()


def build_meter_provider(service_name: str = "soniq", flush_timeout: float = 5.0) -> Any:
    """A meter provider exporting over OTLP every ``OTEL_METRIC_EXPORT_INTERVAL`` ms (the
    SDK's default: 60 s), with ``OTEL_EXPORTER_OTLP[_METRICS]_PROTOCOL`` and the exporter's
    own variables; ``OTEL_METRICS_EXPORTER=console`` prints instead."""
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )

    if _sdk_disabled():
        return NoOpMeterProvider()
    readers = [
        PeriodicExportingMetricReader(_chosen("metrics", name, ConsoleMetricExporter))
        for name in _names("OTEL_METRICS_EXPORTER")
    ]
    provider = MeterProvider(
        resource=_resource(service_name), metric_readers=readers, shutdown_on_exit=False
    )
    atexit.register(_flush_at_exit, provider, flush_timeout)
    return provider


# -- logs --------------------------------------------------------------------------------------
def global_or_built_logger_provider(service_name: str, flush_timeout: float) -> Any:
    """The global logger provider if the application set one; else one built from ``OTEL_*``
    variables (then made global)."""
    from opentelemetry import _logs

    with _lock:
        current = _logs.get_logger_provider()
        if type(current).__name__ != "ProxyLoggerProvider":
            return current
        built = build_logger_provider(service_name, flush_timeout)
        _logs.set_logger_provider(built)
        logger.info("Soniq logs: no logger provider was set; built one from OTEL_* variables")
        return _logs.get_logger_provider()


def build_logger_provider(service_name: str = "soniq", flush_timeout: float = 5.0) -> Any:
    """A logger provider exporting over OTLP through a batch processor (its own thread;
    ``OTEL_BLRP_*`` variables), with ``OTEL_EXPORTER_OTLP[_LOGS]_PROTOCOL``;
    ``OTEL_LOGS_EXPORTER=console`` prints instead."""
    from opentelemetry._logs import NoOpLoggerProvider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter

    if _sdk_disabled():
        return NoOpLoggerProvider()
    provider = LoggerProvider(resource=_resource(service_name), shutdown_on_exit=False)
    for name in _names("OTEL_LOGS_EXPORTER"):
        exporter = _chosen("logs", name, ConsoleLogRecordExporter)
        provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    atexit.register(_flush_at_exit, provider, flush_timeout)
    return provider


def _names(variable: str) -> list[str]:
    """The exporters a variable names; unset means ``otlp`` (the signal was switched on by
    the config)."""
    raw = os.environ.get(variable, "otlp")
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    return [n for n in names if n != "none"]


def flush_in_thread(
    provider: object, timeout: float, on_done: Callable[[], None] | None = None
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
            logger.exception("Soniq telemetry: flushing failed")
        finally:
            done.set()
            if on_done is not None:
                on_done()

    threading.Thread(target=run, name="soniq-otel-flush", daemon=True).start()
    return done


async def flush(provider: object, timeout: float, what: str = "spans") -> bool:
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
            "Soniq telemetry: %s not exported within %.3gs of worker shutdown; the exporter "
            "is slow or unreachable, and what it still holds may be lost",
            what,
            timeout,
        )
        return False
    return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _flush_at_exit(provider: object, timeout: float) -> None:
    done = flush_in_thread(provider, timeout)
    if done is not None and not done.wait(timeout):
        logger.warning(
            "Soniq telemetry: %s not exported within %.3gs at exit",
            type(provider).__name__,
            timeout,
        )
