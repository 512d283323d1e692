from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from petpal.cli import app as cli
from petpal.platform.http_protocol import ProblemHttpToolsProtocol
from petpal.platform.settings import get_settings
from tests.conftest import REDIS_PREFIX, TEST_REDIS_URL, requires_redis
from tests.factories import a_user


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
    [("", "its jobs run in the server process"), ("amqp://nowhere//", "petpal worker")],
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
    assert "starting PetPal at http://127.0.0.1:18123" in result.output
    assert says in result.output
    assert [run["port"] for run in started] == [18123]
    # Whatever uvicorn cannot parse is answered as a problem too
    # (tests/platform/test_http_protocol.py).
    assert [(run["http"], run["ws"]) for run in started] == [
        (ProblemHttpToolsProtocol, "none")
    ]


def test_a_port_out_of_range_is_refused_and_petpal_port_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a trial: --port 84436 listened on 18900 (modulo 65536) and
    said 84436, and ``petpal serve`` ignored PETPAL_PORT."""
    import uvicorn

    started: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.append(kwargs))
    for port in ("84436", "0", "-1"):
        result = serve(tmp_path, monkeypatch, "--port", port)
        assert result.exit_code == 2, result.output
        assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("PETPAL_PORT", "18124")
    monkeypatch.setenv("PETPAL_HOST", "127.0.0.2")
    result = serve(tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert [(run["host"], run["port"]) for run in started] == [("127.0.0.2", 18124)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_library_log_records_are_rendered_as_our_events(tmp_path: Path) -> None:
    """Found by a trial: a malformed upload made python-multipart print a
    bare ``Expected boundary character ...`` line to stderr, with no time,
    no level, no request id, and no JSON where the server logs JSON. The
    standard library's records of a server process are now our events."""
    port = _free_port()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("PETPAL_")
    }
    env.update(PETPAL_DATA_DIR=str(tmp_path), PETPAL_LOG_JSON="true")
    petpal = Path(sys.executable).parent / "petpal"
    malformed = b'garbage\r\n--b\r\nContent-Disposition: form-data; name="f"\r\n\r\nx'
    with (
        (tmp_path / "out.log").open("wb") as out,
        (tmp_path / "err.log").open("wb") as err,
    ):
        server = await asyncio.create_subprocess_exec(
            str(petpal), "serve", "--port", str(port), env=env, stdout=out, stderr=err
        )
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=10
            ) as client:
                for _ in range(300):  # migrations and start-up: a few seconds
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
                user = await a_user(client)
                answer = await client.post(
                    "/api/v1/media",
                    headers={
                        **user.headers,
                        "Content-Type": "multipart/form-data; boundary=b",
                        "X-Request-ID": "malformed-upload-1",
                    },
                    content=malformed,
                )
                assert answer.status_code == 400, answer.text
                # Pillow warns of 89 to 179 megapixels as it opens them; such
                # a photo is past our limit, and refused without that bare
                # line in the log (found by a trial).
                huge = tmp_path / "huge.png"
                Image.new("1", (10_000, 10_000)).save(huge)  # 100 MP, a few KB
                answer = await client.post(
                    "/api/v1/media",
                    headers=user.headers,
                    files={"file": ("huge.png", huge.read_bytes(), "image/png")},
                )
                assert answer.status_code == 413, answer.text
                assert answer.json()["code"] == "too_many_pixels"
        finally:
            server.terminate()
            await asyncio.wait_for(server.wait(), timeout=30)
    errors = (tmp_path / "err.log").read_text()
    assert "boundary" not in errors, errors
    assert "DecompressionBomb" not in errors, errors
    events = [
        orjson.loads(line)
        for line in (tmp_path / "out.log").read_text().splitlines()
        if line.startswith("{")
    ]
    (event,) = [e for e in events if "boundary" in e["event"]]
    assert event["logger"] == "python_multipart.multipart"
    assert event["level"] == "warning"
    assert event["request_id"] == "malformed-upload-1"
    assert event["timestamp"].endswith("Z")


async def test_a_second_server_on_one_data_directory_is_refused(
    tmp_path: Path,
) -> None:
    """Found by a trial: a second ``petpal serve`` on the directory a server
    was serving ran its start-up before it found the port taken: it emptied
    the live server's scratch folder and took its running jobs as a dead
    process's (two photo jobs ran twice, two photos stayed "processing" for
    five minutes). It is refused before it touches anything, and so is an
    embedded seed, whose app would do the same."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("PETPAL_")
    }
    env.update(PETPAL_DATA_DIR=str(tmp_path))
    petpal = str(Path(sys.executable).parent / "petpal")
    port, other_port = _free_port(), _free_port()
    with (tmp_path / "first.log").open("wb") as log:
        first = await asyncio.create_subprocess_exec(
            petpal, "serve", "--port", str(port), env=env, stdout=log, stderr=log
        )
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=10
            ) as client:
                for _ in range(300):
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
                scratch = tmp_path / "tmp" / "a-job-at-work"
                scratch.parent.mkdir(exist_ok=True)
                scratch.write_bytes(b"half a photo")
                for command in (
                    ["serve", "--port", str(other_port)],
                    ["serve", "--port", str(port)],
                    ["seed"],
                ):
                    second = await asyncio.create_subprocess_exec(
                        petpal,
                        *command,
                        env=env,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                    )
                    out, err = await asyncio.wait_for(second.communicate(), 60)
                    assert second.returncode == 1, (command, out, err)
                    said = err.decode()
                    assert f"in use by process {first.pid}" in said, said
                    assert "Traceback" not in said, said
                    assert scratch.read_bytes() == b"half a photo"
                    assert (await client.get("/healthz")).status_code == 200
        finally:
            first.terminate()
            await asyncio.wait_for(first.wait(), timeout=30)
    # Its holder gone, the directory serves again (a killed one's too: the
    # lock goes with the process).
    result = await asyncio.create_subprocess_exec(
        petpal,
        "seed",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(result.communicate(), 120)
    assert result.returncode == 0, (out, err)


@requires_redis
async def test_several_processes_give_their_metrics_summed(tmp_path: Path) -> None:
    """Found by a trial: with ``--workers 2`` each scrape of /metrics gave the
    counts of whichever process answered it (926, 233, 234, 927 requests),
    which Prometheus reads as counters reset. The processes count into
    shared files, every scrape sums them, and the folder goes at the stop."""
    port = _free_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("PETPAL_")
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        PETPAL_DATA_DIR=str(tmp_path / "data"),
        PETPAL_REDIS_URL=TEST_REDIS_URL,
        PETPAL_CACHE_KEY_PREFIX=f"{REDIS_PREFIX}serve-{os.urandom(4).hex()}:",
        TMPDIR=str(scratch),
    )
    petpal = Path(sys.executable).parent / "petpal"
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "out.log").open("wb") as out:
        server = await asyncio.create_subprocess_exec(
            str(petpal),
            *("serve", "--workers", "2", "--port", str(port)),
            env=env,
            stdout=out,
            stderr=out,
        )
        try:
            for _ in range(300):  # migrations and start-up: a few seconds
                with contextlib.suppress(httpx.TransportError):
                    async with httpx.AsyncClient(base_url=url) as client:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                await asyncio.sleep(0.1)
            assert [p.name for p in scratch.iterdir()], "no shared metrics folder"

            async def fresh_connection(path: str) -> httpx.Response:
                # A new connection each time: either process may take it.
                async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                    return await client.get(path)

            for _ in range(40):
                assert (await fresh_connection("/healthz")).status_code == 200
            counted = set()
            for _ in range(10):
                scrape = (await fresh_connection("/metrics")).text
                counted.add(_requests_counted(scrape, "/healthz"))
        finally:
            server.terminate()
            await asyncio.wait_for(server.wait(), timeout=30)
    # Every scrape saw every request (the first healthz of the start-up
    # included), whichever process answered it.
    assert len(counted) == 1, counted
    assert counted.pop() >= 41
    assert list(scratch.iterdir()) == []


def _requests_counted(scrape: str, route: str) -> float:
    total = 0.0
    for line in scrape.splitlines():
        if line.startswith("petpal_http_request_duration_seconds_count{") and (
            f'route="{route}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total
