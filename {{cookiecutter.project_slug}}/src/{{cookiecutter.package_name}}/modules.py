"""The one place modules are wired in: their routers, lifespans and tables.

Alembic's env.py imports this file so that every module's tables are known.
To drop a module, delete its folders and its lines here.
"""

{% if cookiecutter.use_admin -%}
from .admin import module as admin
{% endif -%}
{% if cookiecutter.use_ai and cookiecutter.use_payments -%}
from .ai import billing as ai_billing
{% endif -%}
{% if cookiecutter.use_ai and cookiecutter.use_auth -%}
from .ai import conversations as ai_conversations
{% endif -%}
{% if cookiecutter.use_ai -%}
from .ai import module as ai
{% endif -%}
{% if cookiecutter.use_ai and cookiecutter.use_orgs -%}
from .ai import orgs as ai_orgs
{% endif -%}
{% if cookiecutter.use_ai and cookiecutter.use_payments -%}
from .ai import payments_tools as ai_payments_tools
{% endif -%}
{% if cookiecutter.use_auth -%}
from .auth import module as auth
{% endif -%}
from .core import module as core
from .core.plugin import Module
{% if cookiecutter.use_orgs -%}
from .orgs import module as orgs
{% endif -%}
{% if cookiecutter.use_payments -%}
from .payments import module as payments
{% endif -%}
{% if cookiecutter.use_payments and cookiecutter.use_orgs -%}
from .payments import orgs as payments_orgs
{% endif %}
MODULES: tuple[Module, ...] = (
    core.module,
    # the optional modules, each after the modules it builds on; lifespans start in this order
{%- if cookiecutter.use_auth %}
    auth.module,
{%- endif %}
{%- if cookiecutter.use_orgs %}
    orgs.module,
{%- endif %}
{%- if cookiecutter.use_payments %}
    payments.module,
{%- endif %}
{%- if cookiecutter.use_payments and cookiecutter.use_orgs %}
    payments_orgs.module,  # the organization pays
{%- endif %}
{%- if cookiecutter.use_ai %}
    ai.module,
{%- endif %}
{%- if cookiecutter.use_ai and cookiecutter.use_auth %}
    ai_conversations.module,
{%- endif %}
{%- if cookiecutter.use_ai and cookiecutter.use_payments %}
    ai_billing.module,  # metered AI overage, reported to Stripe
{%- endif %}
{%- if cookiecutter.use_ai and cookiecutter.use_orgs %}
    ai_orgs.module,
{%- endif %}
{%- if cookiecutter.use_ai and cookiecutter.use_payments %}
    ai_payments_tools.module,  # the get_subscription tool
{%- endif %}
{%- if cookiecutter.use_admin %}
    admin.module,
{%- endif %}
)
