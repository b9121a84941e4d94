"""Serving the metrics: render for any framework, an ASGI app, and the worker's HTTP server."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:
    from .queue_state import QueueStateCollector

logger = logging.getLogger("soniq")

OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class MetricsSource(Protocol):
    """What can be exposed: a registry, and the queue-state collector in it (if any)."""

    @property
    def registry(self) -> CollectorRegistry: ...

    @property
    def queue_state(self) -> QueueStateCollector | None: ...


class Exposition(NamedTuple):
    body: bytes
    content_type: str


def source_of(target: Any) -> MetricsSource:
    """A Soniq app with metrics installed, or a source itself."""
    # The app first: it has a registry and a queue_state too (of jobs, not of collectors).
    chain = getattr(target, "middleware", None)
    if chain is None and hasattr(target, "registry") and hasattr(target, "queue_state"):
        return target  # type: ignore[no-any-return]
    if chain is not None:
        from .middleware import PrometheusMetrics

        for layer in chain:
            if isinstance(layer, PrometheusMetrics):
                return layer
        raise LookupError(
            "This Soniq app has no Prometheus metrics; call app.instrument(prometheus=True) first"
        )
    raise TypeError(f"Expected a Soniq app with metrics installed, not {target!r}")


def render(target: Any, accept: str | None = None, *, openmetrics: bool = False) -> Exposition:
    """The exposition text of ``target`` (a Soniq app), in the format the ``Accept`` header
    asks for: OpenMetrics (with exemplars) or the Prometheus text format (the default).

    From synchronous code; on the event loop of the worker prefer :func:`render_async`, which
    refreshes the queue state without blocking the loop.
    """
    source = source_of(target)
    encoder, content_type = choose_encoder(OPENMETRICS_ACCEPT if openmetrics else accept or "")
    return Exposition(encoder(source.registry), content_type)


async def render_async(
    target: Any, accept: str | None = None, *, openmetrics: bool = False
) -> Exposition:
    """:func:`render` for async frameworks: awaits the queue-state query (when due) first."""
    source = source_of(target)
    if source.queue_state is not None:
        await source.queue_state.refresh()
    return render(source, accept, openmetrics=openmetrics)


def asgi_app(target: Any) -> ASGIApp:
    """An ASGI app serving ``target``'s metrics, e.g. ``fastapi_app.mount("/metrics",
    soniq_prom.asgi_app(app))``. The app is looked up per request, so this may be created
    before ``app.instrument(prometheus=True)`` runs."""

    async def metrics_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"text/plain", b"use GET\n", [(b"allow", b"GET, HEAD")])
            return
        accept = ",".join(
            value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name.lower() == b"accept"
        )
        body, content_type = await render_async(target, accept)
        await _respond(
            send,
            200,
            content_type.encode(),
            b"" if method == "HEAD" else body,
            [(b"content-length", str(len(body)).encode())],
        )

    return metrics_app


async def _respond(
    send: Send, status: int, content_type: bytes, body: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})


class MetricsServer:
    """``/metrics`` over HTTP from a daemon thread (prometheus_client's server), so a busy
    event loop never delays a scrape; queue state is fetched on the loop when due."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        try:
            self._httpd, self._thread = start_http_server(port, host, registry=registry)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot serve /metrics on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        address = self._httpd.server_address
        self.host = str(address[0])
        self.port = int(address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
