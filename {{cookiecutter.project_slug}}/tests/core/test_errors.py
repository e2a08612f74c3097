"""Every error is problem+json; tracebacks go to the log, never to the client."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI
from httpx import AsyncClient
from pydantic import BaseModel, Field

from {{ cookiecutter.package_name }}.core.errors import ProblemError

router = APIRouter(prefix="/_test")


class Item(BaseModel):
    name: str = Field(min_length=1)
    quantity: int = Field(gt=0)


@router.post("/items")
async def create_item(item: Item) -> Item:
    return item


@router.get("/boom")
async def boom() -> None:
    raise RuntimeError("secret internal detail")


@router.get("/teapot")
async def teapot() -> None:
    raise ProblemError(418, "Short and stout.", type_="https://example.com/teapot", pot="yes")


@pytest.fixture
def http(app: FastAPI, client: AsyncClient) -> AsyncClient:
    app.include_router(router)
    return client


async def test_not_found_is_problem_json(http: AsyncClient) -> None:
    response = await http.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 404
    assert body["title"] == "Not Found"
    assert body["instance"] == "/nope"
    assert body["request_id"] == response.headers["x-request-id"]


async def test_validation_error_lists_fields(http: AsyncClient) -> None:
    response = await http.post("/_test/items", json={"name": "", "quantity": 0})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    locations = sorted(tuple(e["loc"]) for e in body["errors"])
    assert locations == [("body", "name"), ("body", "quantity")]
    assert "body.name" in body["detail"]


async def test_malformed_json_is_422(http: AsyncClient) -> None:
    response = await http.post(
        "/_test/items", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_unhandled_error_is_500_without_traceback(
    http: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await http.get("/_test/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text
    assert response.json()["detail"] == "An unexpected error occurred."
    assert "secret internal detail" in caplog.text  # the log has it


async def test_problem_error_carries_type_and_extensions(http: AsyncClient) -> None:
    response = await http.get("/_test/teapot")
    assert response.status_code == 418
    body = response.json()
    assert body["type"] == "https://example.com/teapot"
    assert body["detail"] == "Short and stout."
    assert body["pot"] == "yes"


async def test_request_id_is_kept_or_made(http: AsyncClient) -> None:
    given = await http.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await http.get("/health/live")
    assert len(made.headers["x-request-id"]) == 32
    hostile = await http.get("/health/live", headers={"X-Request-ID": "bad id\twith spaces"})
    assert hostile.headers["x-request-id"] != "bad id\twith spaces"


async def test_security_headers(http: AsyncClient) -> None:
    response = await http.get("/health/live")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
