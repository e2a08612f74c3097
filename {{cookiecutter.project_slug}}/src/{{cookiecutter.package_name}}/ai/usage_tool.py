"""The example tool every project with AI has: the caller's own usage this month."""

from __future__ import annotations

from .dependencies import AIState
from .router import month_of
from .schemas import UsageSummary
from .tools import NoArguments, ToolContext, tool


@tool("get_usage", scopes=["read"])
async def get_usage(ctx: ToolContext, args: NoArguments) -> UsageSummary:
    """The caller's AI token usage this calendar month (UTC): tokens and requests used,
    the monthly quota and what remains of it (null: no quota), and when it resets."""
    state: AIState = ctx.app.state.ai
    return await month_of(state, ctx.caller)
