"""The one place modules are wired in: their routers, lifespans and tables.

Alembic's env.py imports this file so that every module's tables are known.
To drop a module, delete its folders and its lines here.
"""

{% if cookiecutter.use_ai -%}
from .ai import module as ai
{% endif -%}
from .core import module as core
from .core.plugin import Module

MODULES: tuple[Module, ...] = (
    core.module,
    # optional modules follow, in the order their lifespans start
{%- if cookiecutter.use_ai %}
    ai.module,
{%- endif %}
)
