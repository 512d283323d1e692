"""Database engine, sessions, the declarative base and query counting.

Requests and jobs share one async engine. Sessions come in two kinds:
``read_session`` for handlers that only read, and ``write_session`` whose
commit is owned by the wrapper. On SQLite a write transaction starts with
``BEGIN IMMEDIATE``: two deferred transactions that both try to upgrade to a
write lock would otherwise deadlock and one would fail with "database is
locked" instead of waiting its turn. On PostgreSQL (asyncpg) the pool size,
its timeouts, pre-ping and the statement timeout come from settings.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import DateTime, Index, MetaData, event, text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from petpal.platform.settings import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DB_QUERIES = Counter("petpal_db_queries_total", "SQL statements sent to the database")
# Statements executed in the current request or job, for per-request metrics.
queries_in_scope: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "queries_in_scope", default=None
)


# Set in ``session.info`` by jobs.enqueue, so a commit knows it added jobs.
JOBS_ENQUEUED = "petpal_jobs_enqueued"
# The PostgreSQL channel a commit that added jobs notifies (distributed mode).
OUTBOX_CHANNEL = "petpal_outbox"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Set in an index's ``info``: the one database engine (dialect name) it is
# made on; see postgresql_only.
ONLY_ON = "petpal_only_on"


def postgresql_only(index: Index) -> Index:
    """``index``, made on PostgreSQL alone (an index type SQLite lacks)."""
    index.info[ONLY_ON] = "postgresql"
    return index.ddl_if(dialect="postgresql")


IncludeObject = Callable[[Any, str | None, str, bool, Any], bool]


def made_on(dialect: str) -> IncludeObject:
    """Alembic's ``include_object`` for a database of ``dialect``: leaves out
    of a comparison with the models what another engine's schema alone has."""

    def include(
        item: Any, _name: str | None, type_: str, _reflected: bool, _other: Any
    ) -> bool:
        return type_ != "index" or item.info.get(ONLY_ON, dialect) == dialect

    return include


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every engine (SQLite keeps no time zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def rowcount(result: Any) -> int:
    """How many rows a data-changing statement's result says it changed (0
    when the driver does not say)."""
    return int(getattr(result, "rowcount", 0) or 0)


def _count_query(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    if statement.startswith("BEGIN"):
        return  # our own transaction start on SQLite, not a query
    DB_QUERIES.inc()
    counter = queries_in_scope.get()
    if counter is not None:
        counter[0] += 1


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("petpal_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _postgresql_engine(url: str, settings: Settings) -> AsyncEngine:
    """An asyncpg engine whose pool and timeouts come from ``settings``.

    A restart of the server costs only the requests in flight: the server
    closes every connection as it stops, and a pooled connection whose socket
    was closed is replaced at checkout, without a round trip
    (``_replace_if_closed``); the errors of the requests in flight become 503
    problems (see ``errors.backend_unavailable``). ``db_pool_pre_ping`` adds
    a real round trip per checkout, for connections that die silently (a
    pooler or a network in between).
    """
    statement_ms = round(settings.db_statement_timeout_seconds * 1000)
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_pre_ping=settings.db_pool_pre_ping,
        pool_recycle=settings.db_pool_recycle_seconds,
        connect_args={
            "timeout": settings.db_connect_timeout_seconds,
            # The client's own limit, a little above the server's: it only
            # fires when the server stops answering altogether (a partition),
            # which statement_timeout cannot catch.
            "command_timeout": settings.db_statement_timeout_seconds + 5.0,
            "server_settings": {
                "statement_timeout": str(statement_ms),
                "application_name": "petpal",
            },
        },
    )
    event.listen(engine.sync_engine, "checkout", _replace_if_closed)
    return engine


def _replace_if_closed(
    dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: Any
) -> None:
    """Refuse a pooled connection whose socket the server has closed.

    The pool then discards it and checks out (or opens) another; this is a
    look at the driver's own state, not a round trip.
    """
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


class Database:
    """The engine plus the two session factories every service uses."""

    def __init__(self, settings: Settings) -> None:
        url = settings.effective_database_url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            self.engine = create_async_engine(url, pool_size=8, max_overflow=8)
            _configure_sqlite(self.engine)
            writer = self.engine.execution_options(petpal_begin="IMMEDIATE")
        else:
            self.engine = _postgresql_engine(url, settings)
            writer = self.engine
        event.listen(self.engine.sync_engine, "before_cursor_execute", _count_query)
        reader = self.engine
        if not self.is_sqlite:
            # Reads send their statements alone, without BEGIN and ROLLBACK
            # around them: two round trips fewer per read session. Under
            # PostgreSQL's READ COMMITTED each statement takes its own
            # snapshot either way. (SQLite keeps its read transaction: there
            # it does hold one snapshot across statements.)
            reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._readers = async_sessionmaker(reader, expire_on_commit=False)
        self._writers = async_sessionmaker(writer, expire_on_commit=False)
        self._after_commit_hooks: list[Callable[[], None]] = []
        # With a broker the relay is another process; PostgreSQL tells it.
        self._notify_jobs = bool(settings.broker_url) and not self.is_sqlite

    def on_job_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` after a write commit that enqueued a job (wakes relays)."""
        self._after_commit_hooks.append(hook)

    @asynccontextmanager
    async def read_session(self) -> AsyncIterator[AsyncSession]:
        async with self._readers() as session:
            yield session

    @asynccontextmanager
    async def statement_session(self) -> AsyncIterator[AsyncSession]:
        """A session for a write that is one statement, its own transaction.

        On PostgreSQL the statement is sent alone, in autocommit, as reads
        are: two round trips fewer than BEGIN and COMMIT around it. On SQLite
        it runs in a write transaction (``BEGIN IMMEDIATE``), as any write.
        Nothing here notifies the relays: a statement that makes a job due
        belongs in a ``write_session``.
        """
        if self.is_sqlite:
            async with self.write_session() as session:
                yield session
        else:
            async with self._readers() as session:
                yield session

    @asynccontextmanager
    async def write_session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits when the block ends cleanly."""
        async with self._writers() as session:
            async with session.begin():
                yield session
                if self._notify_jobs and session.info.get(JOBS_ENQUEUED):
                    # Delivered at commit: wakes `petpal relay` (broker.py).
                    await session.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))
            enqueued = session.info.pop(JOBS_ENQUEUED, False)
        if enqueued:
            for hook in self._after_commit_hooks:
                hook()

    async def dispose(self) -> None:
        await self.engine.dispose()
