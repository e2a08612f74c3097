"""Background jobs: typed, enqueued in the caller's transaction, retried, scheduled.

    from {{ cookiecutter.package_name }}.core.jobs import JobContext, enqueue, job

See docs/jobs.md. Without Redis, jobs run inside the app process; with REDIS_URL,
they go through a Redis stream (Taskiq) to `python -m {{ cookiecutter.package_name }} worker`.
"""

from .lifespan import get_jobs, run_jobs
from .models import JobRecord, JobStatus
from .outbox import enqueue
from .registry import Job, JobContext, RetryLater, Tick, job
from .runtime import JobRuntime

__all__ = [
    "Job",
    "JobContext",
    "JobRecord",
    "JobRuntime",
    "JobStatus",
    "RetryLater",
    "Tick",
    "enqueue",
    "get_jobs",
    "job",
    "run_jobs",
]
