"""Tools the model may call: a typed registry, and how one call is checked and run.

A tool is an async function on the server, `async def fn(ctx: ToolContext, args: Model)`,
whose arguments are a Pydantic model: the model's JSON schema is what the language
model sees, and what it sends back is validated against it before the function
runs. Who is asking comes from `ctx.caller` (the request's credentials, resolved by
ai/seams.py), never from the arguments: a tool that reads "my" data reads the
caller's, whatever ids the model writes.

    class NoArguments(BaseModel):
        model_config = ConfigDict(extra="forbid")

    @tool("get_usage", scopes=["read"])
    async def get_usage(ctx: ToolContext, args: NoArguments) -> UsageSummary:
        '''The caller's AI usage this month.'''  # the description the model reads

Each tool declares the scopes it needs (`scopes=`), as a route does: it runs with the
caller's data, so credentials that could not read that data through the API (an API key
with `write` but not `read`, say) cannot have the model read it either. A request naming
a tool its credentials lack a scope for is refused (403) before anything goes upstream,
and `GET /ai/tools` lists only the tools the caller may use. Without accounts there are no
scopes and every tool may be used.

Tools are registered per app (`registry(app)`), by the module that owns them, at
setup: `Module("...", install=provide(get_usage, ...))`. The AI package imports no
module's tools, so a module dropped from the project takes its tools with it.

Each call runs in a session of its own (committed when the tool returns, rolled
back when it raises), under AI_TOOL_TIMEOUT. Anything that goes wrong (unknown
tool, arguments that are not JSON or do not validate, the tool raising or timing
out) becomes the call's result as `{"error": "..."}`, for the model to read and
answer to; it never fails the request.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar, get_type_hints

import structlog
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.core.db import Database

from .service import Caller

log = structlog.get_logger(__name__)

A = TypeVar("A", bound=BaseModel)

# What OpenAI accepts as a function name.
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A scope as credentials carry it (space-separated in a token's `scope`).
SCOPE = re.compile(r"^[!#-\[\]-~]{1,100}$")
# The first line of an unexpected exception's text goes to the model, at most this long.
MAX_ERROR_CHARS = 300


class NoArguments(BaseModel):
    """For a tool that takes none: anything the model writes in is refused."""

    model_config = ConfigDict(extra="forbid")


class ToolError(Exception):
    """Raise from a tool to tell the model what went wrong, in these words."""


@dataclass(frozen=True)
class ToolContext:
    """What a tool runs with. The caller comes from the request, never from the model."""

    caller: Caller
    session: AsyncSession  # its own transaction: committed after the tool, rolled back on error
    app: FastAPI  # app.state: settings, database, module state
    request_id: str | None


ToolFunction = Callable[[ToolContext, A], Awaitable[Any]]


@dataclass(frozen=True)
class Tool(Generic[A]):
    name: str
    description: str
    arguments: type[A]
    function: ToolFunction[A] = field(repr=False)
    # What the caller's credentials must hold for a request to use it (e.g. {"read"}).
    scopes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ValueError(f"Tool name {self.name!r}: 1 to 64 letters, digits, _ or -.")
        for scope in self.scopes:
            if not SCOPE.match(scope):
                raise ValueError(f"Tool {self.name}: scope {scope!r} is not a scope name.")

    def missing_scopes(self, held: frozenset[str] | None) -> frozenset[str]:
        """What of the tool's scopes credentials holding `held` lack (None: no accounts,
        no scopes: nothing)."""
        return frozenset() if held is None else self.scopes - held

    @cached_property
    def parameters(self) -> dict[str, Any]:
        """The arguments' JSON schema, as the model sees it."""
        return self.arguments.model_json_schema()

    @cached_property
    def schema(self) -> dict[str, Any]:
        """The tool as the chat completions API takes it (`tools: [...]`)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def tool(
    name: str | None = None,
    *,
    scopes: Collection[str],
    description: str | None = None,
    arguments: type[A] | None = None,
) -> Callable[[ToolFunction[A]], Tool[A]]:
    """Make an async function a tool: its name, its docstring as the description, and
    the model of its second parameter (`args: SomeModel`) as the arguments.

    `scopes`: what the caller's credentials must hold for a request to use it, as for a
    route that does the same: `["read"]` to read the caller's data, `["write"]` (or both)
    to change it. `[]` only for a tool that touches no data of the caller's.
    """
    if isinstance(scopes, str):
        raise TypeError("scopes: a list of scope names, e.g. ['read'], not a string.")

    def wrap(function: ToolFunction[A]) -> Tool[A]:
        model = arguments
        if model is None:
            hints = get_type_hints(function)
            params = [p for p in hints if p != "return"]
            model = hints[params[1]] if len(params) >= 2 else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"Tool {function.__name__}: arguments must be a Pydantic model.")
        text = description or (function.__doc__ or "").strip()
        if not text:
            raise ValueError(f"Tool {function.__name__}: give it a description (or a docstring).")
        return Tool(
            name or function.__name__, " ".join(text.split()), model, function, frozenset(scopes)
        )

    return wrap


class ToolRegistry:
    """The tools of one app, by name."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool[Any]] = {}

    def add(self, *tools: Tool[Any]) -> None:
        for item in tools:
            if item.name in self._tools:
                raise ValueError(f"Two tools named {item.name!r}.")
            self._tools[item.name] = item

    def get(self, name: str) -> Tool[Any] | None:
        return self._tools.get(name)

    def usable(self, scopes: frozenset[str] | None) -> list[Tool[Any]]:
        """The tools credentials holding `scopes` may use (None: no accounts, every tool)."""
        return [t for t in self if not t.missing_scopes(scopes)]

    def __iter__(self) -> Iterator[Tool[Any]]:
        return iter(sorted(self._tools.values(), key=lambda t: t.name))

    def __len__(self) -> int:
        return len(self._tools)


def registry(app: FastAPI) -> ToolRegistry:
    """The app's tools (created empty at the first call)."""
    tools: ToolRegistry | None = getattr(app.state, "ai_tools", None)
    if tools is None:
        tools = app.state.ai_tools = ToolRegistry()
    return tools


def provide(*tools: Tool[Any]) -> Callable[[FastAPI], None]:
    """A `Module(install=...)` that registers these tools with the app."""

    def install(app: FastAPI) -> None:
        registry(app).add(*tools)

    return install


@dataclass
class ToolCall:
    """One call the model asked for, and what came of it."""

    id: str
    name: str
    arguments: str  # as the model wrote them (JSON text)
    result: str = ""  # what goes back to the model: the tool's JSON, or {"error": ...}
    error: str | None = None

    @property
    def message(self) -> dict[str, Any]:
        """The `tool` message that answers the call."""
        return {"role": "tool", "tool_call_id": self.id, "content": self.result}

    def fail(self, error: str) -> ToolCall:
        """The call's result is this error (what the model reads: `{"error": ...}`)."""
        self.error = error
        self.result = json.dumps({"error": error})
        return self


def _validation_text(exc: ValidationError) -> str:
    """The errors without the input values (the model wrote those)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        parts.append(f"{where}: {error['msg']}")
    return "Invalid arguments: " + "; ".join(parts)


def _as_text(value: Any) -> str:
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, separators=(",", ":"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:MAX_ERROR_CHARS]


async def run_call(
    call: ToolCall,
    tools: Sequence[Tool[Any]],
    *,
    app: FastAPI,
    caller: Caller,
    request_id: str | None,
    seconds: float,
    max_chars: int,
) -> ToolCall:
    """Check and run one call among the request's tools; fill in its result."""
    found = next((t for t in tools if t.name == call.name), None)
    if found is None:
        offered = ", ".join(t.name for t in tools)
        return _failed(call, f"No tool named {call.name!r}; the tools are: {offered}.")
    try:
        raw = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError as exc:
        return _failed(call, f"The arguments are not valid JSON: {exc}.")
    try:
        args = found.arguments.model_validate(raw)
    except ValidationError as exc:
        return _failed(call, _validation_text(exc))
    database: Database = app.state.database
    try:
        async with database.sessionmaker() as session:
            context = ToolContext(caller, session, app, request_id)
            async with asyncio.timeout(seconds):
                value = await found.function(context, args)
            await session.commit()
    except TimeoutError:
        log.warning("ai_tool_timeout", tool=call.name, seconds=seconds)
        return _failed(call, f"The tool did not finish within {seconds:g} s.")
    except ToolError as exc:
        return _failed(call, str(exc)[:MAX_ERROR_CHARS])
    except Exception as exc:
        log.exception("ai_tool_failed", tool=call.name)
        return _failed(call, _first_line(exc))
    text = _as_text(value)
    if len(text) > max_chars:
        text = text[:max_chars] + " [cut: the result was longer than AI_MAX_TOOL_RESULT_CHARS]"
    call.result = text
    return call


def _failed(call: ToolCall, error: str) -> ToolCall:
    return call.fail(error)
