"""AI settings: the SDK's own names for the client, `AI_` for this module's knobs."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal

from limits import RateLimitItem, parse
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# The longest AI_QUOTA_CACHE_SECONDS: how late this process may see a plan's new allowance.
MAX_QUOTA_CACHE_SECONDS = 60.0


class AISettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AI_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_by_name=True,
    )

    # Named as the openai SDK names them, so an existing environment just works.
    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")

    default_model: str = "gpt-4o-mini"
    # Models a caller may ask for (the default model is always allowed).
    allowed_models: Annotated[list[str], NoDecode] = ["gpt-4o-mini", "gpt-4o"]
    # Seconds to connect, and to wait for each read (the SDK's meaning of a float timeout).
    timeout: float = Field(default=60.0, gt=0)
    # Retries of a request that provably never reached the provider (the connection
    # could not be opened: refused, DNS failure, connect timeout). Nothing else is
    # retried: the provider may already be running (and billing) the request.
    max_retries: int = Field(default=2, ge=0)
    # The completion cap sent upstream when a request names none, and the most a request
    # may ask for; each call reserves its estimated prompt plus this from the quota.
    max_tokens: int = Field(default=4096, ge=1)
    # The name the cap is sent under: OpenAI's reasoning models (o-series) accept only
    # "max_completion_tokens"; most OpenAI-compatible servers read "max_tokens".
    max_tokens_parameter: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    # Input caps per request (413 problem+json above them).
    max_messages: int = Field(default=100, ge=1)
    max_input_chars: int = Field(default=100_000, ge=1)
    # Conversations: the most tokens (estimated) of stored history sent upstream with a new
    # message; the newest messages that fit are sent (the system prompt and the new
    # message always).
    history_token_budget: int = Field(default=8000, ge=1)
    # Streams a caller may have open at once on one instance (429 above it); 0: no cap.
    max_concurrent_streams: int = Field(default=4, ge=0)
    # Tokens per caller per calendar month (UTC); 0 turns the quota off.
    monthly_token_quota: int = Field(default=1_000_000, ge=0)
    # Seconds a caller's monthly total is trusted from memory before it is read again
    # (this instance's own usage is counted at once; other instances' within this time).
    quota_cache_seconds: float = Field(default=1.0, ge=0, le=MAX_QUOTA_CACHE_SECONDS)
    # Requests per caller (the user with auth, else the client address); empty: no limit.
    rate_limit: str = "60/minute"
    # "fast": a lean aiohttp path for chat completions that keeps the SDK's types, errors
    # and retry rules; "sdk": every call through the SDK's own client (aiohttp transport).
    transport: Literal["fast", "sdk"] = "fast"
    # Tool calling (ai/tools.py): rounds of tool calls one request may run; after the last,
    # the model is asked once more with tool_choice "none" for its final answer.
    max_tool_steps: int = Field(default=5, ge=1)
    # Seconds one tool call may run; then its result is an error for the model to read.
    tool_timeout: float = Field(default=10.0, gt=0)
    # Characters of one tool's result sent back to the model (cut beyond).
    max_tool_result_chars: int = Field(default=20_000, ge=100)

    @field_validator("openai_api_key", "openai_base_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("allowed_models", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("rate_limit")
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        if value.strip():
            parse(value)  # raises ValueError on nonsense
        return value.strip()

    @property
    def base_url(self) -> str:
        return self.openai_base_url or DEFAULT_BASE_URL

    @cached_property
    def models(self) -> frozenset[str]:
        return frozenset((self.default_model, *self.allowed_models))

    @cached_property
    def rate_limit_item(self) -> RateLimitItem | None:
        return parse(self.rate_limit) if self.rate_limit else None
