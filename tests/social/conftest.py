from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from petpal.platform.settings import Settings
from tests.conftest import make_settings


@pytest.fixture
def settings(tmp_path: Path, migrated_template: Path) -> Settings:
    """The shared settings, without the in-process job relay.

    Social enqueues no jobs and these tests make their media ready in the
    database, so the relay would only run a claim transaction after every
    commit and every 50 ms.
    TODO(relay-stop): back to the shared fixture once EmbeddedRelay.stop() no
    longer cancels its loop in the middle of a query, which can leave app
    teardown waiting forever on an aiosqlite future.
    """
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(migrated_template, data_dir / "petpal.sqlite3")
    return make_settings(data_dir, run_jobs_in_process=False)
