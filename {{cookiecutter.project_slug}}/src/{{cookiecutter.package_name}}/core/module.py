"""The core's own contribution: the health endpoints."""

from .health import install
from .plugin import Module

module = Module("core", install=install)
