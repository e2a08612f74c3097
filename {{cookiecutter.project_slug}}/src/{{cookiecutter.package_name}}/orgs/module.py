"""The orgs module's contribution: its routes, its job (the invitation email) and,
through service.py, a personal organization for every new account."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.core.plugin import Module

from . import api_keys
from .jobs import send_invitation
from .rls import lifespan
from .router import router

module = Module(
    "orgs", routers=(router, api_keys.router), lifespan=lifespan, jobs=(send_invitation,)
)
