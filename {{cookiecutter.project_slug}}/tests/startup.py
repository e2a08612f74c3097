"""What starting the app imports, seen from a fresh interpreter.

The test process has imported every SDK already (the tests use them), so a subprocess
shows what the app itself loads: `main.app` built from the environment, started, and
asked for its health probes. A module's heavy SDK must wait for the first request that
needs it (docs/benchmarks.md, start-up); each module's `test_startup.py` names its own.
Not a timing: a list of names, the same on any machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

SCRIPT = """
import asyncio, gc, json, sys

from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.main import app


async def main() -> None:
    async with LifespanManager(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            for path in ("/health/live", "/health/ready"):
                response = await http.get(path)
                assert response.status_code == 200, (path, response.text)
    print(json.dumps(sorted(sys.modules)))
    print(json.dumps(gc.isenabled()))


asyncio.run(main())
"""


def imported_at_start(database_url: str, env: Mapping[str, str]) -> set[str]:
    """Top-level packages imported once the app has started and answered its probes.

    `env`: the module's own settings (its keys, so that it is configured and would build
    its client if it did so at start-up). The database must be migrated.
    """
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(SRC),
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "REDIS_URL": "",
        "JOBS_SCHEDULER": "false",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    # Elsewhere than the project root, whose .env must not count.
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run(  # noqa: S603 - our own interpreter, a fixed script
            [sys.executable, "-c", SCRIPT],
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    *_, modules, collector_on = done.stdout.strip().splitlines()
    assert json.loads(collector_on) is True  # main.py turned the collector back on
    names: list[str] = json.loads(modules)
    return {name.partition(".")[0] for name in names}
