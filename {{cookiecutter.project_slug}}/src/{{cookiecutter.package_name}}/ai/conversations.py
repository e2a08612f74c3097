"""Conversations: one caller's stored threads, and chat that remembers them.

A conversation belongs to the caller that made it: the signed-in user, in the
allowance their calls bill (`Caller.subject`: the pool `/ai/chat` bills, see
ai/seams.py, else the user's own). Every query filters on both, so another user's
conversation, or the same user's billed to another pool, answers 404.

`POST /conversations/{id}/messages` is `/chat` (the same rate limit, quota
reservation, metering and streaming, `router.answer`) with the stored history in
front of the new message, trimmed to AI_HISTORY_TOKEN_BUDGET; the answer and what
it was charged are stored with it. Like `/chat` it holds no pooled connection while
the model answers: the history is read before the call and the turn stored after it,
each in a batch shared with the requests arriving at the same time (`Conversations`).

Removed from projects without the auth module (no caller to own a conversation;
see docs/ai.md and the hook's table).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import structlog
from fastapi import APIRouter, FastAPI, Query, Request, Response
from sqlalchemy import ColumnElement, Table, and_, bindparam, delete, insert, select, text, update

from {{ cookiecutter.package_name }}.core.batch import Batcher
from {{ cookiecutter.package_name }}.core.contract import problems
from {{ cookiecutter.package_name }}.core.db import Database, SessionDep
from {{ cookiecutter.package_name }}.core.errors import ProblemError
from {{ cookiecutter.package_name }}.core.plugin import Module

from . import tokens
from .calls import Answered
from .dependencies import ai_state
from .models import AIConversation, AIMessage
from .router import PROBLEMS, answer
from .schemas import (
    ChatRequest,
    ChatResponse,
    ConversationCreate,
    ConversationDetail,
    ConversationOut,
    ConversationPage,
    ConversationUpdate,
    Message,
    MessageCreate,
    Options,
    Role,
    StoredMessage,
)
from .seams import CallerDep
from .service import Caller

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1/ai", tags=["ai"])

CONVERSATIONS = cast(Table, AIConversation.__table__)
MESSAGES = cast(Table, AIMessage.__table__)

NOT_FOUND = problems({404: "No such conversation of the caller's"})


def not_found() -> ProblemError:
    return ProblemError(404, "No such conversation.")


def owned(caller: Caller) -> ColumnElement[bool]:
    """The caller's conversations: their user, in the allowance they bill."""
    return and_(AIConversation.subject == caller.subject, AIConversation.user_id == caller.user_id)


def _out(conversation: AIConversation) -> ConversationOut:
    return ConversationOut(
        id=conversation.id,
        title=conversation.title,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
    )


async def _find(session: Any, caller: Caller, conversation_id: uuid.UUID) -> AIConversation:
    conversation: AIConversation | None = await session.scalar(
        select(AIConversation).where(AIConversation.id == conversation_id, owned(caller))
    )
    if conversation is None:
        raise not_found()
    return conversation


@router.post("/conversations", status_code=201, responses=NOT_FOUND)
async def create_conversation(
    body: ConversationCreate, caller: CallerDep, session: SessionDep
) -> ConversationOut:
    """Start a conversation (optionally with a system prompt sent first with every message)."""
    now = datetime.now(UTC)
    conversation = AIConversation(
        id=uuid.uuid4(),
        user_id=caller.user_id,
        subject=caller.subject,
        title=body.title,
        created_at=now,
        updated_at=now,
    )
    session.add(conversation)
    if body.system is not None:
        await session.flush()
        session.add(
            AIMessage(
                conversation_id=conversation.id,
                role="system",
                content=body.system,
                input_tokens=0,
                output_tokens=0,
                cut_off=False,
                created_at=now,
            )
        )
    await session.flush()
    return _out(conversation)


@router.get("/conversations")
async def list_conversations(
    caller: CallerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> ConversationPage:
    """The caller's conversations, most recently active first (`limit` + `offset` paging)."""
    rows = (
        await session.scalars(
            select(AIConversation)
            .where(owned(caller))
            .order_by(AIConversation.updated_at.desc(), AIConversation.id.desc())
            .limit(limit + 1)
            .offset(offset)
        )
    ).all()
    more = len(rows) > limit
    return ConversationPage(
        items=[_out(c) for c in rows[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if more else None,
    )


@router.get("/conversations/{conversation_id}", responses=NOT_FOUND)
async def get_conversation(
    conversation_id: uuid.UUID,
    caller: CallerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, description="A message id (`next_before`)")] = None,
) -> ConversationDetail:
    """A conversation with its newest `limit` messages, oldest first (two queries).

    Older messages page by `before=<next_before>`, which stays right while new messages
    arrive (the ids only grow).
    """
    conversation = await _find(session, caller, conversation_id)
    query = select(AIMessage).where(AIMessage.conversation_id == conversation.id)
    if before is not None:
        query = query.where(AIMessage.id < before)
    newest = (await session.scalars(query.order_by(AIMessage.id.desc()).limit(limit + 1))).all()
    page = list(reversed(newest[:limit]))
    return ConversationDetail(
        **_out(conversation).model_dump(),
        messages=[StoredMessage.model_validate(m, from_attributes=True) for m in page],
        next_before=page[0].id if len(newest) > limit else None,
    )


@router.patch("/conversations/{conversation_id}", responses=NOT_FOUND)
async def rename_conversation(
    conversation_id: uuid.UUID, body: ConversationUpdate, caller: CallerDep, session: SessionDep
) -> ConversationOut:
    """Change a conversation's title."""
    conversation = await _find(session, caller, conversation_id)
    conversation.title = body.title
    await session.flush()
    return _out(conversation)


@router.delete("/conversations/{conversation_id}", status_code=204, responses=NOT_FOUND)
async def delete_conversation(
    conversation_id: uuid.UUID, caller: CallerDep, session: SessionDep
) -> Response:
    """Delete a conversation and its messages (the usage ledger keeps what they cost)."""
    result = await session.execute(
        delete(AIConversation).where(AIConversation.id == conversation_id, owned(caller))
    )
    if not getattr(result, "rowcount", 0):
        raise not_found()
    return Response(status_code=204)


# --- chat in a conversation ----------------------------------------------------------------


def trim(
    system: Sequence[Message],
    history: Sequence[Message],
    new: Message,
    *,
    budget: int,
    max_messages: int,
    max_chars: int,
) -> list[Message]:
    """The messages sent upstream: the system prompt, the newest history that fits, `new`.

    The system messages and the new message are always sent; before the new message,
    as many of the newest history messages as keep the estimated prompt
    (`tokens.prompt_tokens`) within `budget`, and the request within AI_MAX_MESSAGES
    and AI_MAX_INPUT_CHARS. The oldest go first, and nothing older than a message
    that did not fit is sent.
    """
    used = tokens.prompt_tokens([*system, new])
    count = len(system) + 1
    chars = sum(len(m.content) for m in system) + len(new.content)
    kept: list[Message] = []
    for message in reversed(history):
        cost = tokens.PER_MESSAGE + tokens.text_tokens(message.content)
        if (
            used + cost > budget
            or count + 1 > max_messages
            or chars + len(message.content) > max_chars
        ):
            break
        used, count, chars = used + cost, count + 1, chars + len(message.content)
        kept.append(message)
    kept.reverse()
    return [*system, *kept, new]


# --- the hot path: histories read and turns stored in batches ------------------------------
#
# Every message a caller sends reads its conversation's history before the model is
# asked and stores the turn after it. Each is one small round trip, which costs the
# app more CPU (SQLAlchemy's work per statement, the socket) than the rows do, so
# both go through a `Batcher` (core/batch.py): the requests that arrive while one
# read or store runs share the next one, a single statement on PostgreSQL
# (docs/ai.md, the conversation route's benchmark). Neither holds a pooled connection
# while the model answers.


@dataclass(frozen=True)
class Wanted:
    """A history to read: the caller's conversation, and how many of its newest messages."""

    conversation_id: uuid.UUID
    subject: uuid.UUID
    user_id: uuid.UUID | None
    newest: int


# (the system prompt, if any; the newest text messages, oldest first)
History = tuple[list[Message], list[Message]]


@dataclass(frozen=True)
class Turn:
    """What one message stores: the caller's text, and the rows of the answer after it."""

    conversation_id: uuid.UUID
    rows: list[dict[str, Any]]


# Only text goes upstream from the history (tool steps are not replayed), and the system
# prompt, which `create_conversation` stores as a conversation's first message.
TEXT_ROLES = ("user", "assistant")

# PostgreSQL: every history of a batch in one statement. The conversation must be the
# caller's (else no row: 404); then its first message if that is the system prompt, and
# its newest text messages, each read from the (conversation_id, id) index however long
# the conversation is.
READ_HISTORIES = text(
    """
    SELECT q.n, m.role, m.content
    FROM unnest(CAST(:conversation_id AS uuid[]), CAST(:subject AS uuid[]),
                CAST(:user_id AS uuid[]), CAST(:newest AS int[]))
         WITH ORDINALITY AS q (conversation_id, subject, user_id, newest, n)
    JOIN ai_conversations AS c
      ON c.id = q.conversation_id AND c.subject = q.subject
     AND c.user_id IS NOT DISTINCT FROM q.user_id
    LEFT JOIN LATERAL (
        SELECT f.id, f.role, f.content FROM (
            SELECT id, role, content FROM ai_messages
            WHERE conversation_id = c.id ORDER BY id LIMIT 1
        ) AS f WHERE f.role = 'system'
        UNION ALL
        (SELECT id, role, content FROM ai_messages
         WHERE conversation_id = c.id AND role IN ('user', 'assistant')
           AND content IS NOT NULL AND content <> ''
         ORDER BY id DESC LIMIT q.newest)
    ) AS m ON true
    ORDER BY q.n, m.id
    """
)

# PostgreSQL: every turn of a batch in one autocommit statement: the conversations
# touched, and their messages inserted, in order, only where the conversation still
# exists. Each column is one array, so the text never changes. It does not wait for the
# WAL flush (`synchronous_commit` off for this one statement, as the ledger's
# reservations): visible at once; only a crash of the database server within a moment
# of it could lose a turn (the ledger row that bills it is durable).
STORE_TURNS = text(
    """
    WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true) AS off),
    touched AS (
        UPDATE ai_conversations AS c SET updated_at = t.at
        FROM unnest(CAST(:touch_id AS uuid[]), CAST(:touch_at AS timestamptz[])) AS t (id, at)
        WHERE c.id = t.id AND EXISTS (SELECT off FROM relaxed)
        RETURNING c.id
    )
    INSERT INTO ai_messages (conversation_id, role, content, model, input_tokens,
                             output_tokens, cut_off, created_at, tool_calls, tool_call_id)
    SELECT m.conversation_id, m.role, m.content, m.model, m.input_tokens, m.output_tokens,
           m.cut_off, m.created_at, m.tool_calls, m.tool_call_id
    FROM unnest(
        CAST(:conversation_id AS uuid[]), CAST(:role AS varchar[]), CAST(:content AS text[]),
        CAST(:model AS varchar[]), CAST(:input_tokens AS int[]),
        CAST(:output_tokens AS int[]), CAST(:cut_off AS boolean[]),
        CAST(:created_at AS timestamptz[]), CAST(CAST(:tool_calls AS text[]) AS json[]),
        CAST(:tool_call_id AS varchar[])
    ) WITH ORDINALITY AS m (conversation_id, role, content, model, input_tokens,
                            output_tokens, cut_off, created_at, tool_calls, tool_call_id, n)
    WHERE m.conversation_id IN (SELECT id FROM touched)
    ORDER BY m.n
    RETURNING conversation_id
    """
)
COLUMNS = (
    "conversation_id",
    "role",
    "content",
    "model",
    "input_tokens",
    "output_tokens",
    "cut_off",
    "created_at",
    "tool_calls",
    "tool_call_id",
)

# Other databases (SQLite): the same, statement by statement on one connection. Built
# once: a statement built per request costs more CPU than running it.
OWNED = select(CONVERSATIONS.c.id).where(
    CONVERSATIONS.c.id == bindparam("conversation_id"),
    CONVERSATIONS.c.subject == bindparam("subject"),
    CONVERSATIONS.c.user_id.is_not_distinct_from(bindparam("user_id")),
)
FIRST = (
    select(MESSAGES.c.role, MESSAGES.c.content)
    .where(MESSAGES.c.conversation_id == bindparam("conversation_id"))
    .order_by(MESSAGES.c.id)
    .limit(1)
)
NEWEST = (
    select(MESSAGES.c.role, MESSAGES.c.content)
    .where(
        MESSAGES.c.conversation_id == bindparam("conversation_id"),
        MESSAGES.c.role.in_(TEXT_ROLES),
        MESSAGES.c.content.is_not(None),
        MESSAGES.c.content != "",
    )
    .order_by(MESSAGES.c.id.desc())
    .limit(bindparam("newest"))
)
TOUCH = (
    update(CONVERSATIONS)
    .where(CONVERSATIONS.c.id == bindparam("conversation_id"))
    .values(updated_at=bindparam("touched_at"))
)


def _message(role: str, content: str) -> Message:
    # Read back from our own rows, which were validated on the way in.
    return Message.model_construct(role=cast(Role, role), content=content)


class Conversations:
    """The conversation routes' state in one app: the batched reads and writes."""

    def __init__(self, database: Database) -> None:
        self.database = database
        postgres = database.engine.dialect.name == "postgresql"
        self.read: Batcher[Wanted, History | None] = Batcher(
            self._read_postgres if postgres else self._read_each, name="ai-history"
        )
        self.store: Batcher[Turn, bool] = Batcher(
            self._store_postgres if postgres else self._store_each, name="ai-turns"
        )

    async def aclose(self) -> None:
        await self.read.aclose()
        await self.store.aclose()

    async def _read_postgres(self, batch: Sequence[Wanted]) -> list[History | None]:
        params = {
            "conversation_id": [w.conversation_id for w in batch],
            "subject": [w.subject for w in batch],
            "user_id": [w.user_id for w in batch],
            "newest": [w.newest for w in batch],
        }
        async with self.database.read_engine.connect() as conn:
            rows = (await conn.execute(READ_HISTORIES, params)).all()
        found: list[History | None] = [None] * len(batch)
        for n, role, content in rows:
            history = found[n - 1]
            if history is None:
                history = found[n - 1] = ([], [])
            if role == "system":
                history[0].append(_message(role, content))
            elif role is not None:  # None: a conversation without messages
                history[1].append(_message(role, content))
        return found

    async def _read_each(self, batch: Sequence[Wanted]) -> list[History | None]:
        found: list[History | None] = []
        async with self.database.read_engine.connect() as conn:
            for w in batch:
                ids = {"conversation_id": w.conversation_id}
                owner = {**ids, "subject": w.subject, "user_id": w.user_id}
                if (await conn.execute(OWNED, owner)).first() is None:
                    found.append(None)
                    continue
                first = (await conn.execute(FIRST, ids)).first()
                prompt = first is not None and first.role == "system"
                system = [_message("system", first.content)] if first and prompt else []
                newest = (await conn.execute(NEWEST, {**ids, "newest": w.newest})).all()
                found.append((system, [_message(r.role, r.content) for r in reversed(newest)]))
        return found

    async def _store_postgres(self, batch: Sequence[Turn]) -> list[bool]:
        rows = [{"conversation_id": t.conversation_id, **row} for t in batch for row in t.rows]
        params: dict[str, Any] = {column: [row.get(column) for row in rows] for column in COLUMNS}
        params["tool_calls"] = [
            None if calls is None else json.dumps(calls) for calls in params["tool_calls"]
        ]
        touched = {t.conversation_id: t.rows[-1]["created_at"] for t in batch}
        params.update(touch_id=list(touched), touch_at=list(touched.values()))
        async with self.database.read_engine.connect() as conn:
            stored = set((await conn.execute(STORE_TURNS, params)).scalars())
        return [t.conversation_id in stored for t in batch]

    async def _store_each(self, batch: Sequence[Turn]) -> list[bool]:
        stored: list[bool] = []
        async with self.database.engine.begin() as conn:
            for t in batch:
                at = t.rows[-1]["created_at"]
                touch = {"conversation_id": t.conversation_id, "touched_at": at}
                if not (await conn.execute(TOUCH, touch)).rowcount:
                    stored.append(False)
                    continue
                values = {"conversation_id": t.conversation_id}
                rows = [{**dict.fromkeys(COLUMNS), **row, **values} for row in t.rows]
                await conn.execute(insert(MESSAGES), rows)
                stored.append(True)
        return stored


def conversations_of(request: Request) -> Conversations:
    state: Conversations = request.app.state.ai_conversations
    return state


async def read_history(
    conversations: Conversations, caller: Caller, conversation_id: uuid.UUID, newest: int
) -> History:
    """(system prompt, the newest `newest` text messages oldest first); 404 if not the caller's."""
    history = await conversations.read(
        Wanted(conversation_id, caller.subject, caller.user_id, newest)
    )
    if history is None:
        raise not_found()
    return history


async def store_turn(
    conversations: Conversations,
    conversation_id: uuid.UUID,
    asked: str,
    asked_at: datetime,
    answered: Answered,
) -> None:
    """Store the caller's message and the answer (with what it was charged), in one commit.

    With tools, the rounds before the answer go between them (the assistant's calls,
    then each result as a `tool` message); the answer carries the tokens of all rounds.

    A conversation deleted while the model answered keeps nothing (the ledger still
    has the call).
    """
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": asked,
            "input_tokens": 0,
            "output_tokens": 0,
            "cut_off": False,
            "created_at": asked_at,
        },
        *(
            {
                "role": step["role"],
                "content": step.get("content"),
                "model": answered.model if step["role"] == "assistant" else None,
                "input_tokens": 0,
                "output_tokens": 0,
                "cut_off": False,
                "created_at": now,
                "tool_calls": step.get("tool_calls"),
                "tool_call_id": step.get("tool_call_id"),
            }
            for step in answered.steps
        ),
        {
            "role": "assistant",
            "content": answered.content,
            "model": answered.model,
            "input_tokens": answered.prompt_tokens,
            "output_tokens": answered.completion_tokens,
            "cut_off": answered.cut_off,
            "created_at": now,
        },
    ]
    if not await conversations.store(Turn(conversation_id, rows)):
        log.info("ai_conversation_gone", conversation_id=str(conversation_id))


@router.post(
    "/conversations/{conversation_id}/messages",
    response_model=ChatResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "The answer (stored with the message), or with `stream: true` its "
            "deltas as events",
        },
        **PROBLEMS,
        **NOT_FOUND,
    },
)
async def send_message(
    conversation_id: uuid.UUID, body: MessageCreate, request: Request, caller: CallerDep
) -> Response:
    """`/chat` with the conversation's history; the message and the answer are stored."""
    asked_at = datetime.now(UTC)
    settings = ai_state(request).settings
    conversations = conversations_of(request)
    system, history = await read_history(
        conversations, caller, conversation_id, newest=settings.max_messages
    )
    new = Message(role="user", content=body.content)
    messages = trim(
        system,
        history,
        new,
        budget=settings.history_token_budget,
        max_messages=settings.max_messages,
        max_chars=settings.max_input_chars,
    )
    options = {name: getattr(body, name) for name in Options.model_fields}
    chat = ChatRequest.model_construct(messages=messages, **options)

    async def store(answered: Answered) -> None:
        await store_turn(conversations, conversation_id, body.content, asked_at, answered)

    return await answer(chat, request, caller, on_answer=store)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    conversations = Conversations(app.state.database)
    app.state.ai_conversations = conversations
    try:
        yield
    finally:
        await conversations.aclose()  # what was handed over is stored before the pool closes


module = Module("ai-conversations", routers=(router,), lifespan=lifespan)
