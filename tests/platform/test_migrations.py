"""The Alembic history and the models describe the same schema, on both engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from petpal.models import metadata
from petpal.platform.db import made_on
from petpal.platform.migrate import upgrade
from petpal.platform.settings import Settings
from tests.conftest import (
    REDIS_PREFIX,
    TEST_REDIS_URL,
    PostgresServer,
    delete_redis_keys,
    make_settings,
    requires_postgresql,
    requires_redis,
    run_async,
    run_petpal,
)


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "include_object": made_on(connection.dialect.name),
        },
    )
    return list(compare_metadata(context, metadata))


def _tables(connection: Connection) -> set[str]:
    return set(sqlalchemy.inspect(connection).get_table_names())


def test_migrations_match_the_models(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    upgrade(settings)
    engine = sqlalchemy.create_engine(f"sqlite:///{settings.sqlite_path}")
    with engine.connect() as connection:
        differences = _differences(connection)
    engine.dispose()
    assert differences == []


def test_migrations_apply_twice_without_change(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    upgrade(settings)
    upgrade(settings)
    engine = sqlalchemy.create_engine(f"sqlite:///{settings.sqlite_path}")
    with engine.connect() as connection:
        tables = _tables(connection)
    engine.dispose()
    assert {"accounts", "media", "outbox_jobs", "alembic_version"} <= tables


@pytest.fixture
def empty_postgresql(
    tmp_path: Path, postgres: PostgresServer | None
) -> Iterator[Settings]:
    assert postgres is not None
    database = postgres.create()
    url = postgres.url_of(database).render_as_string(hide_password=False)
    try:
        yield make_settings(tmp_path, database_url=url)
    finally:
        postgres.drop_later(database)


def _inspect_postgresql(settings: Settings) -> tuple[list[Any], set[str]]:
    async def inspect() -> tuple[list[Any], set[str]]:
        engine = create_async_engine(settings.database_url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                differences = await connection.run_sync(_differences)
                tables = await connection.run_sync(_tables)
        finally:
            await engine.dispose()
        return differences, tables

    return run_async(inspect())


@requires_postgresql
def test_migrations_match_the_models_on_postgresql(
    empty_postgresql: Settings,
) -> None:
    upgrade(empty_postgresql)
    differences, _ = _inspect_postgresql(empty_postgresql)
    assert differences == []


@requires_postgresql
def test_migrations_apply_twice_on_postgresql(empty_postgresql: Settings) -> None:
    upgrade(empty_postgresql)
    upgrade(empty_postgresql)
    differences, tables = _inspect_postgresql(empty_postgresql)
    assert differences == []
    assert {"accounts", "media", "outbox_jobs", "alembic_version"} <= tables


@requires_redis
def test_a_new_database_starts_with_nothing_in_redis_of_an_earlier_one(
    tmp_path: Path,
) -> None:
    """Found by a trial: a database dropped and made again under the same
    Redis and key prefix was served the posts, pets and timelines of the
    one before. Migrating a database that had no schema clears the prefix;
    migrating one that has it leaves the keys be."""
    prefix = f"{REDIS_PREFIX}migrate:"
    client = redis.Redis.from_url(TEST_REDIS_URL)
    other = f"{REDIS_PREFIX}other:kept"
    try:
        client.set(f"{prefix}post:old", b"1")
        client.set(other, b"1")
        settings = make_settings(
            tmp_path, redis_url=TEST_REDIS_URL, cache_key_prefix=prefix
        )
        upgrade(settings)  # the schema made: a new database
        assert client.get(f"{prefix}post:old") is None
        assert client.get(other) == b"1"  # another prefix's
        client.set(f"{prefix}post:new", b"1")
        upgrade(settings)  # at its head already: the same database
        assert client.get(f"{prefix}post:new") == b"1"
        # After a restore from a backup, the operator clears it.
        cleared = run_petpal(settings, "cache", "clear")
        assert cleared.returncode == 0, cleared
        assert cleared.stdout.startswith("deleted 1 key(s)"), cleared.stdout
        assert client.get(f"{prefix}post:new") is None
        assert client.get(other) == b"1"
    finally:
        delete_redis_keys(TEST_REDIS_URL, prefix)
        client.delete(other)
        client.close()
