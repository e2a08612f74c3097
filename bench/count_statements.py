"""SQL statements one list request costs, for several numbers of rows.

    python bench/count_statements.py <project>/src <package> <database-url> 1 10 50

Runs the app in-process (httpx's ASGI transport), counts the statements the
engine sends for `GET /api/v1/api-keys` after creating each number of keys, and
prints JSON pairs [rows, statements]. A constant count means no N+1.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import uuid
from typing import Any

from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event, text

PASSWORD = "bench-password-123456"


def counting_app(package: str, url: str) -> tuple[Any, list[str]]:
    """The project's app on `url`, and the list every SQL statement it sends is added to."""
    config = importlib.import_module(f"{package}.core.config")
    main = importlib.import_module(f"{package}.main")
    settings = config.Settings(
        _env_file=None,
        environment="test",
        database_url=url,
        secret_key="s" * 48,
        log_level="WARNING",
    )
    app = main.create_app(settings)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(app.state.database.engine.sync_engine, "before_cursor_execute", record)
    return app, statements


async def count(package: str, url: str, sizes: list[int]) -> list[list[int]]:
    app, statements = counting_app(package, url)
    counts = []
    async with LifespanManager(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://bench") as http:
            email = f"count-{uuid.uuid4().hex[:8]}@example.com"
            credentials = {"email": email, "password": PASSWORD}
            await http.post("/api/v1/auth/register", json=credentials)
            async with app.state.database.engine.begin() as connection:  # API keys need it
                await connection.execute(
                    text("UPDATE users SET is_verified = :yes WHERE email = :email"),
                    {"yes": True, "email": email},
                )
            login = await http.post(
                "/api/v1/auth/login", data={"username": email, "password": PASSWORD}
            )
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            made = 0
            for size in sizes:
                while made < size:
                    created = await http.post(
                        "/api/v1/api-keys", json={"name": f"key {made}"}, headers=headers
                    )
                    created.raise_for_status()
                    made += 1
                statements.clear()
                rows = (await http.get("/api/v1/api-keys", headers=headers)).json()
                counts.append([len(rows), len(statements)])
    return counts


if __name__ == "__main__":
    src, package, url, *sizes = sys.argv[1:]
    sys.path.insert(0, src)
    print(json.dumps(asyncio.run(count(package, url, [int(s) for s in sizes]))))
