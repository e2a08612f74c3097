"""Payments tables: Stripe customers, subscriptions, and the ledger of webhook events.

Customers, subscriptions and checkouts belong to the billing subject: `subject_id` names
it whatever it is (`SUBJECT_KEY`, the column, says which; see payments/subjects.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, false, func
from sqlalchemy.orm import Mapped, mapped_column, synonym

from {{ cookiecutter.package_name }}.auth.models import UTCDateTime, utcnow
from {{ cookiecutter.package_name }}.core.db import Base
{% if cookiecutter.use_orgs %}
# Who pays: an organization (payments/orgs.py installs its subjects).
SUBJECT_KEY = "org_id"
SUBJECT_LABEL = "Organization ID"
{%- else %}
# Who pays: each user for themselves.
SUBJECT_KEY = "user_id"
SUBJECT_LABEL = "User ID"
{%- endif %}


class StripeCustomer(Base):
    """The one Stripe customer of a billing subject, created on first need."""

    __tablename__ = "stripe_customers"
{% if cookiecutter.use_orgs %}
    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
{%- else %}
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
{%- endif %}
    subject_id: Mapped[uuid.UUID] = synonym(SUBJECT_KEY)
    customer_id: Mapped[str] = mapped_column(String(255), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )


class Subscription(Base):
    """A Stripe subscription as Stripe last described it (read from Stripe on each event)."""

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # sub_...
{%- if cookiecutter.use_orgs %}
    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
{%- else %}
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
{%- endif %}
    subject_id: Mapped[uuid.UUID] = synonym(SUBJECT_KEY)
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(32))
    price_id: Mapped[str | None] = mapped_column(String(255))
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_at_period_end: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # When this state was read from Stripe (the webhooks read it under a per-subscription lock).
    state_as_of: Mapped[datetime] = mapped_column(UTCDateTime)
    latest_invoice_status: Mapped[str | None] = mapped_column(String(32))
    latest_invoice_as_of: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class StripeCheckout(Base):
    """The subject's latest Checkout Session: one row per subject, the lock a new checkout takes.

    Starting a checkout inserts the row if missing and locks it (`SELECT ... FOR UPDATE`
    on PostgreSQL, the single writer on SQLite) before anything else, so a subject's
    concurrent checkouts run one after the other across every instance; the second finds
    the first's session and gets it back instead of a second one.
    """

    __tablename__ = "stripe_checkouts"
{% if cookiecutter.use_orgs %}
    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
{%- else %}
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
{%- endif %}
    subject_id: Mapped[uuid.UUID] = synonym(SUBJECT_KEY)
    session_id: Mapped[str | None] = mapped_column(String(255))  # cs_...
    plan: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class StripeEvent(Base):
    """Every webhook event received, keyed by Stripe's event id: nothing is lost.

    Recorded together with the job that applies it (`payments.apply_event:<event id>`);
    `processed_at` is set in the same transaction as the changes the event causes. An
    unprocessed row is one its job will apply (or a dead job's: replay it), or that
    `python -m <package>.payments replay` can run. Processed rows are purged after
    PAYMENTS_EVENT_RETENTION_DAYS.
    """

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # evt_...
    type: Mapped[str] = mapped_column(String(100), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    stripe_created: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # applied | ignored | unknown_customer | unknown_subscription (| stale, before 0008)
    outcome: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
