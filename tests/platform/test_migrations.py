"""The Alembic history and the models describe the same schema, on both engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from petpal.models import metadata
from petpal.platform.migrate import upgrade
from petpal.platform.settings import Settings
from tests.conftest import PostgresServer, make_settings, requires_postgresql, run_async


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
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
