"""The core's own contribution: the health endpoints, the email and housekeeping jobs."""

from .email import send_email
from .health import install
from .jobs.housekeeping import purge_finished_jobs
from .plugin import Module

module = Module("core", install=install, jobs=(send_email, purge_finished_jobs))
