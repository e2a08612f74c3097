"""The CPU one SQL statement's span costs: SQLAlchemy's instrumentation against ours.

    .venv/bin/python bench/sql_spans.py <project>/src <package>

`SELECT 1` on an in-memory SQLite database (the sync engine: no event loop, no threads),
20,000 times inside a server-like parent span, per variant: no SQL spans, the spans of
opentelemetry-instrumentation-sqlalchemy's `EngineTracer`, and `core/telemetry.py`'s
`trace_sql`; with every trace sampled and with 10% (parent-based). Prints the CPU of this
thread per statement, parent span included (median of 5 runs, the variants interleaved);
spans go to a batch processor whose exporter drops them.
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from sqlalchemy import create_engine, text


class Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def per_statement(variant: str, sampler: Sampler, telemetry: Any, n: int = 20_000) -> float:
    provider = TracerProvider(sampler=ParentBased(sampler), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(Dropped(), max_queue_size=100_000))
    engine = create_engine("sqlite:///:memory:")
    if variant == "instrumentation":
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from opentelemetry.metrics import NoOpMeterProvider

        unused = NoOpMeterProvider().get_meter("unused").create_up_down_counter("unused")
        EngineTracer(provider.get_tracer("sqlalchemy"), engine, unused)
    elif variant == "ours":
        telemetry.trace_sql(engine, provider)
    tracer = provider.get_tracer("bench")
    statement = text("SELECT 1")
    with engine.connect() as connection:
        for _ in range(500):
            connection.execute(statement)
        started = time.thread_time()
        for _ in range(n):
            with tracer.start_as_current_span("GET /x"):
                connection.execute(statement)
        spent = time.thread_time() - started
    provider.shutdown()
    engine.dispose()
    return spent * 1e6 / n


def main() -> int:
    src, package = sys.argv[1], sys.argv[2]
    sys.path.insert(0, src)
    telemetry = importlib.import_module(f"{package}.core.telemetry")
    for label, sampler in (("every trace", ALWAYS_ON), ("10% of traces", TraceIdRatioBased(0.1))):
        found: dict[str, list[float]] = {"no SQL spans": [], "instrumentation": [], "ours": []}
        for _ in range(5):
            for variant, runs in found.items():
                runs.append(per_statement(variant, sampler, telemetry))
        medians = ", ".join(f"{v} {statistics.median(r):.1f} µs" for v, r in found.items())
        print(f"{label} sampled: {medians}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
