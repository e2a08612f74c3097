"""One transaction per request, committed before the response leaves."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import APIRouter, FastAPI
from httpx import AsyncClient
from sqlalchemy import MetaData, String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from {{ cookiecutter.package_name }}.core.db import Database, SessionDep
from {{ cookiecutter.package_name }}.core.errors import ProblemError


class TestBase(DeclarativeBase):
    """A base of its own, so this table never reaches the app's migrations."""

    __test__ = False
    metadata = MetaData()


class Widget(TestBase):
    __tablename__ = "test_widgets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


router = APIRouter(prefix="/_test/widgets")


@router.post("/{name}")
async def add(name: str, session: SessionDep) -> dict[str, str]:
    session.add(Widget(name=name))
    return {"added": name}


@router.post("/{name}/twice")
async def add_twice(name: str, session: SessionDep) -> dict[str, str]:
    # Both rows reach the database only at commit time, where the unique
    # constraint fails: the client must see an error, not this 200 body.
    session.add_all([Widget(name=name), Widget(name=name)])
    return {"added": name}


@router.post("/{name}/then-fail")
async def add_then_fail(name: str, session: SessionDep) -> None:
    session.add(Widget(name=name))
    await session.flush()
    raise ProblemError(400, "Changed my mind.")


@pytest.fixture
async def http(app: FastAPI, client: AsyncClient) -> AsyncIterator[AsyncClient]:
    database: Database = app.state.database
    async with database.engine.begin() as conn:
        await conn.run_sync(TestBase.metadata.create_all)
    app.include_router(router)
    yield client
    async with database.engine.begin() as conn:
        await conn.run_sync(TestBase.metadata.drop_all)


async def count(app: FastAPI) -> int:
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(Widget))).scalar_one())


async def test_success_commits(http: AsyncClient, app: FastAPI) -> None:
    response = await http.post("/_test/widgets/a")
    assert response.status_code == 200
    assert await count(app) == 1


async def test_failed_commit_is_an_error_not_a_200(http: AsyncClient, app: FastAPI) -> None:
    response = await http.post("/_test/widgets/b/twice")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert "added" not in response.text
    assert await count(app) == 0


async def test_error_rolls_back(http: AsyncClient, app: FastAPI) -> None:
    response = await http.post("/_test/widgets/c/then-fail")
    assert response.status_code == 400
    assert await count(app) == 0


async def test_a_transaction_that_read_can_write_after_another_committed(
    http: AsyncClient, app: FastAPI
) -> None:
    """A session's reads before its first write take no snapshot to keep (on SQLite the
    driver begins the transaction at the first write), so that write waits for the lock
    like any other. Begun at the read instead, it would fail at once, without waiting
    ("database is locked"), because another transaction committed since."""
    database: Database = app.state.database
    async with database.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Widget)) == 0
        async with database.sessionmaker() as other, other.begin():
            other.add(Widget(name="theirs"))
        session.add(Widget(name="mine"))
        await session.commit()
    assert await count(app) == 2
