"""Admin view of metered AI billing: the overage batches sent to Stripe's meters, read-only.

An `expired` batch is one Stripe had not accepted a day after the first attempt; settle
it with `python -m {{ cookiecutter.package_name }}.ai.meter` (ai/meter.py), which checks
its state before it sends anything. Nothing is changed from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from sqladmin import ModelView
from sqladmin.filters import AllUniqueStringValuesFilter

from {{ cookiecutter.package_name }}.ai.billing import AIMeterBatch


class AIMeterBatchAdmin(ModelView, model=AIMeterBatch):
    name = "AI meter batch"
    name_plural = "AI meter batches"
    icon = "fa-solid fa-file-invoice-dollar"
    category = "AI"

    column_list: ClassVar[Sequence[Any]] = [
        AIMeterBatch.created_at,
        AIMeterBatch.customer_id,
        AIMeterBatch.period,
        AIMeterBatch.start_tokens,
        AIMeterBatch.end_tokens,
        AIMeterBatch.status,
        AIMeterBatch.attempts,
        AIMeterBatch.sent_at,
    ]
    column_details_list: ClassVar[Sequence[Any]] = [
        AIMeterBatch.id,
        AIMeterBatch.identifier,
        AIMeterBatch.subject,
        AIMeterBatch.event_name,
        *column_list,
        AIMeterBatch.last_error,
    ]
    column_labels: ClassVar[dict[Any, str]] = {
        AIMeterBatch.id: "ID",
        AIMeterBatch.identifier: "Meter event identifier",
        AIMeterBatch.subject: "Billed subject (the ID its AI usage is totalled under)",
        AIMeterBatch.event_name: "Meter event name",
        AIMeterBatch.created_at: "Made",
        AIMeterBatch.customer_id: "Stripe customer",
        AIMeterBatch.period: "Month",
        AIMeterBatch.start_tokens: "From token",
        AIMeterBatch.end_tokens: "To token",
        AIMeterBatch.status: "Status",
        AIMeterBatch.attempts: "Attempts",
        AIMeterBatch.sent_at: "Sent",
        AIMeterBatch.last_error: "Last error",
    }
    column_filters: ClassVar[Sequence[Any]] = [
        AllUniqueStringValuesFilter(AIMeterBatch.status, title="Status"),
    ]
    column_searchable_list: ClassVar[Sequence[Any]] = [
        AIMeterBatch.customer_id,
        AIMeterBatch.identifier,
    ]
    column_default_sort: ClassVar[Any] = (AIMeterBatch.id, True)
    # What Stripe was sent is a record: settled by the command, never edited here.
    can_create = False
    can_edit = False
    can_delete = False


VIEWS: tuple[type[ModelView], ...] = (AIMeterBatchAdmin,)
