"""0011_orgs gives the accounts that existed before it their personal organization."""

from __future__ import annotations

import asyncio
import uuid

from alembic import command
from alembic.config import Config
from sqlalchemy import delete, insert, select

from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.db import Database
from {{ cookiecutter.package_name }}.orgs.models import Membership, Organization


def test_existing_accounts_get_a_personal_org(migrated: Config, settings: Settings) -> None:
    command.downgrade(migrated, "0010_auth_purge")
    ids = [uuid.uuid4() for _ in range(3)]

    async def add_users() -> None:
        database = Database.from_settings(settings)
        async with database.engine.begin() as conn:
            await conn.execute(
                insert(User),
                [
                    {"id": i, "email": f"old{n}@example.com", "hashed_password": None}
                    for n, i in enumerate(ids)
                ],
            )
        await database.engine.dispose()

    async def read() -> list[tuple[uuid.UUID | None, str, str]]:
        database = Database.from_settings(settings)
        try:
            async with database.sessionmaker() as session:
                rows = await session.execute(
                    select(Organization.personal_for, Organization.name, Membership.role)
                    .join(Membership, Membership.org_id == Organization.id)
                    .order_by(Organization.name)
                )
                found = [tuple(row) for row in rows]
            async with database.engine.begin() as conn:
                await conn.execute(delete(User))
            return found  # type: ignore[return-value]
        finally:
            await database.engine.dispose()

    try:
        asyncio.run(add_users())
    finally:
        command.upgrade(migrated, "head")
    found = asyncio.run(read())
    assert sorted(found, key=lambda r: r[1]) == [
        (ids[n], f"old{n}'s organization", "owner") for n in range(3)
    ]
