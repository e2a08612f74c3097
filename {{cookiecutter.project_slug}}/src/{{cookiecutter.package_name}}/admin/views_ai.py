"""Admin views of the AI module: the usage ledger and the monthly totals, both read-only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from sqladmin import ModelView
from sqladmin.filters import AllUniqueStringValuesFilter, OperationColumnFilter

from {{ cookiecutter.package_name }}.ai.models import AIUsage, AIUsageTotal


class AIUsageAdmin(ModelView, model=AIUsage):
    name = "AI request"
    name_plural = "AI usage"
    icon = "fa-solid fa-robot"
    category = "AI"

    column_list: ClassVar[Sequence[Any]] = [
        AIUsage.created_at,
        AIUsage.user_id,
        AIUsage.model,
        AIUsage.prompt_tokens,
        AIUsage.completion_tokens,
        AIUsage.total_tokens,
        AIUsage.latency_ms,
        AIUsage.outcome,
        AIUsage.streamed,
    ]
    column_details_list: ClassVar[Sequence[Any]] = [
        AIUsage.id,
        *column_list,
        AIUsage.request_id,
    ]
    column_export_list: ClassVar[list[Any]] = [*column_details_list]
    column_labels: ClassVar[dict[Any, str]] = {
        AIUsage.id: "ID",
        AIUsage.created_at: "At",
        AIUsage.user_id: "User ID",
        AIUsage.model: "Model",
        AIUsage.prompt_tokens: "Prompt tokens",
        AIUsage.completion_tokens: "Completion tokens",
        AIUsage.total_tokens: "Total tokens",
        AIUsage.latency_ms: "Latency (ms)",
        AIUsage.outcome: "Outcome",
        AIUsage.streamed: "Streamed",
        AIUsage.request_id: "Request ID",
    }
    column_filters: ClassVar[Sequence[Any]] = [
        OperationColumnFilter(AIUsage.user_id, title="User ID"),
        AllUniqueStringValuesFilter(AIUsage.model, title="Model"),
        AllUniqueStringValuesFilter(AIUsage.outcome, title="Outcome"),
    ]
    column_searchable_list: ClassVar[Sequence[Any]] = [AIUsage.request_id]
    column_default_sort: ClassVar[Any] = (AIUsage.created_at, True)
    # A ledger: read-only.
    can_create = False
    can_edit = False
    can_delete = False


class AIUsageTotalAdmin(ModelView, model=AIUsageTotal):
    name = "AI monthly total"
    name_plural = "AI monthly totals"
    icon = "fa-solid fa-chart-column"
    category = "AI"

    column_list: ClassVar[Sequence[Any]] = [
        AIUsageTotal.period,
        AIUsageTotal.subject,
        AIUsageTotal.tokens,
        AIUsageTotal.requests,
        AIUsageTotal.reserved,
    ]
    column_details_list: ClassVar[Sequence[Any]] = [*column_list, AIUsageTotal.reserved_at]
    column_labels: ClassVar[dict[Any, str]] = {
        AIUsageTotal.period: "Month",
        AIUsageTotal.subject: "User ID",
        AIUsageTotal.tokens: "Tokens",
        AIUsageTotal.requests: "Requests",
        AIUsageTotal.reserved: "Reserved (calls in flight)",
        AIUsageTotal.reserved_at: "Last reservation",
    }
    column_filters: ClassVar[Sequence[Any]] = [
        OperationColumnFilter(AIUsageTotal.subject, title="User ID"),
    ]
    column_default_sort: ClassVar[Any] = [(AIUsageTotal.period, True), (AIUsageTotal.tokens, True)]
    can_create = False
    can_edit = False
    can_delete = False


VIEWS: tuple[type[ModelView], ...] = (AIUsageAdmin, AIUsageTotalAdmin)
