"""The role row-level security holds (tests/pg_role.py), for the orgs tests that use it."""

from tests.pg_role import app_role, needs_postgresql

__all__ = ["app_role", "needs_postgresql"]
