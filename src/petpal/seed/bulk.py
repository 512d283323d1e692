"""Bulk loaders: binary ``COPY`` on PostgreSQL, ``executemany`` on SQLite.

Each load is one transaction: a failure halfway (a taken username, a full
disk, Ctrl-C) rolls everything back and leaves the database as it was.

Into an empty database (no accounts) the loader first drops the indexes and
constraints of the tables it fills, and builds them again from their own
definitions after the rows are in, still inside the transaction: building a
B-tree once from sorted input costs a fraction of keeping it up to date row
by row. The definitions are read from the database's catalog, so what comes
back is exactly what the migrations made. On PostgreSQL the tables are also
truncated (they are empty) so ``COPY … FREEZE`` can write the rows already
frozen, sparing the first vacuum a pass over every page. A database that
already has accounts (``--append``) keeps its indexes and checks as usual.
"""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from sqlalchemy.engine import make_url

from petpal.seed.columns import Batch

# Every table the seed writes, parents first.
TABLES = (
    "accounts",
    "media",
    "pets",
    "posts",
    "post_media",
    "post_pets",
    "post_tags",
    "likes",
    "comments",
    "follows",
    "account_stats",
)


class SeedConflictError(Exception):
    """The rows clash with what the database holds (a taken name, say)."""


class Loader(Protocol):
    async def begin(self) -> int:
        """Open the transaction, keep others from adding accounts meanwhile,
        and say how many accounts there are."""
        ...

    async def taken_usernames(self, names: list[str]) -> list[str]: ...

    async def defer_indexes(self) -> None:
        """Into an empty database: drop the indexes, to build them at commit."""
        ...

    async def write(self, batch: Batch, data: bytes | None) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def wants_copy_data(self) -> bool: ...


class PostgresLoader:
    """One asyncpg connection, one transaction, one ``COPY`` per batch."""

    wants_copy_data = True

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._conn = connection
        self._transaction: Any = None
        self._deferred: list[str] = []
        self._fresh = False

    @classmethod
    async def connect(cls, database_url: str) -> PostgresLoader:
        dsn = make_url(database_url).set(drivername="postgresql")
        connection = await asyncpg.connect(
            dsn.render_as_string(hide_password=False),
            server_settings={"application_name": "petpal-seed"},
        )
        return cls(connection)

    async def taken_usernames(self, names: list[str]) -> list[str]:
        rows = await self._conn.fetch(
            "SELECT username_canonical FROM accounts"
            " WHERE username_canonical = ANY($1::text[])",
            names,
        )
        return [str(r[0]) for r in rows]

    async def begin(self) -> int:
        self._transaction = self._conn.transaction()
        await self._transaction.start()
        # For this transaction only: no time limit, and room to sort in
        # memory when the indexes are built again.
        await self._conn.execute("SET LOCAL statement_timeout = 0")
        await self._conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
        # Sign-ups wait until the load is done (reads go on), and a second
        # seed waits for the first, so the count below stays true.
        await self._conn.execute("LOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE")
        return int(await self._conn.fetchval("SELECT count(*) FROM accounts"))

    async def defer_indexes(self) -> None:
        for table in TABLES:
            if await self._conn.fetchval(f"SELECT EXISTS (SELECT FROM {table})"):  # noqa: S608 - our own table names
                raise SeedConflictError(f"{table} is not empty")
        await self._drop_indexes()
        # Empty already; truncated in this transaction, they take COPY FREEZE.
        await self._conn.execute(f"TRUNCATE {', '.join(TABLES)}")
        self._fresh = True

    async def _drop_indexes(self) -> None:
        tables = list(TABLES)
        constraints = await self._conn.fetch(
            """
            SELECT format('ALTER TABLE %s ADD CONSTRAINT %I %s',
                          conrelid::regclass, conname, pg_get_constraintdef(oid)),
                   format('ALTER TABLE %s DROP CONSTRAINT %I',
                          conrelid::regclass, conname),
                   contype::text
            FROM pg_constraint
            WHERE contype IN ('p', 'u', 'f')
              AND (conrelid::regclass::text = ANY($1::text[])
                   OR confrelid::regclass::text = ANY($1::text[]))
            """,
            tables,
        )
        indexes = await self._conn.fetch(
            """
            SELECT pg_get_indexdef(i.indexrelid),
                   format('DROP INDEX %s', i.indexrelid::regclass)
            FROM pg_index i
            WHERE i.indrelid::regclass::text = ANY($1::text[])
              AND NOT EXISTS (
                SELECT 1 FROM pg_constraint c
                WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid
                  AND c.contype IN ('p', 'u', 'x'))
            """,
            tables,
        )
        foreign = [r for r in constraints if r[2] == "f"]
        keys = [r for r in constraints if r[2] != "f"]
        # Dropped referencing-first, rebuilt keys first and foreign keys last.
        for row in [*foreign, *keys, *indexes]:
            await self._conn.execute(row[1])
        self._deferred = [r[0] for r in [*keys, *indexes, *foreign]]

    async def write(self, batch: Batch, data: bytes | None) -> None:
        if len(batch) == 0:
            return
        assert data is not None
        await self._conn.copy_to_table(
            batch.table,
            # A file object: asyncpg would take bytes for a file name.
            source=io.BytesIO(data),
            columns=list(batch.columns),
            format="binary",
            freeze=self._fresh,
        )

    async def commit(self) -> None:
        # Keys and indexes come back with parallel workers sorting; each
        # foreign key is checked here against the rows as a whole.
        for statement in self._deferred:
            await self._conn.execute(statement)
        await self._transaction.commit()
        # Fresh statistics, so the planner's first queries see the real sizes.
        await self._conn.execute(f"ANALYZE {', '.join(TABLES)}")

    async def rollback(self) -> None:
        if self._transaction is not None:
            await self._transaction.rollback()

    async def close(self) -> None:
        await self._conn.close()


class SqliteLoader:
    """The sqlite3 module in a worker thread, in one ``BEGIN IMMEDIATE``.

    The pragmas suit a bulk load: ``synchronous=OFF`` (the WAL survives a
    crash of this process; only a power cut mid-load could lose the file's
    last writes, and this is a seed), a large page cache, temporary B-trees
    in memory, and helper threads to sort for the index builds. Foreign keys
    are not checked row by row: the rows are consistent by construction
    (they refer only to rows of the same load) and the tests check it with
    ``PRAGMA foreign_key_check``.
    """

    wants_copy_data = False

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False
        )
        self._deferred: list[str] = []

    async def _run(self, sql: str, *args: Any) -> list[Any]:
        def go() -> list[Any]:
            return self._conn.execute(sql, args).fetchall()

        return await asyncio.to_thread(go)

    async def taken_usernames(self, names: list[str]) -> list[str]:
        found: list[str] = []
        for start in range(0, len(names), 500):
            part = names[start : start + 500]
            marks = ", ".join("?" * len(part))
            sql = f"SELECT username_canonical FROM accounts WHERE username_canonical IN ({marks})"  # noqa: E501, S608 - only question marks are spliced in
            rows = await self._run(sql, *part)
            found += [str(r[0]) for r in rows]
        return found

    async def begin(self) -> int:
        for pragma in (
            "busy_timeout = 10000",
            "journal_mode = WAL",
            "synchronous = OFF",
            # KiB: 2 GiB, so the B-trees being filled stay in memory.
            "cache_size = -2097152",
            "temp_store = MEMORY",
            # Helper threads for the sorts of CREATE INDEX at the end.
            f"threads = {min(os.cpu_count() or 1, 4)}",
            # Cannot change inside the transaction; the unique constraints
            # (names, e-mails, ids) are checked all the same.
            "foreign_keys = OFF",
        ):
            await self._run(f"PRAGMA {pragma}")
        # Holds the database's write lock until the commit.
        try:
            await self._run("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise SeedConflictError(f"the database is busy: {exc}") from exc
        return int((await self._run("SELECT count(*) FROM accounts"))[0][0])

    async def defer_indexes(self) -> None:
        marks = ", ".join("?" * len(TABLES))
        sql = f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ({marks})"  # noqa: E501, S608 - only question marks
        for name, index_sql in await self._run(sql, *TABLES):
            await self._run(f'DROP INDEX "{name}"')
            self._deferred.append(str(index_sql))

    async def write(self, batch: Batch, data: bytes | None) -> None:
        if len(batch) == 0:
            return
        names = ", ".join(batch.columns)
        marks = ", ".join("?" * len(batch.columns))
        sql = f"INSERT INTO {batch.table} ({names}) VALUES ({marks})"  # noqa: S608

        def go() -> None:
            try:
                self._conn.executemany(sql, batch.sqlite_rows())
            except sqlite3.IntegrityError as exc:
                raise SeedConflictError(str(exc)) from exc

        await asyncio.to_thread(go)

    async def commit(self) -> None:
        for sql in self._deferred:
            await self._run(sql)
        await self._run("COMMIT")
        await self._run("PRAGMA foreign_keys = ON")
        # Planner statistics from a sample of each index: seconds, not minutes.
        await self._run("PRAGMA analysis_limit = 1000")
        await self._run("ANALYZE")
        await self._run("PRAGMA wal_checkpoint(TRUNCATE)")

    async def rollback(self) -> None:
        if self._conn.in_transaction:
            await self._run("ROLLBACK")

    async def close(self) -> None:
        await asyncio.to_thread(self._conn.close)
