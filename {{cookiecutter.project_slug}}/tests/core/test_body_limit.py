"""MAX_BODY_BYTES: a larger request body answers 413 problem+json, declared or chunked.

A real uvicorn on 127.0.0.1, so chunked bodies (no Content-Length) arrive the way a client
sends them; responses, streamed ones included, are not limited.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from {{ cookiecutter.package_name }}.main import create_app
from tests.conftest import make_settings
from tests.core.served import served

LIMIT = 1000


class Note(BaseModel):
    text: str


def limited_app(database_url: str) -> FastAPI:
    app = create_app(make_settings(database_url, max_body_bytes=LIMIT))
    router = APIRouter(prefix="/_test")

    @router.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @router.post("/note")
    async def note(body: Note) -> dict[str, int]:
        return {"chars": len(body.text)}

    @router.post("/form")
    async def form(text: str = Form()) -> dict[str, int]:
        return {"chars": len(text)}

    @router.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b"x" * LIMIT

        return StreamingResponse(chunks(), media_type="text/plain")

    app.include_router(router)
    return app


@pytest.fixture(scope="module")
def http(database_url: str, migrated: object) -> Iterator[httpx.Client]:
    with served(limited_app(database_url)) as url, httpx.Client(base_url=url, timeout=10) as c:
        yield c


def chunked(data: bytes, size: int = 300) -> Iterator[bytes]:
    """A body without Content-Length: httpx sends an iterator with Transfer-Encoding: chunked."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def assert_413(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 413
    assert str(LIMIT) in body["detail"]
    assert response.headers["x-request-id"]


def test_a_declared_length_over_the_limit_is_refused(http: httpx.Client) -> None:
    response = http.post("/_test/raw", content=b"a" * (LIMIT + 1))
    assert "content-length" in response.request.headers
    assert_413(response)


def test_a_body_at_the_limit_is_accepted(http: httpx.Client) -> None:
    response = http.post("/_test/raw", content=b"a" * LIMIT)
    assert response.json() == {"bytes": LIMIT}


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/_test/raw", "application/octet-stream", b"a" * (LIMIT * 3)),
        ("/_test/note", "application/json", b'{"text": "' + b"a" * (LIMIT * 3) + b'"}'),
        ("/_test/form", "application/x-www-form-urlencoded", b"text=" + b"a" * (LIMIT * 3)),
    ],
)
def test_a_chunked_body_over_the_limit_is_refused(
    http: httpx.Client, path: str, content_type: str, body: bytes
) -> None:
    response = http.post(path, content=chunked(body), headers={"Content-Type": content_type})
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert_413(response)


def test_a_chunked_body_under_the_limit_is_accepted(http: httpx.Client) -> None:
    response = http.post(
        "/_test/note",
        content=chunked(b'{"text": "' + b"a" * 500 + b'"}'),
        headers={"Content-Type": "application/json"},
    )
    assert response.json() == {"chars": 500}


def test_responses_are_not_limited_streamed_ones_included(http: httpx.Client) -> None:
    with http.stream("GET", "/_test/stream") as response:
        assert response.status_code == 200
        received = [chunk for chunk in response.iter_bytes() if chunk]
    assert sum(len(chunk) for chunk in received) == 5 * LIMIT
