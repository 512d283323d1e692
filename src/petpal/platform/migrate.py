"""Alembic, driven from code so that no alembic.ini has to be found on disk."""

from __future__ import annotations

from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config

from petpal.platform.settings import Settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

log = structlog.get_logger(__name__)


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", settings.effective_database_url)
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate the database to ``revision``; a database that had no schema
    yet also gets a Redis with nothing of an earlier one's.

    Found by a trial: a database dropped and made again under the same
    Redis and key prefix was served the posts, pets and timelines of the
    one before, and a new account took an old name with its posts. The
    keys under the prefix describe the database they were read from, so a
    new one starts without them. (A database restored from a backup keeps
    its schema: ``petpal cache clear`` is for that.) So does a migration
    that rewrote rows the cache may hold, which says so in the config's
    ``cache_stale`` attribute.
    """
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    config = alembic_config(settings)
    command.upgrade(config, revision)
    if not settings.redis_url:
        return  # an in-process cache starts empty with its process
    from petpal.platform.redis_cache import clear_prefix

    if config.attributes.get("schema_created"):
        log.info("cache.cleared_for_new_database", keys=clear_prefix(settings))
    elif config.attributes.get("cache_stale"):
        # A migration rewrote rows the cache may hold (0004, 0006: tags;
        # 0007: mentions; 0008: both; 0009, 0010: places).
        log.info("cache.cleared_after_migration", keys=clear_prefix(settings))


def make_revision(settings: Settings, message: str) -> None:
    command.revision(alembic_config(settings), message=message, autogenerate=True)
