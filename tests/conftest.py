"""Shared fixtures: a migrated SQLite database per test and an app client.

Migrations run once per session into a template database; each test gets a
copy of that file, so every test starts from the real schema in a few
milliseconds.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from petpal.platform.app import create_app
from petpal.platform.migrate import upgrade
from petpal.platform.services import Services
from petpal.platform.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"
PHOTOS = FIXTURES / "photos"


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("template")
    upgrade(Settings(data_dir=data_dir, secret_key="template"))
    return data_dir / "petpal.sqlite3"


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "secret_key": "test-secret-key-that-is-long-enough-for-hs256",
        "job_poll_seconds": 0.05,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, migrated_template: Path) -> Settings:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(migrated_template, data_dir / "petpal.sqlite3")
    return make_settings(data_dir)


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
