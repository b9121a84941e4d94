"""An OTLP receiver the tests run, for all three signals: the gRPC Trace, Metrics and Logs
services (from opentelemetry-proto's generated code) and the HTTP ``POST /v1/traces``,
``/v1/metrics`` and ``/v1/logs`` endpoints (binary protobuf), keeping everything it is sent,
as a collector would receive it."""

from __future__ import annotations

import gzip
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto


@dataclass(frozen=True)
class Link:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    transport: str  # "grpc" or "http"
    service: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: int  # SpanProto.SpanKind value
    status_code: int  # Status.StatusCode value
    attributes: dict[str, Any]
    links: list[Link] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def kind_name(self) -> str:
        return str(SpanProto.SpanKind.Name(self.kind))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ReceivedPoint:
    """One data point of a metric, as exported (cumulative: the total so far)."""

    transport: str
    service: str
    scope: str
    name: str
    unit: str
    kind: str  # "sum", "gauge" or "histogram"
    attributes: dict[str, Any]
    value: float  # a sum's or gauge's value; a histogram's count
    total: float = 0.0  # a histogram's sum
    monotonic: bool = False
    exemplar_trace_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReceivedLog:
    transport: str
    service: str
    scope: str
    trace_id: str  # "" when none
    span_id: str
    severity_text: str
    severity_number: int
    body: Any
    attributes: dict[str, Any]


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return _attributes(v.kvlist_value.values)
    return getattr(v, which) if which else None


def _attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        out[kv.key] = _value(kv.value)
    return out


def _number(point: Any) -> float:
    return float(point.as_int if point.WhichOneof("value") == "as_int" else point.as_double)


def _link(link: Any) -> Link:
    return Link(link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))


class OtlpReceiver:
    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._points: list[ReceivedPoint] = []
        self._logs: list[ReceivedLog] = []
        self._lock = threading.Lock()
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> OtlpReceiver:
        receiver = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(  # the generated service's method name
                self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
            ) -> trace_service_pb2.ExportTraceServiceResponse:
                receiver._accept(request, "grpc")
                return trace_service_pb2.ExportTraceServiceResponse()

        class MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(
                self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: Any
            ) -> metrics_service_pb2.ExportMetricsServiceResponse:
                receiver._accept_metrics(request, "grpc")
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(
                self, request: logs_service_pb2.ExportLogsServiceRequest, context: Any
            ) -> logs_service_pb2.ExportLogsServiceResponse:
                receiver._accept_logs(request, "grpc")
                return logs_service_pb2.ExportLogsServiceResponse()

        self._grpc = grpc.server(ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            Servicer(), self._grpc
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            MetricsServicer(), self._grpc
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            LogsServicer(), self._grpc
        )
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                kinds: dict[str, tuple[type[Message], type[Message], Any]] = {
                    "/v1/traces": (
                        trace_service_pb2.ExportTraceServiceRequest,
                        trace_service_pb2.ExportTraceServiceResponse,
                        receiver._accept,
                    ),
                    "/v1/metrics": (
                        metrics_service_pb2.ExportMetricsServiceRequest,
                        metrics_service_pb2.ExportMetricsServiceResponse,
                        receiver._accept_metrics,
                    ),
                    "/v1/logs": (
                        logs_service_pb2.ExportLogsServiceRequest,
                        logs_service_pb2.ExportLogsServiceResponse,
                        receiver._accept_logs,
                    ),
                }
                if self.path not in kinds:
                    self.send_error(404)
                    return
                request_type, response_type, accept = kinds[self.path]
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(415)
                    return
                request = request_type()
                request.ParseFromString(body)
                accept(request, "http")
                reply = response_type().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    # -- what arrived --------------------------------------------------------------------------
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def points(self) -> list[ReceivedPoint]:
        with self._lock:
            return list(self._points)

    def logs(self) -> list[ReceivedLog]:
        with self._lock:
            return list(self._logs)

    def _accept_metrics(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, transport: str
    ) -> None:
        received = []
        for rm in request.resource_metrics:
            service = str(_attributes(rm.resource.attributes).get("service.name", ""))
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    which = m.WhichOneof("data")
                    common = {
                        "transport": transport,
                        "service": service,
                        "scope": sm.scope.name,
                        "name": m.name,
                        "unit": m.unit,
                    }
                    if which == "sum":
                        for p in m.sum.data_points:
                            received.append(
                                ReceivedPoint(
                                    **common,
                                    kind="sum",
                                    attributes=_attributes(p.attributes),
                                    value=_number(p),
                                    monotonic=m.sum.is_monotonic,
                                )
                            )
                    elif which == "gauge":
                        for p in m.gauge.data_points:
                            received.append(
                                ReceivedPoint(
                                    **common,
                                    kind="gauge",
                                    attributes=_attributes(p.attributes),
                                    value=_number(p),
                                )
                            )
                    elif which == "histogram":
                        for h in m.histogram.data_points:
                            received.append(
                                ReceivedPoint(
                                    **common,
                                    kind="histogram",
                                    attributes=_attributes(h.attributes),
                                    value=float(h.count),
                                    total=h.sum,
                                    exemplar_trace_ids=tuple(e.trace_id.hex() for e in h.exemplars),
                                )
                            )
        with self._lock:
            self._points.extend(received)

    def _accept_logs(
        self, request: logs_service_pb2.ExportLogsServiceRequest, transport: str
    ) -> None:
        received = []
        for rl in request.resource_logs:
            service = str(_attributes(rl.resource.attributes).get("service.name", ""))
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    received.append(
                        ReceivedLog(
                            transport=transport,
                            service=service,
                            scope=sl.scope.name,
                            trace_id=r.trace_id.hex(),
                            span_id=r.span_id.hex(),
                            severity_text=r.severity_text,
                            severity_number=r.severity_number,
                            body=_value(r.body),
                            attributes=_attributes(r.attributes),
                        )
                    )
        with self._lock:
            self._logs.extend(received)

    def _accept(self, request: trace_service_pb2.ExportTraceServiceRequest, transport: str) -> None:
        received = []
        for resource_spans in request.resource_spans:
            service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            transport=transport,
                            service=service,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            name=s.name,
                            kind=s.kind,
                            status_code=s.status.code,
                            attributes=_attributes(s.attributes),
                            links=[_link(ln) for ln in s.links],
                            events=[(e.name, _attributes(e.attributes)) for e in s.events],
                        )
                    )
        with self._lock:
            self._spans.extend(received)
