"""Database engine, the declarative base, and one transaction per request.

Two ways to reach the database share one connection pool:

- `SessionDep`, the ORM unit of work: one transaction per request, committed
  before the response is sent. Anything that writes uses it.
- `ReadConnectionDep`, for hot endpoints that only read: a Core connection in
  autocommit mode, so each query is one round trip, with no BEGIN before it and
  no COMMIT after, and its rows skip the ORM's object loading. Each statement
  sees the data committed when it starts, as it would in the default READ
  COMMITTED transaction; use `SessionDep` when several reads must see one
  snapshot, or to lock rows.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Connection, MetaData, Result, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util import await_

from .config import Settings, sqlite_in_memory
from .contract import declare

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base class of every table; modules import it, core never imports a module."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class _SQLiteConnection(sqlite3.Connection):
    """A SQLite connection that resets its cursors' statements when it closes.

    A statement cancelled midway (a timeout, a job stopped at shutdown) is left stepped but
    not reset. The cancelled task keeps its error, and the error's traceback keeps the
    statement's cursor alive. `close()` alone then leaves a zombie connection that keeps the
    statement's write lock until the cursor is collected, and every other writer waits out
    the busy timeout ("database is locked"). Resetting the cursors first lets it close, and
    its transaction roll back, at once.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cursors: weakref.WeakSet[sqlite3.Cursor] = weakref.WeakSet()

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        cursor = super().cursor(*args, **kwargs)
        self._cursors.add(cursor)
        return cursor

    def close(self) -> None:
        for cursor in list(self._cursors):
            cursor.close()
        super().close()


def _sqlite_pragmas(busy_timeout: float) -> Callable[[Any, Any], None]:
    """WAL (readers never wait), foreign keys, and `busy_timeout` seconds to wait for the one
    write lock (DB_SQLITE_BUSY_TIMEOUT).

    Transactions keep the driver's default start: `BEGIN` just before the first write, so
    that write waits for the lock (busy_timeout) like a lone statement. A transaction begun
    at its first read (SQLAlchemy's recipe for pysqlite's transaction handling) would hold
    a snapshot, and its first write would fail at once, without waiting, whenever another
    transaction committed since. What makes a writer wait longer than the busy timeout is a
    transaction holding the lock across slow work: none may hold it across a network call.
    """
    milliseconds = round(busy_timeout * 1000)

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={milliseconds:d}")
        cursor.close()

    return pragmas


class _Turns:
    """Permits handed out strictly in the order they were asked for."""

    def __init__(self, permits: int) -> None:
        self.free = permits
        self.waiters: deque[asyncio.Future[None]] = deque()

    def take_now(self) -> bool:
        if self.free and not self.waiters:
            self.free -= 1
            return True
        return False

    async def take(self, within: float) -> None:
        turn = asyncio.get_running_loop().create_future()
        self.waiters.append(turn)
        try:
            async with asyncio.timeout(within):
                await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.give()  # handed over just as we gave up: pass it on
            else:
                turn.cancel()
            raise

    def give(self) -> None:
        while self.waiters:
            turn = self.waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # straight to the longest waiter
                return
        self.free += 1


class FairQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio pool, handing out connections first come, first served.

    The stock queue gives a returned connection to whoever asks first: a task
    that asks at the right moment takes it ahead of tasks already waiting, and
    an unlucky waiter can be passed over again and again (sqlalchemy#7679). At
    256 connections on users/me that left 21 of about 21,000 requests waiting
    over 2 s (see docs/benchmarks.md). Here one permit per connection the pool
    may open is handed, in order, to whoever waits longest, so the queue behind
    it never has to wait.
    """

    def __init__(self, creator: Any, **kw: Any) -> None:
        super().__init__(creator, **kw)
        self._turns = _Turns(self.size() + max(self._max_overflow, 0))
        # Told how long each wait for a connection took (metrics, when on).
        self.wait_observer: Callable[[float], None] | None = None

    def _do_get(self) -> ConnectionPoolEntry:
        if self._max_overflow < 0:  # no limit, nothing to wait for
            return super()._do_get()
        if not self._turns.take_now():
            started = time.perf_counter()
            try:
                await_(self._turns.take(self._timeout))
            except TimeoutError:
                if self.wait_observer is not None:
                    self.wait_observer(time.perf_counter() - started)
                raise PoolTimeout(
                    f"QueuePool limit of size {self.size()} overflow {self._max_overflow} "
                    f"reached, connection timed out, timeout {self._timeout:0.2f}",
                    code="3o7r",
                ) from None
            if self.wait_observer is not None:
                self.wait_observer(time.perf_counter() - started)
        try:
            return super()._do_get()
        except BaseException:
            self._turns.give()
            raise

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        try:
            super()._do_return_conn(record)
        finally:
            if self._max_overflow >= 0:
                self._turns.give()


def create_engine(settings: Settings) -> AsyncEngine:
    """One engine per process, with a fixed, fair pool (SQLite: WAL and foreign keys).

    A SQLite file gets the same pool as PostgreSQL: each aiosqlite connection is
    a thread of its own, so the stock overflow (opened under a burst, closed when
    returned) started and stopped about ten threads a second under load. An
    in-memory SQLite database keeps SQLAlchemy's own pool (one shared connection).
    """
    url = make_url(settings.database_url)
    pool: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        "pool_recycle": settings.db_pool_recycle,
        "pool_pre_ping": settings.db_pool_pre_ping,
        "poolclass": FairQueuePool,
    }
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url, echo=settings.db_echo, **pool)
    # In memory (also `file::memory:?cache=shared`, which lives only while a connection is
    # open): SQLAlchemy's own choice of pool, without our recycling.
    in_memory = sqlite_in_memory(settings.database_url)
    engine = create_async_engine(
        url,
        echo=settings.db_echo,
        connect_args={"factory": _SQLiteConnection},
        **({} if in_memory else pool),
    )
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas(settings.db_sqlite_busy_timeout))
    return engine


@dataclass(frozen=True)
class Database:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    # The same pool; its connections are in autocommit mode while checked out from here.
    read_engine: AsyncEngine

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        engine = create_engine(settings)
        return cls(
            engine,
            async_sessionmaker(engine, expire_on_commit=False, autoflush=False),
            engine.execution_options(isolation_level="AUTOCOMMIT"),
        )


def insert_ignoring_conflicts(dialect: str, model: Any) -> postgresql.Insert | sqlite.Insert:
    """`INSERT INTO model ... ON CONFLICT DO NOTHING` on PostgreSQL or SQLite (add `.values`).

    The dialect's module is imported here, not at start-up: an app loads only its own.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(model).on_conflict_do_nothing()
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(model).on_conflict_do_nothing()
    raise NotImplementedError(f"no conflict-free insert written for {dialect}")


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session and one transaction per request.

    Services only flush. The transaction commits when the endpoint returns and
    rolls back when it raises. The dependency is declared with
    `scope="function"`, so the commit runs before the response is sent: a
    commit that fails reaches the client as an error, never as a 200.
    """
    async with get_database(request).sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        # A session that never touched the database and holds no changes has nothing to commit.
        if session.in_transaction() or session.new or session.dirty or session.deleted:
            await session.commit()


DATABASE_PROBLEMS = {503: "The database is busy or unreachable (with Retry-After)"}
declare(get_session, problems=DATABASE_PROBLEMS)
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A Core connection in autocommit mode, for reads: one round trip per query."""
    async with get_database(request).read_engine.connect() as connection:
        yield connection


declare(get_read_connection, problems=DATABASE_PROBLEMS)
ReadConnectionDep = Annotated[AsyncConnection, Depends(get_read_connection, scope="function")]


def as_dicts(result: Result[*tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The rows of a Core result as plain dicts, which response models validate fastest."""
    keys = tuple(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


# Row-level security (PostgreSQL). Tables a module puts under a policy (its migration does,
# and its docs say how) show a transaction only the rows of the tenant its settings name,
# and none by default.
# Code that acts for no single tenant (jobs, the admin, CLIs, webhooks) sets this
# transaction-local switch first. It guards against a query that forgets its filter, not
# against SQL injection: any SQL the app's role runs could set it too.
ROW_SECURITY_BYPASS = "app.rls_bypass"


async def bypass_row_security(db: AsyncSession | AsyncConnection) -> None:
    """Let the current transaction past row-level security policies (PostgreSQL; else nothing).

    Call it after the transaction began (or as its first statement): the setting ends with
    the transaction, so a pooled connection never carries it to the next one.
    """
    dialect = db.get_bind().dialect if isinstance(db, AsyncSession) else db.dialect
    if dialect.name == "postgresql":
        await db.execute(select(func.set_config(ROW_SECURITY_BYPASS, "on", True)))


class RowSecurityBypassSession(Session):
    """Sessions whose every transaction starts past row-level security (the admin's).

    `async_sessionmaker(engine, sync_session_class=RowSecurityBypassSession)`: one statement
    more per transaction on PostgreSQL, none on SQLite.
    """


@event.listens_for(RowSecurityBypassSession, "after_begin")
def _bypass_on_begin(session: Session, transaction: Any, connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.set_config(ROW_SECURITY_BYPASS, "on", True)))
