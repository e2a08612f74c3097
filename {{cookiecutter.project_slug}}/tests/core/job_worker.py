"""The project's worker, with the test jobs too: `python -m tests.core.job_worker`.

Configured from the environment like `python -m <package> worker` (tests/core/jobkit.py).
"""

from __future__ import annotations

import asyncio
import os

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.jobs.worker import serve
from tests.core.jobkit import app_with_test_jobs


def main() -> None:
    settings = Settings(_env_file=None)
    app = app_with_test_jobs(settings, scheduled=os.environ.get("TEST_SCHEDULED") == "1")
    asyncio.run(serve(app))


if __name__ == "__main__":
    main()
