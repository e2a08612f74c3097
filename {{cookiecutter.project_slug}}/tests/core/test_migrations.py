"""Migrations: one head, no drift between models and migrations, down and up again."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory


def test_exactly_one_head(migrated: Config) -> None:
    assert len(ScriptDirectory.from_config(migrated).get_heads()) == 1


def test_models_match_migrations(migrated: Config) -> None:
    command.check(migrated)  # raises when autogenerate would find changes


def test_downgrade_to_base_and_back(migrated: Config) -> None:
    command.downgrade(migrated, "base")
    command.upgrade(migrated, "head")
    command.check(migrated)
