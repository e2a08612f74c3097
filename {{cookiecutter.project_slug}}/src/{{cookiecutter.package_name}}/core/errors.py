"""Errors as `application/problem+json` (RFC 9457)."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"

log = structlog.get_logger(__name__)


class Problem(BaseModel):
    """The one shape of every error response (RFC 9457), served as application/problem+json."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(default="about:blank", description="A URI naming the kind of problem.")
    title: str = Field(description="A short summary of the kind of problem.")
    status: int = Field(ge=400, le=599, description="The HTTP status code.")
    detail: str | None = Field(default=None, description="What went wrong this time.")
    instance: str | None = Field(default=None, description="The request's path.")
    request_id: str | None = Field(default=None, description="The request's X-Request-ID.")
    errors: list[Any] | None = Field(
        default=None, description="For a 422: each offending field (`loc`, `msg`, `type`)."
    )


class ProblemError(Exception):
    """Raise from anywhere to answer with a problem document.

    `type_` is a URI naming the kind of problem (`about:blank` when the status says it all);
    `extra` members are added to the document (RFC 9457 extension members).
    """

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title or HTTPStatus(status).phrase)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.type = type_
        self.headers = headers
        self.extra = extra


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


def problem_response(
    request: Request,
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    type_: str = "about:blank",
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body["instance"] = request.url.path
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    body.update(extra)
    return ProblemResponse(
        jsonable_encoder(body), status_code=status, headers=dict(headers) if headers else None
    )


async def _problem_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        request,
        exc.status,
        title=exc.title,
        detail=exc.detail,
        type_=exc.type,
        headers=exc.headers,
        **exc.extra,
    )


async def _http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    extra: dict[str, Any] = {} if isinstance(exc.detail, str) else {"errors": exc.detail}
    return problem_response(request, exc.status_code, detail=detail, headers=exc.headers, **extra)


async def _validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors)
    return problem_response(
        request,
        422,
        detail=f"The request is not valid: {fields}." if fields else "The request is not valid.",
        errors=errors,
    )


async def _integrity_error(request: Request, exc: Exception) -> ProblemResponse:
    log.warning("integrity_error", error=type(exc).__name__)
    return problem_response(
        request, 409, detail="The request conflicts with the current state of a resource."
    )


async def _database_error(request: Request, exc: Exception) -> ProblemResponse:
    unavailable = isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )
    if not unavailable:
        return await _unhandled(request, exc)
    return await _database_unavailable(request, exc)


async def _database_unavailable(request: Request, exc: Exception) -> ProblemResponse:
    if isinstance(exc, PoolTimeoutError):
        # Overload, not a fault: one line, no traceback (there may be thousands).
        log.warning("database_pool_exhausted", detail=str(exc).split(" (Background")[0])
    else:
        log.error("database_unavailable", error=type(exc).__name__, exc_info=exc)
    return problem_response(
        request,
        503,
        detail="The database is busy or unreachable; try again shortly.",
        headers={"Retry-After": "1"},
    )


async def _unhandled(request: Request, exc: Exception) -> ProblemResponse:
    log.error("unhandled_exception", exc_info=exc)
    return problem_response(request, 500, detail="An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    # Pool exhausted beyond DB_POOL_TIMEOUT, or the server went away.
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(ConnectionError, _database_unavailable)
    app.add_exception_handler(Exception, _unhandled)
