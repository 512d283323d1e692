from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from petpal.cli import app as cli
from petpal.platform.settings import get_settings


def test_several_server_processes_without_redis_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each process would keep its own cache, timelines and limits, and two
    requests in a row would see different data (found by trying
    ``python3 dev.py run --workers 2``): refused before anything starts."""
    monkeypatch.delenv("PETPAL_REDIS_URL", raising=False)
    # The command sets it; monkeypatch puts back what was there before.
    monkeypatch.setenv("PETPAL_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            cli, ["serve", "--workers", "2", "--data-dir", str(tmp_path)]
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "PETPAL_REDIS_URL" in result.output
    assert list(tmp_path.iterdir()) == []  # no database made, nothing served
