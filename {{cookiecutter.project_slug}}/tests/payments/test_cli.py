"""`python -m <package>.payments`: list unprocessed events, replay a stored one."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.payments import __main__ as cli
from {{ cookiecutter.package_name }}.payments import service
from {{ cookiecutter.package_name }}.payments.config import PaymentsSettings
from tests.payments.conftest import (
    FakeStripe,
    apply,
    customer,
    drain,
    jobs,
    ledger,
    make_due,
    stripe_event,
)

T0 = 1_800_000_000


async def test_pending_and_replay(
    app: FastAPI,
    client: AsyncClient,
    fake_stripe: FakeStripe,
    settings: Settings,
    payments_settings: PaymentsSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    buyer = await customer(app, client, "support@example.com")
    body = stripe_event(
        fake_stripe, "evt_cli", "customer.subscription.created", buyer.customer_id, T0
    )

    async def down(
        session: AsyncSession, event: Mapping[str, Any], context: service.EventContext
    ) -> str:
        raise ConnectionError("database went away")

    with monkeypatch.context() as patch:
        patch.setitem(service.HANDLERS, "customer.subscription.created", down)
        assert await apply(app, client, body) is None  # its job failed, to be retried

    await asyncio.to_thread(cli.main, ["pending"], settings)
    listed = capsys.readouterr().out
    assert "evt_cli" in listed
    assert "job=pending" in listed
    assert "ConnectionError: database went away" in listed

    await asyncio.to_thread(cli.main, ["replay", "evt_cli"], settings, payments_settings)
    assert capsys.readouterr().out.strip() == "evt_cli: applied"  # inline, here and now
    assert (await ledger(app))["evt_cli"].processed_at is not None

    await asyncio.to_thread(cli.main, ["pending"], settings)
    assert capsys.readouterr().out.strip() == "no unprocessed events"
    await asyncio.to_thread(cli.main, ["replay", "evt_cli"], settings, payments_settings)
    assert capsys.readouterr().out.strip() == "evt_cli: applied"  # the same state again

    # Its job, when its retry comes, finds the event processed: done, nothing applied twice.
    await make_due(app, "payments.apply_event:evt_cli")
    await drain(app)
    assert (await jobs(app))["payments.apply_event:evt_cli"].status == "done"
    assert (await ledger(app))["evt_cli"].attempts == 3  # the failure and two replays

    with pytest.raises(SystemExit, match="no event evt_missing"):
        await asyncio.to_thread(cli.main, ["replay", "evt_missing"], settings, payments_settings)
