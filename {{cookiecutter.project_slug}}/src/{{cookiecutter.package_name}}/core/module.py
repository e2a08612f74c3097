"""The core's own contribution: the health endpoints."""

from .health import router as health_router
from .plugin import Module

module = Module("core", routers=(health_router,))
