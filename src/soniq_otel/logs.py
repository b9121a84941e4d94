"""Log records over OTLP: a ``logging`` handler on the OpenTelemetry logs bridge API.

``OtelLogHandler`` sits on the root logger, beside whatever handlers the application has (the
JSON stream stays as it is). Every record that reaches the root, Soniq's ``job.*`` events
and the job code's own lines alike, becomes an OpenTelemetry log record: the message as its
body, the level as its severity, the logger's name as its instrumentation scope, the current
span's trace and span ids, and every other field of the JSON line (``event``, ``job_id``,
``outcome``, ...) as an attribute. A :class:`~soniq.logs.JobContextFilter` on the handler gives
the job code's records their job fields, as it does for the JSON stream.

Why not the SDK's ``LoggingHandler``: the SDK installed here (1.45) warns that it is deprecated
(in favour of ``opentelemetry-instrumentation-logging``'s), and it adds the file, function and
line of every record, which for Soniq's events always name one module. This handler uses the
same bridge API (``opentelemetry._logs``), which the SDK marks experimental by its leading
underscore.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace

import soniq
from soniq.logs import JobContextFilter
from soniq.middleware import CallNext, Middleware, MiddlewareChain

from .config import OtelConfig
from .provider import flush, global_or_built_logger_provider

if TYPE_CHECKING:
    from opentelemetry._logs import Logger, SeverityNumber

    from soniq.context import AttemptContext
    from soniq.worker import Worker

# What every LogRecord has; anything else on a record is a field of its JSON line.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    # Carried as the log record's own trace and span ids, not repeated as attributes.
    "trace_id",
    "span_id",
}
_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}


def _from_exporters(record: logging.LogRecord) -> bool:
    """The SDK's and the exporters' own records stay out: an export failure logged and then
    exported would fail again, and again."""
    return not record.name.startswith("opentelemetry")


class OtelLogHandler(logging.Handler):
    """Turns ``logging`` records into OpenTelemetry log records (see the module docstring)."""

    def __init__(self, config: OtelConfig) -> None:
        super().__init__()
        self.config = config
        self.provider: Any = None
        self._loggers: dict[str, Logger] = {}
        self._lock = threading.Lock()
        # Building a provider logs a note; that record must not ask for the provider again.
        self._resolving = threading.local()
        self.addFilter(_from_exporters)
        self.addFilter(JobContextFilter())

    def resolve(self) -> Any:
        """The logger provider, found at first use (so one the application sets after
        ``app.instrument()`` is the one used)."""
        with self._lock:
            if self.provider is None:
                cfg = self.config
                self._resolving.on = True
                try:
                    self.provider = cfg.logger_provider or global_or_built_logger_provider(
                        cfg.service_name, cfg.flush_timeout
                    )
                except Exception:
                    from opentelemetry._logs import NoOpLoggerProvider

                    # A misconfigured exporter is reported once (by the worker's start-up, as
                    # a telemetry error); the records then go nowhere, not to an error each.
                    self.provider = NoOpLoggerProvider()
                    raise
                finally:
                    self._resolving.on = False
            return self.provider

    def _logger(self, name: str) -> Logger:
        found = self._loggers.get(name)
        if found is None:
            provider = self.provider if self.provider is not None else self.resolve()
            found = self._loggers[name] = provider.get_logger(name or "root", soniq.__version__)
        return found

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._resolving, "on", False):
            return
        try:
            from opentelemetry._logs import LogRecord

            values = record.__dict__
            attributes: dict[str, Any] = {}
            for key, value in values.items():
                if key not in _STANDARD and value is not None:
                    attributes[key] = _attribute(value)
            if record.exc_info and record.exc_info[1] is not None:
                error = record.exc_info[1]
                attributes["exception.type"] = _type_name(error)
                attributes["exception.message"] = str(error)
                attributes["exception.stacktrace"] = self.formatter_exception(record)
            self._logger(record.name).emit(
                LogRecord(
                    timestamp=int(record.created * 1e9),
                    context=_context(values),
                    severity_text=_SEVERITY_TEXT.get(record.levelname, record.levelname),
                    severity_number=_severity(record.levelno),
                    body=record.getMessage(),
                    attributes=attributes,
                )
            )
        except Exception:
            self.handleError(record)

    @staticmethod
    def formatter_exception(record: logging.LogRecord) -> str:
        assert record.exc_info is not None
        return logging.Formatter().formatException(record.exc_info)


def _context(values: dict[str, Any]) -> otel_context.Context:
    """The current context, whose span is the attempt's; for a record handed over from
    another thread (a ``QueueHandler``), the ids the filter put on it when it was logged."""
    current = otel_context.get_current()
    if trace.get_current_span(current).get_span_context().is_valid:
        return current
    trace_id, span_id = values.get("trace_id"), values.get("span_id")
    if isinstance(trace_id, str) and isinstance(span_id, str):
        try:
            span = trace.NonRecordingSpan(
                trace.SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False)
            )
        except ValueError:
            return current
        return trace.set_span_in_context(span, current)
    return current


def _severity(levelno: int) -> SeverityNumber:
    from opentelemetry._logs import SeverityNumber

    # The logs data model's mapping: DEBUG 5, INFO 9, WARN 13, ERROR 17, FATAL 21.
    if levelno >= logging.CRITICAL:
        return SeverityNumber.FATAL
    if levelno >= logging.ERROR:
        return SeverityNumber.ERROR
    if levelno >= logging.WARNING:
        return SeverityNumber.WARN
    if levelno >= logging.INFO:
        return SeverityNumber.INFO
    if levelno >= logging.DEBUG:
        return SeverityNumber.DEBUG
    return SeverityNumber.TRACE


def _attribute(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float, bytes)):
        return value
    if isinstance(value, dict):
        return {str(k): _attribute(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_attribute(v) for v in value]
    return str(value)


def _type_name(error: BaseException) -> str:
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class OtelLogs(Middleware):
    """Puts an :class:`OtelLogHandler` on the root logger and flushes it when a worker stops;
    added by ``app.instrument(otel={"logs": True})``. It does nothing per attempt."""

    telemetry = True
    order = 25

    def __init__(self, config: OtelConfig) -> None:
        self.config = config
        self.handler = OtelLogHandler(config)

    def __repr__(self) -> str:
        return "OtelLogs()"

    def attach(self) -> None:
        root = logging.getLogger()
        if self.handler not in root.handlers:
            root.addHandler(self.handler)

    def detach(self) -> None:
        logging.getLogger().removeHandler(self.handler)

    async def __call__(self, ctx: AttemptContext, call_next: CallNext) -> Any:
        return await call_next(ctx)

    def compose_step(self, call_next: CallNext, chain: MiddlewareChain) -> CallNext:
        # Nothing to do per attempt (the handler works on records): no step at all.
        return call_next

    async def startup(self, worker: Worker) -> None:
        # Logging is often configured after the app is built (and may replace the root's
        # handlers); by now it is in place.
        self.attach()
        self.handler.resolve()

    async def shutdown(self, worker: Worker) -> None:
        if self.handler.provider is not None:
            await flush(self.handler.provider, self.config.flush_timeout, "log records")
