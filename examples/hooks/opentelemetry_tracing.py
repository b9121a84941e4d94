"""The hooks page's OpenTelemetry example, runnable: one span per attempt, named ``job:<name>``,
ended with the duration on success or an error status on failure.

    SONIQ_DATABASE_URL=postgresql://localhost/myapp python examples/hooks/opentelemetry_tracing.py

Without SONIQ_DATABASE_URL, Soniq starts an embedded PostgreSQL (pip install 'soniq[embedded]').
Everything between the two ``---`` markers is the page's code, unchanged. Run as a script, it
prints the spans to the console; in your service, configure the SDK with an OTLP exporter
instead. (Soniq's own tracing, ``app.instrument(otel=True)``, does this with trace context
carried from enqueue to the worker; these hooks show the mechanism.)
"""

import asyncio

from opentelemetry import trace

from soniq import Soniq

app = Soniq()

# --- from the hooks page, "OpenTelemetry tracing" ---
tracer = trace.get_tracer("soniq")
_spans = {}


@app.before_job
async def start_span(job_name, job_id, attempt):
    span = tracer.start_span(
        f"job:{job_name}",
        attributes={
            "job.id": job_id,
            "job.attempt": attempt,
        },
    )
    _spans[job_id] = span


@app.after_job
async def end_span_success(job_name, job_id, duration_ms):
    span = _spans.pop(job_id, None)
    if span:
        span.set_attribute("job.duration_ms", duration_ms)
        span.end()


@app.on_error
async def end_span_error(job_name, job_id, error, attempt):
    span = _spans.pop(job_id, None)
    if span:
        span.set_status(trace.StatusCode.ERROR, error)
        span.end()


# --- end of the page's code ---


@app.job()
async def render_invoice(invoice_id: int) -> str:
    await asyncio.sleep(0.01)
    return f"invoice-{invoice_id}.pdf"


@app.job(max_retries=0)
async def notify_accounting(invoice_id: int) -> None:
    raise PermissionError(f"accounting API rejected invoice {invoice_id}")


async def main() -> dict[str, str]:
    """One job that succeeds and one that fails: two spans."""
    try:
        await app.setup()
        ids = {
            "render_invoice": await app.enqueue(render_invoice, invoice_id=7),
            "notify_accounting": await app.enqueue(notify_accounting, invoice_id=7),
        }
        await app.run_worker(run_once=True, install_signal_handlers=False)
        return ids
    finally:
        await app.close()


def print_spans_to_console() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)


if __name__ == "__main__":
    print_spans_to_console()
    asyncio.run(main())
