"""Admin view of the core's background jobs: the `jobs` table, newest first.

Read-only, like a ledger: jobs are made by the code that enqueues them and changed by the
processes that run them. Dead jobs (out of attempts, kept with their last error) can be
replayed or deleted here, like `python -m {{ cookiecutter.package_name }} jobs replay|delete`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from sqladmin import Flash, ModelView, action
from sqladmin.filters import StaticValuesFilter
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from {{ cookiecutter.package_name }}.admin.views import app_database, back_to_list
from {{ cookiecutter.package_name }}.core.jobs import JobRecord, JobStatus
from {{ cookiecutter.package_name }}.core.jobs import dead as dead_jobs

# Jobs changed per click (each is one row: the whole batch is one short UPDATE or DELETE).
ACTION_MAX = 200
ERROR_PREVIEW_CHARS = 120


def selected_job_ids(request: Request) -> list[str]:
    """The job ids an action was run on (`?pks=a,b`), at most ACTION_MAX."""
    ids = [raw.strip() for raw in request.query_params.get("pks", "").split(",")]
    return [i for i in ids if i][:ACTION_MAX]


def attempts(model: Any, _attr: Any) -> str:
    return f"{model.attempts}/{model.max_attempts}"


def error_preview(model: Any, _attr: Any) -> str:
    """The first line of the last error, shortened (the details page shows all of it)."""
    lines = (model.last_error or "").splitlines()
    first = lines[0] if lines else ""
    if len(first) > ERROR_PREVIEW_CHARS:
        return first[: ERROR_PREVIEW_CHARS - 3] + "..."
    return first


class JobAdmin(ModelView, model=JobRecord):
    name = "Job"
    name_plural = "Jobs"
    icon = "fa-solid fa-gears"
    category = "Operations"

    column_list: ClassVar[Sequence[Any]] = [
        JobRecord.id,
        JobRecord.name,
        JobRecord.status,
        JobRecord.attempts,
        JobRecord.run_at,
        JobRecord.last_error,
        JobRecord.created_at,
    ]
    column_details_list: ClassVar[Sequence[Any]] = [
        JobRecord.id,
        JobRecord.name,
        JobRecord.status,
        JobRecord.attempts,
        JobRecord.max_attempts,
        JobRecord.args,
        JobRecord.run_at,
        JobRecord.queued_at,
        JobRecord.started_at,
        JobRecord.finished_at,
        JobRecord.created_at,
        JobRecord.last_error,
    ]
    column_export_list: ClassVar[list[Any]] = [
        c for c in column_details_list if c is not JobRecord.args
    ]
    column_labels: ClassVar[dict[Any, str]] = {
        JobRecord.id: "ID",
        JobRecord.name: "Name",
        JobRecord.status: "Status",
        JobRecord.attempts: "Attempts",
        JobRecord.max_attempts: "Max attempts",
        JobRecord.args: "Arguments",
        JobRecord.run_at: "Run at",
        JobRecord.queued_at: "Queued",
        JobRecord.started_at: "Started",
        JobRecord.finished_at: "Finished",
        JobRecord.created_at: "Created",
        JobRecord.last_error: "Last error",
    }
    column_formatters: ClassVar[dict[Any, Any]] = {
        JobRecord.attempts: attempts,
        JobRecord.last_error: error_preview,
    }
    column_searchable_list: ClassVar[Sequence[Any]] = [JobRecord.name, JobRecord.id]
    column_filters: ClassVar[Sequence[Any]] = [
        StaticValuesFilter(
            JobRecord.status,
            [(s.value, s.value.capitalize()) for s in JobStatus],
            title="Status",
            parameter_name="status",
        ),
    ]
    column_sortable_list: ClassVar[Sequence[Any]] = [
        JobRecord.name,
        JobRecord.status,
        JobRecord.run_at,
        JobRecord.created_at,
    ]
    column_default_sort: ClassVar[Any] = [(JobRecord.created_at, True), (JobRecord.id, True)]
    # Jobs come from the code that enqueues them; here dead ones are replayed or deleted.
    can_create = False
    can_edit = False
    can_delete = False

    @action(
        name="replay",
        label="Replay",
        confirmation_message="Run the selected dead jobs again, with a fresh set of attempts?",
    )
    async def replay(self, request: Request) -> Response:
        return await self._change(request, dead_jobs.replay, "replayed")

    @action(
        name="forget",
        label="Delete",
        confirmation_message="Delete the selected dead jobs for good? They will not run again.",
    )
    async def forget(self, request: Request) -> Response:
        return await self._change(request, dead_jobs.forget, "deleted")

    async def _change(
        self,
        request: Request,
        change: Callable[[AsyncConnection, Sequence[str]], Awaitable[list[str]]],
        verb: str,
    ) -> Response:
        ids = selected_job_ids(request)
        async with app_database(request).engine.begin() as connection:
            done = await change(connection, ids)
        left = len(ids) - len(done)
        message = f"{verb.capitalize()} {len(done)} dead job(s)."
        if left:
            Flash.error(request, f"{message} {left} left alone: only dead jobs can be {verb}.")
        else:
            Flash.success(request, message)
        return back_to_list(request, self)


VIEWS: tuple[type[ModelView], ...] = (JobAdmin,)
