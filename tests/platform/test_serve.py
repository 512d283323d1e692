from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from petpal.cli import app as cli
from petpal.platform.http_protocol import ProblemHttpToolsProtocol
from petpal.platform.settings import get_settings


def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *arguments: str) -> Result:
    """``petpal serve`` with its data in ``tmp_path`` and no Redis."""
    monkeypatch.delenv("PETPAL_REDIS_URL", raising=False)
    # The command sets it; monkeypatch puts back what was there before.
    monkeypatch.setenv("PETPAL_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(
            cli, ["serve", *arguments, "--data-dir", str(tmp_path)]
        )
    finally:
        get_settings.cache_clear()


def test_several_server_processes_without_redis_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each process would keep its own cache, timelines and limits, and two
    requests in a row would see different data (found by trying
    ``python3 dev.py run --workers 2``): refused before anything starts."""
    result = serve(tmp_path, monkeypatch, "--workers", "2")
    assert result.exit_code == 2, result.output
    assert "PETPAL_REDIS_URL" in result.output
    assert list(tmp_path.iterdir()) == []  # no database made, nothing served


@pytest.mark.parametrize(
    ("broker_url", "says"),
    [("", "its jobs run in this process"), ("amqp://nowhere//", "petpal worker")],
)
def test_serve_says_where_it_listens_and_where_jobs_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broker_url: str, says: str
) -> None:
    """Uvicorn logs only warnings here, so without this line a new user
    starting ``petpal serve`` saw nothing at all (found by a trial)."""
    import uvicorn

    started: list[dict[str, object]] = []
    # The server itself is not what this checks (the load tests start it).
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.append(kwargs))
    monkeypatch.setenv("PETPAL_BROKER_URL", broker_url)
    result = serve(tmp_path, monkeypatch, "--port", "18123")
    assert result.exit_code == 0, result.output
    assert "serving PetPal at http://127.0.0.1:18123" in result.output
    assert says in result.output
    assert [run["port"] for run in started] == [18123]
    # Whatever uvicorn cannot parse is answered as a problem too
    # (tests/platform/test_http_protocol.py).
    assert [(run["http"], run["ws"]) for run in started] == [
        (ProblemHttpToolsProtocol, "none")
    ]
