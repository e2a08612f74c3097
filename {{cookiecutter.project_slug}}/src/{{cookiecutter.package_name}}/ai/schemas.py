"""Request and response bodies of the AI endpoints."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from . import structured

# The largest JSON schema a request may send (characters of its JSON text).
MAX_SCHEMA_CHARS = 50_000


Role = Literal["system", "developer", "user", "assistant"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str = Field(max_length=200_000)


class JsonSchemaSpec(BaseModel):
    """OpenAI's `json_schema`: the answer must be JSON valid against `schema`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = Field(default=None, max_length=2000)
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value)) > MAX_SCHEMA_CHARS:
            raise ValueError(f"at most {MAX_SCHEMA_CHARS} characters of JSON")
        problem = structured.schema_problem(value)
        if problem is not None:
            raise ValueError(f"not a valid JSON schema: {problem}")
        return value


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


class JsonObjectFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["json_object"]


ResponseFormat = Annotated[JsonSchemaFormat | JsonObjectFormat, Field(discriminator="type")]


class Options(BaseModel):
    """What a request may choose besides its messages (/chat and conversation messages)."""

    model_config = ConfigDict(extra="forbid")

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
    response_format: ResponseFormat | None = Field(
        default=None,
        description="OpenAI's structured output: the answer is checked on the way back "
        "(502 problem+json `ai-invalid-structured-output` when it does not conform)",
    )


class ChatRequest(Options):
    messages: list[Message] = Field(min_length=1, max_length=200)


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
    scopes: list[str] = Field(description="What the caller's credentials must hold to use it")


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


# --- conversations (ai/conversations.py, with accounts) ------------------------------------


def _aware(value: datetime) -> datetime:
    """SQLite gives stored times back without their zone: they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


Stamp = Annotated[datetime, AfterValidator(_aware)]


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(default="New conversation", min_length=1, max_length=200)
    system: str | None = Field(
        default=None,
        max_length=200_000,
        description="Instructions sent first with every message of the conversation",
    )


class ConversationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)


class ConversationOut(BaseModel):
    id: uuid.UUID
    title: str
    created_at: Stamp
    updated_at: Stamp = Field(description="When its last message was stored")


class ConversationPage(BaseModel):
    items: list[ConversationOut] = Field(description="Most recently active first")
    limit: int
    offset: int
    next_offset: int | None = Field(description="The offset of the next page; null: last page")


class StoredMessage(BaseModel):
    id: int
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    model: str | None
    input_tokens: int = Field(description="Prompt tokens charged for this answer")
    output_tokens: int = Field(description="Completion tokens charged for this answer")
    cut_off: bool = Field(description="The answer stopped early (client left or upstream broke)")
    created_at: Stamp


class ConversationDetail(ConversationOut):
    messages: list[StoredMessage] = Field(
        description="The newest `limit` messages (before `before`), oldest first"
    )
    next_before: int | None = Field(
        description="`before` for the page of older messages; null when there are none"
    )


class MessageCreate(Options):
    content: str = Field(min_length=1, max_length=200_000)
