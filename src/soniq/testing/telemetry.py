"""Collecting what the telemetry layers produce, for tests that assert on instrumentation.

``with soniq.testing.capture_telemetry(app) as telemetry:`` turns the built-in layers on
through ``app.instrument`` (or reuses the ones already on) and collects finished spans (an
in-memory exporter on a tracer provider of its own), metric samples (the Prometheus layer's
registry) and log records (a handler on the ``soniq`` loggers). Leaving the block puts the
app's layers back as they were. Works in every mode: inline, capture's drain, a real drain.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..instrumentation import find, load

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry
    from prometheus_client.samples import Sample

    from ..app import Soniq


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Telemetry:
    """What :func:`capture_telemetry` yields."""

    def __init__(self, app: Soniq, *, spans: bool, metrics: bool, logs: bool) -> None:
        self.app = app
        self._want = (spans, metrics, logs)
        self._undo: list[Callable[[], None]] = []
        self._exporter: InMemorySpanExporter | None = None
        #: The provider Soniq's spans go to while capturing; start your own spans on it to
        #: collect them too.
        self.tracer_provider: TracerProvider | None = None
        #: The registry the metrics layer counts in.
        self.registry: CollectorRegistry | None = None
        self._records = _Records()

    # -- reading ---------------------------------------------------------------------------
    @property
    def spans(self) -> list[ReadableSpan]:
        """Finished spans, in the order they ended."""
        return list(self._exporter.get_finished_spans()) if self._exporter else []

    @property
    def span_names(self) -> list[str]:
        return [span.name for span in self.spans]

    def spans_named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans if span.name == name]

    @property
    def logs(self) -> list[logging.LogRecord]:
        """Log records of the ``soniq`` loggers (job events included), in order."""
        return list(self._records.records)

    @property
    def events(self) -> list[str]:
        """The ``event`` field of each log record that has one (``job.done``, ...)."""
        return [e for r in self._records.records if (e := getattr(r, "event", None))]

    @property
    def samples(self) -> list[Sample]:
        """Every metric sample of the registry now (counters, histogram buckets, gauges)."""
        if self.registry is None:
            return []
        return [s for family in self.registry.collect() for s in family.samples]

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample's value (e.g. ``soniq_job_attempts_total``, ``outcome="done"``), or None
        when there is no such sample (nothing counted yet)."""
        if self.registry is None:
            return None
        value: float | None = self.registry.get_sample_value(name, labels)
        return value

    def clear(self) -> None:
        """Forget the spans and log records collected so far (metrics keep counting)."""
        if self._exporter is not None:
            self._exporter.clear()
        self._records.records.clear()

    # -- installing ------------------------------------------------------------------------
    def __enter__(self) -> Telemetry:
        spans, metrics, logs = self._want
        try:
            if spans:
                self._capture_spans()
            if metrics:
                self._capture_metrics()
            if logs:
                self._capture_logs()
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restore()

    def _restore(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _capture_spans(self) -> None:
        otel = _plugin("otel", "spans", "soniq[otel]")
        try:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )
        except ImportError as exc:  # pragma: no cover - the otel plugin needs the SDK too
            raise _missing("spans", "soniq[otel]", exc) from None
        self._exporter = InMemorySpanExporter()
        provider = TracerProvider()
        # Simple, not batched: a span is collected the moment it ends, so tests need no flush.
        provider.add_span_processor(SimpleSpanProcessor(self._exporter))
        self.tracer_provider = provider
        app = self.app
        kind = otel.TracingMiddleware
        layer = next((m for m in app.middleware if isinstance(m, kind)), None)
        if layer is None:
            app.instrument(otel={"tracer_provider": provider})
            self._undo.append(lambda: app.middleware.remove(kind))
        else:
            # The app's own tracing options stay in force; only where spans go changes.
            before = layer.config
            app.instrument(otel=dataclasses.replace(before, tracer_provider=provider))
            self._undo.append(lambda: app.instrument(otel=before))
        self._undo.append(provider.shutdown)

    def _capture_metrics(self) -> None:
        prom = _plugin("prometheus", "metrics", "soniq[prometheus]")
        from prometheus_client import CollectorRegistry  # present: the plugin needs it

        app = self.app
        existing = prom.metrics_of(app)
        if existing is not None:
            self.registry = existing.registry  # counts since the layer was installed
            return
        self.registry = CollectorRegistry()
        # No queue-state gauges: they query the database, which inline and capture lack.
        app.instrument(prometheus={"registry": self.registry, "queue_state": False})
        layer = prom.metrics_of(app)
        assert layer is not None

        def uninstall() -> None:
            # The registry is this capture's own: its collectors stay, to be read after the
            # block.
            app.middleware.remove(layer)
            listeners = app.middleware.telemetry_error_listeners
            if layer.count_telemetry_error in listeners:
                listeners.remove(layer.count_telemetry_error)

        self._undo.append(uninstall)

    def _capture_logs(self) -> None:
        # The log layer is the ``logs`` instrumentation: found as app.instrument finds it, by
        # its entry point, so the core imports no plugin even here.
        logs_plugin: Any = load(find(["logs"])["logs"])
        LogConfig, LogMiddleware = logs_plugin.LogConfig, logs_plugin.LogMiddleware

        app = self.app
        layer = next((m for m in app.middleware if isinstance(m, LogMiddleware)), None)
        if layer is None:
            # No context filter on the root handlers: that would outlive the block.
            app.instrument(logs=LogConfig(attach_context_filter=False))
            self._undo.append(lambda: app.middleware.remove(LogMiddleware))
            layer = next(m for m in app.middleware if isinstance(m, LogMiddleware))
        # A handler on "soniq" hears every Soniq logger below it; the job events' logger may
        # be named otherwise. Each is made to pass INFO while capturing: the job events are
        # emitted only when their logger is enabled for INFO, and the root logger's default
        # (WARNING) would drop them before any handler saw them.
        loggers = {"soniq": True}
        name = layer.config.logger_name
        loggers.setdefault(name, not (name == "soniq" or name.startswith("soniq.")))
        for name, handler in loggers.items():
            self._listen(logging.getLogger(name), handler=handler)

    def _listen(self, logger: logging.Logger, *, handler: bool) -> None:
        level = logger.level
        if level == logging.NOTSET or level > logging.INFO:
            logger.setLevel(logging.INFO)
            self._undo.append(lambda: logger.setLevel(level))
        if handler:
            logger.addHandler(self._records)
            self._undo.append(lambda: logger.removeHandler(self._records))


def capture_telemetry(
    app: Soniq, *, spans: bool = True, metrics: bool = True, logs: bool = True
) -> Telemetry:
    """Collect ``app``'s spans, metric samples and log records in a ``with`` block; see
    :class:`Telemetry` for what to read. Needs ``soniq[otel]`` for spans and
    ``soniq[prometheus]`` for metrics (pass False to go without)."""
    return Telemetry(app, spans=spans, metrics=metrics, logs=logs)


def _plugin(name: str, what: str, extra: str) -> Any:
    """The instrumentation ``name`` (a module with ``install``), found through its entry point
    as ``app.instrument`` finds it: the core, the kit included, imports no plugin."""
    from ..instrumentation import find, load

    try:
        return load(find([name])[name])
    except ImportError as exc:
        raise _missing(what, extra, exc) from None


def _missing(what: str, extra: str, exc: BaseException) -> ConfigurationError:
    return ConfigurationError(
        f"capture_telemetry({what}=True) needs {extra} ({exc}): pip install '{extra}', or pass "
        f"{what}=False"
    )
