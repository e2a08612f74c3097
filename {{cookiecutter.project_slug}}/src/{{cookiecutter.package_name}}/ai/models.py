"""The usage ledger (one row per upstream request) and per-month totals for quotas.

`user_id` is a plain indexed UUID without a foreign key: the tables and their
migration are the same whether or not the auth module is part of the project.
`subject` is whose monthly totals a row was charged to (`ai_usage_totals.subject`):
the caller's own, or a pool several callers share.

Conversations (`ai_conversations`, `ai_messages`) belong to one caller: the user
(`user_id`) in the allowance their calls bill (`subject`: a shared pool's id, or the
user's own). Same rule: no foreign key to `users`.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from {{ cookiecutter.package_name }}.core.db import Base

# Totals of callers without a user (auth off) are kept under this id.
ANONYMOUS = uuid.UUID(int=0)


class AIUsage(Base):
    __tablename__ = "ai_usage"
    # A subject's rows of a month (a pool's usage per member) without a scan.
    __table_args__ = (Index("ix_ai_usage_subject_created_at", "subject", "created_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), index=True)
    # Null on rows written before migration 0014: those were charged to user_id (or ANONYMOUS).
    subject: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    model: Mapped[str] = mapped_column(String(100))
    prompt_tokens: Mapped[int] = mapped_column(Integer())
    completion_tokens: Mapped[int] = mapped_column(Integer())
    total_tokens: Mapped[int] = mapped_column(Integer())
    latency_ms: Mapped[int] = mapped_column(Integer())
    # ok | cancelled | timeout | rate_limited | upstream_error
    outcome: Mapped[str] = mapped_column(String(20))
    streamed: Mapped[bool] = mapped_column(Boolean())
    request_id: Mapped[str | None] = mapped_column(String(128))


class AIUsageTotal(Base):
    """Tokens used and reserved per caller and month.

    The quota check is one primary-key lookup. `reserved` holds what the calls in
    flight may still use (taken atomically before each call, given back when it is
    charged); `last_grant` is what the last reservation of this row got, so that the
    statement that takes it can read it back (see ai/service.py); `reserved_at` is
    when, so that what a killed process left reserved can be let go.
    """

    __tablename__ = "ai_usage_totals"

    subject: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    period: Mapped[date] = mapped_column(Date(), primary_key=True)
    tokens: Mapped[int] = mapped_column(BigInteger())
    requests: Mapped[int] = mapped_column(Integer())
    reserved: Mapped[int] = mapped_column(BigInteger(), server_default=text("0"))
    last_grant: Mapped[int] = mapped_column(BigInteger(), server_default=text("0"))
    reserved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AIConversation(Base):
    """A thread of messages of one caller (user and subject; the routes need accounts)."""

    __tablename__ = "ai_conversations"
    # The caller's conversations, most recently active first, without a sort.
    __table_args__ = (Index("ix_ai_conversations_owner", "subject", "user_id", "updated_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    subject: Mapped[uuid.UUID] = mapped_column(Uuid())
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


MESSAGE_ROLES = ("system", "user", "assistant", "tool")


class AIMessage(Base):
    """One message of a conversation, in order of `id`.

    `content` is null for an assistant message that only calls tools; `tool_calls`
    holds those calls (OpenAI's shape), `tool_call_id` what a `tool` message answers.
    `cut_off`: the answer stopped before the model finished (the client left, or the
    upstream broke mid-stream); `content` is what had been relayed.
    """

    __tablename__ = "ai_messages"
    __table_args__ = (
        Index("ix_ai_messages_conversation_id", "conversation_id", "id"),
        CheckConstraint(
            "role IN ('system', 'user', 'assistant', 'tool')",
            name="role",
        ),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("ai_conversations.id", ondelete="CASCADE")
    )
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str | None] = mapped_column(Text())
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON())
    tool_call_id: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(100))
    input_tokens: Mapped[int] = mapped_column(Integer(), server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(Integer(), server_default=text("0"))
    cut_off: Mapped[bool] = mapped_column(Boolean(), server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
