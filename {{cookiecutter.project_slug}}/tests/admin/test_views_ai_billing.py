"""Metered-billing batches in the admin: listed, found, filtered by status, read-only."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from fastapi import FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.ai.billing import AIMeterBatch, identifier
from {{ cookiecutter.package_name }}.core.db import Database


async def add_batch(app: FastAPI, customer_id: str, status: str, start: int) -> AIMeterBatch:
    database: Database = app.state.database
    subject, period = uuid.uuid4(), date(2026, 11, 1)
    async with database.sessionmaker() as session:
        row = AIMeterBatch(
            subject=subject,
            period=period,
            start_tokens=start,
            end_tokens=start + 500,
            customer_id=customer_id,
            event_name="ai_tokens",
            identifier=identifier(subject, period, start, start + 500),
            status=status,
            attempts=1,
            last_error="APIConnectionError: timed out" if status != "sent" else None,
            created_at=datetime.now(UTC),
        )
        session.add(row)
        await session.commit()
        return row


async def test_batches_are_listed_found_and_filtered_by_status(
    app: FastAPI, admin_client: AsyncClient
) -> None:
    expired = await add_batch(app, "cus_expired", "expired", 0)
    await add_batch(app, "cus_sent", "sent", 1000)

    everything = await admin_client.get("/admin/ai-meter-batch/list")
    assert everything.status_code == 200
    assert "cus_expired" in everything.text
    assert "cus_sent" in everything.text

    by_status = await admin_client.get("/admin/ai-meter-batch/list", params={"status": "expired"})
    assert "cus_expired" in by_status.text
    assert "cus_sent" not in by_status.text

    found = await admin_client.get(
        "/admin/ai-meter-batch/list", params={"search": expired.identifier}
    )
    assert "cus_expired" in found.text
    assert "cus_sent" not in found.text

    details = await admin_client.get(f"/admin/ai-meter-batch/details/{expired.id}")
    assert details.status_code == 200
    assert expired.identifier in details.text
    assert "APIConnectionError: timed out" in details.text


async def test_batches_are_read_only(app: FastAPI, admin_client: AsyncClient) -> None:
    row = await add_batch(app, "cus_1", "expired", 0)
    assert (await admin_client.get(f"/admin/ai-meter-batch/edit/{row.id}")).status_code == 403
    assert (await admin_client.get("/admin/ai-meter-batch/create")).status_code == 403
    deleted = await admin_client.delete(f"/admin/ai-meter-batch/delete?pks={row.id}")
    assert deleted.status_code == 403
