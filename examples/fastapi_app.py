"""FastAPI and Soniq: enqueue a job inside the request's database transaction, and see the
request and the job in one trace.

    pip install 'soniq[otel,examples]'
    export SONIQ_DATABASE_URL=postgresql://localhost/myapp
    export OTEL_SERVICE_NAME=shop OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317
    uvicorn examples.fastapi_app:api                 # the web app
    soniq worker examples.fastapi_app:soniq          # a worker, in another terminal
    curl -X POST localhost:8000/orders -H 'content-type: application/json' \\
         -d '{"item": "book", "quantity": 2}'

The order row and its confirmation job are written in the same transaction: if the request
fails after the enqueue, neither exists, and a worker never sends a confirmation for an order
that was rolled back. In Jaeger the trace reads: `POST /orders` (server) -> `send
orders.confirm` (producer) -> `process orders.confirm` (consumer, in the worker).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from pydantic import BaseModel, Field

from soniq import JobContext, Soniq

STOCK = {"book": 10, "lamp": 3}


def configure_tracing() -> None:
    """Export spans over OTLP unless the host process already set a tracer provider.

    The HTTP server span, Soniq's enqueue span and Soniq's job spans must come from the same
    provider to form one trace, so the provider is set globally, once, before any span starts.
    """
    from opentelemetry.sdk.trace import TracerProvider

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create() and OTLPSpanExporter() read OTEL_SERVICE_NAME and the OTLP endpoint.
    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


configure_tracing()

# The job queue. The worker runs the same module: `soniq worker examples.fastapi_app:soniq`.
soniq = Soniq()
soniq.instrument(otel=True)


@soniq.job(name="orders.confirm", queue="orders", max_retries=5)
async def send_confirmation(order_id: int, ctx: JobContext) -> str:
    pool = await soniq.pool()
    row = await pool.fetchrow("SELECT item, quantity FROM example_orders WHERE id = $1", order_id)
    if row is None:
        raise LookupError(f"order {order_id} does not exist")
    # A span started inside the job is a child of Soniq's `process orders.confirm` span.
    with trace.get_tracer(__name__).start_as_current_span("render confirmation"):
        text = f"Order {order_id}: {row['quantity']} x {row['item']} (attempt {ctx.attempt})"
    return text


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await soniq.setup()  # idempotent; in production run `soniq setup` on deploy instead
    pool = await soniq.pool()
    await pool.execute(
        """CREATE TABLE IF NOT EXISTS example_orders (
               id bigserial PRIMARY KEY,
               item text NOT NULL,
               quantity int NOT NULL,
               confirmation_job uuid,
               created_at timestamptz NOT NULL DEFAULT now())"""
    )
    yield
    await soniq.close()


api = FastAPI(title="Soniq FastAPI example", lifespan=lifespan)
# One SERVER span per request; the enqueue inside the handler becomes its child.
api.add_middleware(OpenTelemetryMiddleware, exclude_spans=["receive", "send"])


class OrderIn(BaseModel):
    item: str
    quantity: int = Field(gt=0)


class OrderOut(BaseModel):
    order_id: int
    job_id: str


@api.post("/orders", status_code=201)
async def create_order(order: OrderIn) -> OrderOut:
    # Soniq's own pool serves the app too: one pool, one set of connections to size.
    pool = await soniq.pool()
    async with pool.acquire() as conn, conn.transaction():
        order_id: int = await conn.fetchval(
            "INSERT INTO example_orders (item, quantity) VALUES ($1, $2) RETURNING id",
            order.item,
            order.quantity,
        )
        # Written by this transaction: committed with the order, or rolled back with it.
        job_id = await soniq.enqueue(send_confirmation, order_id=order_id, connection=conn)
        await conn.execute(
            "UPDATE example_orders SET confirmation_job = $1 WHERE id = $2", job_id, order_id
        )
        # A check that fails after the enqueue: the exception rolls back the order *and* the
        # job, so no confirmation is ever sent for it.
        if order.quantity > STOCK.get(order.item, 0):
            raise HTTPException(status_code=409, detail=f"not enough {order.item} in stock")
    return OrderOut(order_id=order_id, job_id=job_id)


@api.get("/orders/{order_id}/confirmation")
async def confirmation(order_id: int) -> dict[str, Any]:
    """Where the order's confirmation job stands (status and result, from Soniq)."""
    pool = await soniq.pool()
    job_id = await pool.fetchval(
        "SELECT confirmation_job::text FROM example_orders WHERE id = $1", order_id
    )
    job = None if job_id is None else await soniq.get_job(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"no order {order_id}")
    return {"job_id": job_id, "status": job["status"], "result": job["result"]}
