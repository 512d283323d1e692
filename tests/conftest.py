"""Shared fixtures: a freshly migrated database per test and an app client.

The suite runs in the mode the environment chooses, with the same tests:

- embedded (the default): migrations run once per session into a template
  SQLite file; each test gets a copy of it and the in-process cache.
- distributed: ``PETPAL_TEST_DATABASE_URL`` names a PostgreSQL server by an
  admin URL (``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``).
  Migrations run once per session into a template database, and each test
  gets ``CREATE DATABASE … TEMPLATE`` of it, dropped afterwards.
  ``PETPAL_TEST_REDIS_URL`` (``redis://127.0.0.1:6379/0``) makes Redis the
  cache; each test has its own key prefix and its keys are deleted after it.

Either can be set alone. Names carry the process id, so parallel runs (and
pytest-xdist workers) on one server never meet.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy.engine import URL, make_url

from petpal.platform.app import create_app
from petpal.platform.migrate import upgrade
from petpal.platform.services import Services
from petpal.platform.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"
PHOTOS = FIXTURES / "photos"

TEST_DATABASE_URL = os.environ.get("PETPAL_TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("PETPAL_TEST_REDIS_URL", "")
# RabbitMQ for the broker tests (tests/platform/test_broker.py); each test
# declares its own exchanges and queues under a prefix and deletes them.
TEST_BROKER_URL = os.environ.get("PETPAL_TEST_BROKER_URL", "")
# Every database and Redis key this process makes starts with one of these.
RUN_TAG = f"{os.getpid()}_{secrets.token_hex(3)}"
DATABASE_PREFIX = f"petpal_test_{RUN_TAG}"
REDIS_PREFIX = f"petpal-test:{RUN_TAG}:"

T = TypeVar("T")

requires_postgresql = pytest.mark.skipif(
    not TEST_DATABASE_URL, reason="PETPAL_TEST_DATABASE_URL is not set"
)
requires_redis = pytest.mark.skipif(
    not TEST_REDIS_URL, reason="PETPAL_TEST_REDIS_URL is not set"
)
# Workers are other processes, so they need a database server to share.
requires_broker = pytest.mark.skipif(
    not (TEST_BROKER_URL and TEST_DATABASE_URL),
    reason="PETPAL_TEST_BROKER_URL and PETPAL_TEST_DATABASE_URL are not both set",
)


def pytest_report_header() -> list[str]:
    database = (
        f"PostgreSQL ({_redacted(TEST_DATABASE_URL)})"
        if TEST_DATABASE_URL
        else "SQLite"
    )
    cache = f"Redis ({_redacted(TEST_REDIS_URL)})" if TEST_REDIS_URL else "in-process"
    jobs = (
        f"RabbitMQ ({_redacted(TEST_BROKER_URL)})" if TEST_BROKER_URL else "in-process"
    )
    return [f"petpal: database {database}, cache {cache}, broker tests {jobs}"]


def _redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True) if "://" in url else url


def run_async(coroutine: Awaitable[T]) -> T:
    """Run ``coroutine`` to the end from synchronous fixture code.

    On a thread of its own, so that its event loop never meets the one
    pytest-asyncio keeps for the tests.
    """

    async def main() -> T:
        return await coroutine

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, main()).result()


class PostgresServer:
    """The admin side of the test server: template and per-test databases."""

    def __init__(self, admin_url: str) -> None:
        self.url = make_url(admin_url).set(drivername="postgresql+asyncpg")
        self._names = itertools.count()
        # Dropping a database takes longer than making one, and nothing waits
        # for it: drops run here in the background, all done by session end.
        self._dropper = ThreadPoolExecutor(1, thread_name_prefix="petpal-dropdb")
        self._drops: list[Future[None]] = []

    def url_of(self, database: str) -> URL:
        return self.url.set(database=database)

    async def execute(self, *statements: str) -> None:
        dsn = self.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    def new_name(self) -> str:
        return f"{DATABASE_PREFIX}_{next(self._names)}"

    def create(self, template: str | None = None) -> str:
        name = self.new_name()
        source = f' TEMPLATE "{template}"' if template else ""
        run_async(self.execute(f'CREATE DATABASE "{name}"{source}'))
        return name

    def drop_later(self, name: str) -> None:
        statement = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        self._drops.append(
            self._dropper.submit(lambda: run_async(self.execute(statement)))
        )

    def finish(self) -> None:
        self._dropper.shutdown(wait=True)
        for drop in self._drops:
            drop.result()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer | None]:
    if not TEST_DATABASE_URL:
        yield None
        return
    server = PostgresServer(TEST_DATABASE_URL)
    yield server
    server.finish()


@pytest.fixture(scope="session")
def postgres_template(postgres: PostgresServer | None) -> Iterator[str | None]:
    """A database migrated once per session, copied by every test."""
    if postgres is None:
        yield None
        return
    name = postgres.create()
    try:
        upgrade(_settings_for_migration(str(postgres.url_of(name))))
        yield name
    finally:
        postgres.drop_later(name)


def _settings_for_migration(database_url: str) -> Settings:
    return make_settings(Path("unused"), database_url=database_url)


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("template")
    upgrade(make_settings(data_dir, secret_key="template-" + "t" * 40))
    return data_dir / "petpal.sqlite3"


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    """Embedded settings for a test, whatever ``PETPAL_*`` the shell has set."""
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": "",
        "redis_url": "",
        "broker_url": "",
        "secret_key": "test-secret-key-that-is-long-enough-for-hs256",
        "job_poll_seconds": 0.05,
        "log_level": "WARNING",
        # Off: the suite signs up and logs in hundreds of times from one
        # address. tests/platform/test_rate_limits.py turns them on.
        "rate_limits_enabled": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


# Where the test run's own ``petpal`` command is.
BIN = Path(sys.executable).parent


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the PETPAL_* variables a child process reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PETPAL_")}
    for name, value in settings.model_dump().items():
        if isinstance(value, list):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"PETPAL_{name.upper()}"] = text
    return env


def run_petpal(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``petpal`` command with ``args``, as a child process on
    ``settings``; its exit status and output, whatever they are."""
    return subprocess.run(
        [str(BIN / "petpal"), *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="session")
def redis_sweeper() -> Iterator[None]:
    """Deletes whatever keys this run left in Redis, at the end of the session."""
    yield
    if TEST_REDIS_URL:
        delete_redis_keys(TEST_REDIS_URL, REDIS_PREFIX)


def delete_redis_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        batch = list(client.scan_iter(match=prefix.replace("*", r"\*") + "*"))
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


_redis_prefixes = itertools.count()


@pytest.fixture
def settings(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres: PostgresServer | None,
    postgres_template: str | None,
    redis_sweeper: None,
) -> Iterator[Settings]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    overrides: dict[str, object] = {}
    database: str | None = None
    if postgres is not None and postgres_template is not None:
        database = postgres.create(template=postgres_template)
        overrides["database_url"] = postgres.url_of(database).render_as_string(
            hide_password=False
        )
    else:
        # Asked for here, not as a parameter: a PostgreSQL run needs no SQLite.
        template: Path = request.getfixturevalue("migrated_template")
        shutil.copyfile(template, data_dir / "petpal.sqlite3")
    prefix = f"{REDIS_PREFIX}{next(_redis_prefixes)}:"
    if TEST_REDIS_URL:
        overrides.update(redis_url=TEST_REDIS_URL, cache_key_prefix=prefix)
    try:
        yield make_settings(data_dir, **overrides)
    finally:
        if database is not None and postgres is not None:
            postgres.drop_later(database)
        if TEST_REDIS_URL:
            delete_redis_keys(TEST_REDIS_URL, prefix)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def services(app: FastAPI) -> Services:
    platform: Services = app.state.services
    return platform


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://petpal.test"
    ) as c:
        yield c


@pytest.fixture
def photos() -> Iterator[Path]:
    return PHOTOS
