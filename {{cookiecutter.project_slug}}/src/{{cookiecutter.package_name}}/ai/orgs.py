"""AI in an organization: chat billed to its pool, and the pool's usage by member.

The organization's monthly allowance (its plan's, else AI_MONTHLY_TOKEN_QUOTA) is
shared by its members: the quota subject (`ai_usage_totals.subject`) is the
organization's id, and each ledger row keeps the member (`user_id`) and the pool
(`subject`). `POST /api/v1/ai/chat` bills the caller's personal organization (or an
organization's API key's); these routes bill the organization in the path.
Removed from projects without the orgs module (see the hook's table).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import Select, func, select

from {{ cookiecutter.package_name }}.auth.models import User
from {{ cookiecutter.package_name }}.core.contract import problems
from {{ cookiecutter.package_name }}.core.db import SessionDep
from {{ cookiecutter.package_name }}.core.plugin import Module
from {{ cookiecutter.package_name }}.orgs.dependencies import OrgMember
from {{ cookiecutter.package_name }}.orgs.models import Role

from .models import AIUsage
from .router import PROBLEMS, answer, summary
from .schemas import ChatRequest, ChatResponse, UsageSummary
from .seams import OrgCallerDep, pool_caller
from .service import at_midnight, next_period, period_start

router = APIRouter(prefix="/api/v1/orgs/{org_id}/ai", tags=["ai"])


class MemberUsage(BaseModel):
    user_id: uuid.UUID
    email: str | None = Field(description="null: the account was deleted")
    tokens: int
    requests: int


class OrgUsageSummary(UsageSummary):
    mine: MemberUsage = Field(description="The caller's own share of the month")
    members: list[MemberUsage] | None = Field(
        description="Every member with usage this month, most tokens first; admins and owners "
        "only (null for members)"
    )


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "The completion, or with `stream: true` its deltas as events",
        },
        **PROBLEMS,
    },
)
async def org_chat(chat: ChatRequest, request: Request, caller: OrgCallerDep) -> Response:
    """`POST /api/v1/ai/chat`, billed to this organization's pool (any member)."""
    return await answer(chat, request, caller)


def _by_member(org_id: uuid.UUID, start: datetime, end: datetime) -> Select[*tuple[Any, ...]]:
    """The pool's ledger rows of the month, summed per member, in one query."""
    tokens = func.sum(AIUsage.total_tokens)
    return (
        select(AIUsage.user_id, User.email, tokens.label("tokens"), func.count().label("requests"))
        .outerjoin(User, User.id == AIUsage.user_id)
        .where(
            AIUsage.subject == org_id,
            AIUsage.created_at >= start,
            AIUsage.created_at < end,
            AIUsage.user_id.is_not(None),
        )
        .group_by(AIUsage.user_id, User.email)
        .order_by(tokens.desc(), AIUsage.user_id)
    )


@router.get("/usage", responses=problems({429: "AI_RATE_LIMIT exceeded (with Retry-After)"}))
async def org_usage(request: Request, access: OrgMember, session: SessionDep) -> OrgUsageSummary:
    """The organization's tokens and requests this month (UTC), its allowance, and by member.

    Every member sees the total and their own share; admins and owners also every
    member's (user id, email, tokens, requests).
    """
    caller = await pool_caller(request, access.user.id, access.org_id)
    total = await summary(request, caller)
    start = at_midnight(period_start(datetime.now(UTC)))
    query = _by_member(access.org_id, start, at_midnight(next_period(start.date())))
    admin = access.can(Role.ADMIN)
    if not admin:
        query = query.where(AIUsage.user_id == access.user.id)
    members = [
        MemberUsage(user_id=row.user_id, email=row.email, tokens=row.tokens, requests=row.requests)
        for row in await session.execute(query)
    ]
    mine = next(
        (m for m in members if m.user_id == access.user.id),
        MemberUsage(user_id=access.user.id, email=access.user.email, tokens=0, requests=0),
    )
    return OrgUsageSummary(**total.model_dump(), mine=mine, members=members if admin else None)


module = Module("ai-orgs", routers=(router,))
