"""Request and response bodies of the AI endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

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
    tools: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]] | None = Field(
        default=None,
        max_length=32,
        description="Names of registered tools (GET /api/v1/ai/tools) the model may call; "
        "none when omitted or empty",
    )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ToolCallRead(BaseModel):
    id: str
    name: str
    arguments: str = Field(description="As the model wrote them (JSON text)")
    result: str = Field(description="What went back to the model (JSON text)")
    error: str | None = Field(description="Why the call failed (also in `result`); null: it ran")


class ChatResponse(BaseModel):
    content: str
    model: str
    finish_reason: str | None
    usage: Usage = Field(description="What the request was charged (all its steps)")
    steps: int | None = Field(
        default=None, description="With `tools`: the upstream calls the request made"
    )
    tool_calls: list[ToolCallRead] | None = Field(
        default=None, description="With `tools`: the calls the model made, in order"
    )


class ToolRead(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any] = Field(description="The arguments' JSON schema")


class UsageSummary(BaseModel):
    period_start: datetime
    resets_at: datetime
    tokens: int
    requests: int
    quota: int | None = Field(description="Tokens allowed this period; null: unlimited")
    remaining: int | None
