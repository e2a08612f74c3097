"""Stripe's SDK loads when a request, job or command first needs it, not at start-up."""

from __future__ import annotations

from alembic.config import Config

from tests.startup import imported_at_start


def test_starting_the_app_does_not_import_the_sdk(database_url: str, migrated: Config) -> None:
    configured = {
        "STRIPE_SECRET_KEY": "sk_test_not_a_key",
        "STRIPE_WEBHOOK_SECRET": "whsec_not_a_secret",
    }
    loaded = imported_at_start(database_url, configured)
    assert "fastapi" in loaded  # the app did start
    assert "stripe" not in loaded
