"""The floor of tracing's cost: what the OpenTelemetry SDK alone spends on users/me's spans.

    .venv/bin/python bench/otel_floor.py                    # the SDK's cost per request
    .venv/bin/python bench/otel_floor.py --base-ms 0.61     # and its share of that request

users/me makes two spans when traced: the request's (`core/telemetry.ServerSpans`) and its
one SQL statement's (`trace_sql`). This script makes spans of the same shape (kind, names,
the same attributes and values) with nothing of the project's around them, and times, on
this thread's CPU clock:

- **make and end**: `Tracer.start_span` and `Span.end` for the pair, the second a child of
  the first, with the SDK's default sampler (parent-based, always on) and its
  `BatchSpanProcessor` (the exporter behind it drops the spans: only the hand-over counts);
- **encode**: the SDK's OTLP exporter's own encoding of those spans, in batches of 512 (the
  `BatchSpanProcessor`'s default), `encode_spans(batch).SerializePartialToString()`, which
  its export thread runs for every batch before posting it.

Prints the median of 5 runs of each. What tracing costs a request can't be below the sum:
everything else (our middleware and listeners, the context, the post to the collector)
comes on top. With `--base-ms` (users/me's app CPU per request with tracing off, from
`bench/ab.py`), it prints that sum as a share of the request, against issue 17's 15%.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

from opentelemetry import context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Tracer, set_span_in_context
from opentelemetry.util.types import AttributeValue

BATCH = 512  # OTEL_BSP_MAX_EXPORT_BATCH_SIZE's default

# What ServerSpans and trace_sql put on users/me's spans (PostgreSQL, a Host header).
REQUEST: dict[str, AttributeValue] = {
    "http.request.method": "GET",
    "url.scheme": "http",
    "network.protocol.version": "1.1",
    "server.address": "127.0.0.1",
    "server.port": 8000,
    "url.path": "/api/v1/users/me",
}
REQUEST_END: dict[str, AttributeValue] = {
    "http.route": "/api/v1/users/me",
    "http.response.status_code": 200,
}
STATEMENT: dict[str, AttributeValue] = {
    "db.system": "postgresql",
    "net.peer.name": "127.0.0.1",
    "net.peer.port": 5432,
    "db.name": "app",
    "db.user": "app",
    "db.statement": (
        "SELECT users.id, users.email, users.hashed_password, users.is_active, "
        "users.is_verified, users.is_superuser, users.created_at, users.updated_at "
        "FROM users WHERE users.id = $1::UUID"
    ),
    "db.operation": "SELECT app",
}


class Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class Kept(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def one_request(request_tracer: Tracer, sql_tracer: Tracer) -> None:
    root = context.Context()
    request = request_tracer.start_span(
        "GET", context=root, kind=SpanKind.SERVER, attributes=REQUEST
    )
    token = context.attach(set_span_in_context(request, root))
    sql_tracer.start_span("SELECT app", kind=SpanKind.CLIENT, attributes=STATEMENT).end()
    context.detach(token)
    request.update_name("GET /api/v1/users/me")
    request.set_attributes(REQUEST_END)
    request.end()


def provider(processor: SpanProcessor) -> TracerProvider:
    made = TracerProvider(resource=Resource.create({"service.name": "app"}), shutdown_on_exit=False)
    made.add_span_processor(processor)
    return made


def make_and_end(n: int) -> float:
    """CPU of this thread per request (µs), spans handed to a batch processor."""
    processor = BatchSpanProcessor(Dropped())
    traced = provider(processor)
    request_tracer, sql_tracer = traced.get_tracer("app"), traced.get_tracer("sqlalchemy")
    for _ in range(n // 10):  # warm up
        one_request(request_tracer, sql_tracer)
    started = time.thread_time()
    for _ in range(n):
        one_request(request_tracer, sql_tracer)
    spent = time.thread_time() - started
    traced.shutdown()
    return spent / n * 1e6


def encode(n: int) -> float:
    """CPU per request (µs) of the SDK's OTLP encoding of its two spans, in batches."""
    kept = Kept()
    traced = provider(SimpleSpanProcessor(kept))
    request_tracer, sql_tracer = traced.get_tracer("app"), traced.get_tracer("sqlalchemy")
    for _ in range(n):
        one_request(request_tracer, sql_tracer)
    batches = [kept.spans[i : i + BATCH] for i in range(0, len(kept.spans), BATCH)]
    encode_spans(batches[0]).SerializePartialToString()  # warm up
    started = time.thread_time()
    for batch in batches:
        encode_spans(batch).SerializePartialToString()
    spent = time.thread_time() - started
    traced.shutdown()
    return spent / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--base-ms", type=float, help="users/me's app CPU per request, tracing off (bench/ab.py)"
    )
    args = parser.parse_args()
    made, encoded = [], []
    for _ in range(args.runs):  # interleaved, so a busy moment touches both alike
        made.append(make_and_end(args.requests))
        encoded.append(encode(args.requests))
    m, e = statistics.median(made), statistics.median(encoded)
    print(f"OpenTelemetry SDK, users/me's two spans, median of {args.runs} runs:")
    print(f"  make and end:  {m:6.1f} µs per request (runs {min(made):.1f}-{max(made):.1f})")
    print(f"  OTLP encoding: {e:6.1f} µs per request (runs {min(encoded):.1f}-{max(encoded):.1f})")
    print(f"  floor:         {m + e:6.1f} µs per request")
    if args.base_ms:
        base = args.base_ms * 1000
        print(
            f"  against {base:.0f} µs of app CPU per request with tracing off: "
            f"+{(m + e) / base:.1%} before any code of the project's (issue 17's target: "
            f"+15%, {0.15 * base:.0f} µs)"
        )


if __name__ == "__main__":
    main()
