"""A chat request traced and measured: the call to the provider is a client span of the
request's trace (its traceparent reaches the provider), the request's span carries the GenAI
attributes, and the tokens are counted by model and outcome."""

from __future__ import annotations

import httpx
from alembic.config import Config
from asgi_lifespan import LifespanManager
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.metrics import Metrics
from {{ cookiecutter.package_name }}.core.telemetry import Telemetry
from {{ cookiecutter.package_name }}.main import create_app
from tests.ai.conftest import http, make_ai_settings, stand_in_user
from tests.ai.fake_upstream import FakeUpstream
from tests.conftest import clear_tables

CHAT = "/api/v1/ai/chat"


async def test_a_chat_is_traced_to_the_provider_and_its_tokens_counted(
    settings: Settings, migrated: Config, upstream: FakeUpstream, transport: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics = Metrics(port=0)
    app = create_app(settings, telemetry=Telemetry(tracer_provider=provider, metrics=metrics))
    app.state.ai_settings = make_ai_settings(upstream, transport=transport)
    stand_in_user(app)
    async with LifespanManager(app):
        try:
            async with http(app) as client:
                response = await client.post(
                    CHAT, json={"messages": [{"role": "user", "content": "Say hello"}]}
                )
            assert response.status_code == 200, response.text
            async with httpx.AsyncClient() as scraper:
                scraped = await scraper.get(f"http://127.0.0.1:{metrics.bound_port}/metrics")
        finally:
            await app.state.rate_limiter.reset()
            await clear_tables(app.state.database)
    usage = response.json()["usage"]

    spans = exporter.get_finished_spans()
    [server] = [s for s in spans if s.name == f"POST {CHAT}"]
    assert server.attributes is not None
    assert server.attributes["gen_ai.request.model"] == "test-model"
    assert server.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert server.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    calls = [
        s
        for s in spans
        if s.kind is SpanKind.CLIENT and upstream.url.split("/")[2] in str(dict(s.attributes or {}))
    ]
    assert len(calls) == 1, [(s.name, s.attributes) for s in spans]
    [call] = calls
    assert call.context.trace_id == server.context.trace_id
    assert call.parent is not None
    assert call.parent.span_id == server.context.span_id
    # The provider is told which trace the call belongs to.
    trace_id = f"{server.context.trace_id:032x}"
    assert trace_id in upstream.headers[0]["traceparent"]

    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(scraped.text)
        for s in family.samples
    }
    for kind, tokens in (("input", usage["prompt_tokens"]), ("output", usage["completion_tokens"])):
        labels = frozenset({"model": "test-model", "outcome": "ok", "type": kind}.items())
        assert samples[("gen_ai_tokens_total", labels)] == tokens
