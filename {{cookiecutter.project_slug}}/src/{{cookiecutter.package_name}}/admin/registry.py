"""Every admin view, in menu order: each module with tables has one views file listed here."""

from __future__ import annotations

from sqladmin import ModelView

from {{ cookiecutter.package_name }}.admin import views{% if cookiecutter.use_ai | default(false) %}, views_ai{% endif %}

VIEWS: tuple[type[ModelView], ...] = (*views.VIEWS,{% if cookiecutter.use_ai | default(false) %} *views_ai.VIEWS{% endif %})
