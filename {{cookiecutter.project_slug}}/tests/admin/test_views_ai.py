"""The AI usage ledger in the admin: listed, filtered by user and model, read-only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.ai.models import AIUsage
from {{ cookiecutter.package_name }}.core.db import Database


async def add_usage(app: FastAPI, user_id: uuid.UUID, model: str, request_id: str) -> AIUsage:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        row = AIUsage(
            created_at=datetime.now(UTC),
            user_id=user_id,
            model=model,
            prompt_tokens=11,
            completion_tokens=22,
            total_tokens=33,
            latency_ms=44,
            outcome="ok",
            streamed=False,
            request_id=request_id,
        )
        session.add(row)
        await session.commit()
        return row


async def test_usage_is_listed_and_filtered_by_user_and_model(
    app: FastAPI, admin_client: AsyncClient
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    await add_usage(app, alice, "model-small", "req-alice-small")
    await add_usage(app, alice, "model-large", "req-alice-large")
    await add_usage(app, bob, "model-small", "req-bob-small")

    everything = await admin_client.get("/admin/ai-usage/list")
    assert everything.status_code == 200
    for request_id in ("req-alice-small", "req-alice-large", "req-bob-small"):
        found = await admin_client.get("/admin/ai-usage/list", params={"search": request_id})
        assert str(alice if "alice" in request_id else bob) in found.text

    by_user = await admin_client.get(
        "/admin/ai-usage/list", params={"user_id": str(alice), "user_id_op": "equals"}
    )
    assert str(alice) in by_user.text
    assert str(bob) not in by_user.text

    by_model = await admin_client.get("/admin/ai-usage/list", params={"model": "model-large"})
    assert str(alice) in by_model.text
    assert str(bob) not in by_model.text


async def test_the_ledger_is_read_only(app: FastAPI, admin_client: AsyncClient) -> None:
    row = await add_usage(app, uuid.uuid4(), "model-small", "req-1")
    assert (await admin_client.get(f"/admin/ai-usage/details/{row.id}")).status_code == 200
    assert (await admin_client.get(f"/admin/ai-usage/edit/{row.id}")).status_code == 403
    assert (await admin_client.get("/admin/ai-usage/create")).status_code == 403
    deleted = await admin_client.delete(f"/admin/ai-usage/delete?pks={row.id}")
    assert deleted.status_code == 403
