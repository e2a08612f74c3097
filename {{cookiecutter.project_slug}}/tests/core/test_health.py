from __future__ import annotations

from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.main import create_app
from tests.conftest import make_settings


async def test_live(client: AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_when_database_answers(client: AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "off", "jobs": "ok"},
    }


async def test_ready_is_503_when_database_is_down() -> None:
    # A server nobody listens on: connection refused.
    down = make_settings("postgresql+asyncpg://nobody:secret@127.0.0.1:1/none")
    broken = create_app(down)
    async with LifespanManager(broken):
        transport = ASGITransport(app=broken, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get("/health/ready")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["checks"]["database"] == "failed"
    assert "secret" not in response.text
