"""Conversations: one caller's stored threads, and chat that remembers them.

A conversation belongs to the caller that made it: the signed-in user, in the
allowance their calls bill (`Caller.subject`: the pool `/ai/chat` bills, see
ai/seams.py, else the user's own). Every query filters on both, so another user's
conversation, or the same user's billed to another pool, answers 404.

`POST /conversations/{id}/messages` is `/chat` (the same rate limit, quota
reservation, metering and streaming, `router.answer`) with the stored history in
front of the new message, trimmed to AI_HISTORY_TOKEN_BUDGET; the answer and what
it was charged are stored with it. Like `/chat` it holds no pooled connection while
the model answers: one autocommit read before the call, one short write after it.

Removed from projects without the auth module (no caller to own a conversation;
see docs/ai.md and the hook's table).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import structlog
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import ColumnElement, Table, and_, delete, insert, or_, select, text, update

from {{ cookiecutter.package_name }}.core.contract import problems
from {{ cookiecutter.package_name }}.core.db import Database, SessionDep, get_database
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
    StoredMessage,
)
from .seams import CallerDep
from .service import Caller

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1/ai", tags=["ai"])

CONVERSATIONS = cast(Table, AIConversation.__table__)
MESSAGES = cast(Table, AIMessage.__table__)

# PostgreSQL stores a turn in one autocommit statement (one round trip, no BEGIN and
# COMMIT on a pooled connection): the conversation touched, and the messages inserted
# only if it still exists. Each column is one array, so the text never changes. It does
# not wait for the WAL flush (`synchronous_commit` off for this one statement, as the
# ledger's reservations): visible at once; only a crash of the database server within
# a moment of it could lose the turn (the ledger row that bills it is durable).
STORE_TURN = text(
    """
    WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true) AS off),
    touched AS (
        UPDATE ai_conversations SET updated_at = :now
        WHERE id = :conversation_id AND EXISTS (SELECT off FROM relaxed)
        RETURNING id
    )
    INSERT INTO ai_messages (conversation_id, role, content, model, input_tokens,
                             output_tokens, cut_off, created_at)
    SELECT touched.id, m.role, m.content, m.model, m.input_tokens, m.output_tokens,
           m.cut_off, m.created_at
    FROM touched, unnest(
        CAST(:role AS varchar[]), CAST(:content AS text[]), CAST(:model AS varchar[]),
        CAST(:input_tokens AS int[]), CAST(:output_tokens AS int[]),
        CAST(:cut_off AS boolean[]), CAST(:created_at AS timestamptz[])
    ) WITH ORDINALITY AS m (role, content, model, input_tokens, output_tokens, cut_off,
                            created_at, n)
    ORDER BY m.n
    RETURNING id
    """
)

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
    conversation_id: uuid.UUID, caller: CallerDep, session: SessionDep
) -> ConversationDetail:
    """A conversation with all its messages, oldest first (two queries)."""
    conversation = await _find(session, caller, conversation_id)
    messages = (
        await session.scalars(
            select(AIMessage)
            .where(AIMessage.conversation_id == conversation.id)
            .order_by(AIMessage.id)
        )
    ).all()
    return ConversationDetail(
        **_out(conversation).model_dump(),
        messages=[StoredMessage.model_validate(m, from_attributes=True) for m in messages],
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


async def read_history(
    database: Database, caller: Caller, conversation_id: uuid.UUID, newest: int
) -> tuple[list[Message], list[Message]]:
    """(system messages, the newest `newest` others oldest first); 404 if not the caller's.

    One autocommit read (one round trip), its connection given back before the model
    is asked: the conversation, if the caller's, joined with its system prompt and
    its newest text messages. Only text goes upstream here (tool steps are not replayed).
    """
    recent = (
        select(MESSAGES.c.id)
        .where(
            MESSAGES.c.conversation_id == conversation_id,
            MESSAGES.c.role.in_(("user", "assistant")),
            MESSAGES.c.content.is_not(None),
            MESSAGES.c.content != "",
        )
        .order_by(MESSAGES.c.id.desc())
        .limit(newest)
    )
    wanted = or_(MESSAGES.c.role == "system", MESSAGES.c.id.in_(recent.scalar_subquery()))
    query = (
        select(MESSAGES.c.role, MESSAGES.c.content)
        .select_from(
            CONVERSATIONS.outerjoin(
                MESSAGES, and_(MESSAGES.c.conversation_id == CONVERSATIONS.c.id, wanted)
            )
        )
        .where(
            CONVERSATIONS.c.id == conversation_id,
            CONVERSATIONS.c.subject == caller.subject,
            CONVERSATIONS.c.user_id == caller.user_id,
        )
        .order_by(MESSAGES.c.id)
    )
    async with database.read_engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    if not rows:
        raise not_found()
    system = [Message(role="system", content=r.content) for r in rows if r.role == "system"]
    history = [
        Message(role=r.role, content=r.content) for r in rows if r.role in ("user", "assistant")
    ]
    return system, history


async def store_turn(
    database: Database,
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
            "model": None,
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
    if database.engine.dialect.name == "postgresql" and not answered.steps:
        params: dict[str, Any] = {column: [row[column] for row in rows] for column in rows[0]}
        params.update(now=now, conversation_id=conversation_id)
        async with database.read_engine.connect() as conn:
            stored = bool((await conn.execute(STORE_TURN, params)).all())
    else:
        touch = update(CONVERSATIONS).where(CONVERSATIONS.c.id == conversation_id)
        touch = touch.values(updated_at=now)
        async with database.engine.begin() as conn:
            stored = bool((await conn.execute(touch)).rowcount)
            if stored:
                for row in rows:
                    row["conversation_id"] = conversation_id
                    row.setdefault("tool_calls", None)
                    row.setdefault("tool_call_id", None)
                await conn.execute(insert(MESSAGES), rows)
    if not stored:
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
    database = get_database(request)
    system, history = await read_history(
        database, caller, conversation_id, newest=settings.max_messages
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
        await store_turn(database, conversation_id, body.content, asked_at, answered)

    return await answer(chat, request, caller, on_answer=store)


module = Module("ai-conversations", routers=(router,))
