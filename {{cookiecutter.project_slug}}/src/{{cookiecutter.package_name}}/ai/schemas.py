"""Request and response bodies of the AI endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str = Field(max_length=200_000)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1, max_length=200)
    model: str | None = Field(default=None, max_length=100)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)
    stream: bool = False


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResponse(BaseModel):
    content: str
    model: str
    finish_reason: str | None
    usage: Usage


class OverageBilling(BaseModel):
    """Tokens beyond the allowance this period, on a plan that bills them (metered)."""

    tokens: int = Field(description="Tokens used beyond the allowance this period")
    billed: int = Field(description="Of those, reported to the billing provider (invoiced)")
    unbilled: int = Field(description="Of those, not reported yet: billed by the next report")


class UsageSummary(BaseModel):
    period_start: datetime
    resets_at: datetime
    tokens: int
    requests: int
    quota: int | None = Field(description="Tokens allowed this period; null: unlimited")
    remaining: int | None
    overage: OverageBilling | None = Field(
        default=None,
        description="With a plan that bills usage beyond its allowance: what has been and "
        "will be billed; null otherwise (usage beyond the allowance is refused)",
    )
