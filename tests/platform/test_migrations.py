"""The Alembic history and the models describe the same schema."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from petpal.models import metadata
from petpal.platform.migrate import upgrade
from tests.conftest import make_settings


def test_migrations_match_the_models(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    upgrade(settings)
    engine = sqlalchemy.create_engine(f"sqlite:///{settings.sqlite_path}")
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    engine.dispose()
    assert differences == []


def test_migrations_apply_twice_without_change(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    upgrade(settings)
    upgrade(settings)
    engine = sqlalchemy.create_engine(f"sqlite:///{settings.sqlite_path}")
    with engine.connect() as connection:
        tables = set(sqlalchemy.inspect(connection).get_table_names())
    engine.dispose()
    assert {"accounts", "media", "outbox_jobs", "alembic_version"} <= tables
