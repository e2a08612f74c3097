"""Every admin view, in menu order: each module with tables has one views file listed here."""

from __future__ import annotations

from sqladmin import ModelView

from {{ cookiecutter.package_name }}.admin import (
    views,
{%- if cookiecutter.use_ai | default(false) %}
    views_ai,
{%- endif %}
{%- if cookiecutter.use_ai | default(false) and cookiecutter.use_payments | default(false) %}
    views_ai_billing,
{%- endif %}
    views_jobs,
{%- if cookiecutter.use_orgs | default(false) %}
    views_orgs,
{%- endif %}
{%- if cookiecutter.use_payments | default(false) %}
    views_payments,
{%- endif %}
)

VIEWS: tuple[type[ModelView], ...] = (
    # the auth module's views (users, OAuth accounts, API keys) first in the menu
    *views.VIEWS,
{%- if cookiecutter.use_orgs | default(false) %}
    *views_orgs.VIEWS,
{%- endif %}
{%- if cookiecutter.use_payments | default(false) %}
    *views_payments.VIEWS,
{%- endif %}
{%- if cookiecutter.use_ai | default(false) %}
    *views_ai.VIEWS,
{%- endif %}
{%- if cookiecutter.use_ai | default(false) and cookiecutter.use_payments | default(false) %}
    *views_ai_billing.VIEWS,
{%- endif %}
    # the core's background jobs: always there
    *views_jobs.VIEWS,
)
