"""Fixtures for the template's tests: one bake per option combination.

``baked`` is module-scoped and parametrized over ``bake.COMBOS``; each combo's
tests carry an ``xdist_group`` mark so that ``pytest -n N --dist loadgroup``
runs a combo's checks on one worker (baked once) while combos spread across
workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import bake


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(combo, id=combo["id"], marks=pytest.mark.xdist_group(combo["id"]))
        for combo in bake.COMBOS
    ],
)
def baked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> bake.Baked:
    combo = request.param
    base = tmp_path_factory.mktemp(f"bake-{combo['id']}")
    project = bake.bake(combo["context"], base)
    scratch = base / "scratch"
    scratch.mkdir()
    return bake.Baked(
        combo_id=combo["id"],
        path=project,
        options=bake.options(combo["context"]),
        package=bake.find_package(project),
        scratch=scratch,
    )


@pytest.fixture(scope="module")
def redis_env(baked: bake.Baked) -> dict[str, str]:
    """TEST_REDIS_URL for the project's tests, one Redis db per xdist worker."""
    url = bake.redis_url_for_worker(os.environ.get("TEST_REDIS_URL"))
    return {"TEST_REDIS_URL": url} if url else {}


@pytest.fixture(scope="module")
def postgres_urls(baked: bake.Baked) -> Iterator[dict[str, str]]:
    """Two fresh databases on the TEST_DATABASE_URL server for this bake.

    One for the project's pytest, one for the migration checks; both dropped
    afterwards. Skips when no server is given.
    """
    server = os.environ.get("TEST_DATABASE_URL")
    if not server:
        pytest.skip("TEST_DATABASE_URL not set: no PostgreSQL server to test against")
    prefix = f"bake_{baked.package}"
    made: list[str] = []
    urls: dict[str, str] = {}
    try:
        for role in ("tests", "migrate"):
            name, url = bake.create_database(server, f"{prefix}_{role}")
            made.append(name)
            urls[role] = url
        yield urls
    finally:
        for name in made:
            bake.drop_database(server, name)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"bake combos: {', '.join(c['id'] for c in bake.COMBOS)}",
        f"TEST_DATABASE_URL: {'set' if os.environ.get('TEST_DATABASE_URL') else 'unset'}; "
        f"TEST_REDIS_URL: {'set' if os.environ.get('TEST_REDIS_URL') else 'unset'}",
        f"template: {Path(bake.ROOT)}",
    ]
