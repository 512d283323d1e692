"""The ``petpal`` command says what is wrong in a line, and touches nothing
it was not asked to make.

Found by a trial: a mistyped ``--data-dir`` made a database, a secret and a
storage folder there; a bad setting, a database without the schema, a Redis
that does not answer each printed a traceback of hundreds of lines; an empty
``PETPAL_CACHE_KEY_PREFIX`` let ``petpal cache clear`` delete every key of a
shared Redis.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import pytest

from petpal.platform.settings import Settings
from tests.conftest import BIN, run_petpal, settings_env

# How long a command may take to start on a busy machine.
STARTUP_SECONDS = 60


def _embedded(settings: Settings, data_dir: Path, **changes: object) -> Settings:
    return settings.model_copy(
        update={"data_dir": data_dir, "database_url": "", "broker_url": "", **changes}
    )


def _one_line_error(
    result: subprocess.CompletedProcess[str], status: int, *words: str
) -> None:
    assert result.returncode == status, result
    err = result.stderr
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 2, err
    for word in words:
        assert word in err, err


@pytest.mark.parametrize(
    "command", [("jobs", "dead"), ("jobs", "replay"), ("media", "sweep-uploads")]
)
def test_a_data_dir_without_a_database_is_refused_and_left_alone(
    settings: Settings, tmp_path: Path, command: tuple[str, ...]
) -> None:
    typo = tmp_path / "typo"
    result = run_petpal(_embedded(settings, typo), *command)
    _one_line_error(result, 2, "no database at", str(typo))
    assert not typo.exists()


@pytest.mark.parametrize("prefix", ["", "petpal", "pet pal:"])
def test_a_key_prefix_that_could_name_other_keys_is_refused(
    settings: Settings, tmp_path: Path, prefix: str
) -> None:
    changed = _embedded(
        settings,
        tmp_path,
        redis_url="redis://127.0.0.1:6379/0",
        cache_key_prefix=prefix,
    )
    result = run_petpal(changed, "cache", "clear")
    _one_line_error(result, 2, "PETPAL_CACHE_KEY_PREFIX", "ending in ':'")


def test_settings_out_of_range_are_refused_by_name(
    settings: Settings, tmp_path: Path
) -> None:
    changed = _embedded(
        settings, tmp_path, access_token_ttl_seconds=-5, broker_prefix=""
    )
    result = run_petpal(changed, "migrate")
    assert result.returncode == 2, result
    assert "PETPAL_ACCESS_TOKEN_TTL_SECONDS" in result.stderr
    assert "PETPAL_BROKER_PREFIX" in result.stderr
    assert "Traceback" not in result.stderr
    assert not tmp_path.joinpath("petpal.sqlite3").exists()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        # Found by a trial: taken, and every log-in was a 500 (a timedelta
        # that large overflows).
        ("access_token_ttl_seconds", 10**20),
        ("refresh_token_ttl_seconds", 10**12),
        ("trending_window_hours", 10**6),
        ("job_poll_seconds", float("inf")),
        ("refresh_reuse_grace_seconds", float("nan")),
    ],
)
def test_durations_past_ten_years_or_not_finite_are_refused(
    settings: Settings, tmp_path: Path, setting: str, value: float
) -> None:
    changed = _embedded(settings, tmp_path, **{setting: value})
    result = run_petpal(changed, "migrate")
    assert result.returncode == 2, result
    assert f"PETPAL_{setting.upper()}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not tmp_path.joinpath("petpal.sqlite3").exists()


@pytest.mark.parametrize(
    ("setting", "value", "command"),
    [
        ("database_url", "notaurl", ("migrate",)),
        ("database_url", "mysql://root@127.0.0.1/petpal", ("migrate",)),
        ("redis_url", "notaurl", ("cache", "clear")),
        ("broker_url", "redis://127.0.0.1:6379/0", ("jobs", "dead")),
    ],
)
def test_a_url_of_the_wrong_kind_is_refused_by_name(
    settings: Settings,
    tmp_path: Path,
    setting: str,
    value: str,
    command: tuple[str, ...],
) -> None:
    """Found by a trial: each failed deep in a driver, 178 lines long."""
    changed = _embedded(settings, tmp_path, **{setting: value})
    result = run_petpal(changed, *command)
    assert result.returncode == 2, result
    assert f"PETPAL_{setting.upper()}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [("serve", "--port", "1"), ("worker",)])
def test_a_database_url_without_a_secret_key_is_refused_in_a_line(
    settings: Settings, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Found by a trial: ``serve`` said so at start-up, in a traceback."""
    changed = _embedded(
        settings,
        tmp_path,
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/nowhere",
        broker_url="amqp://guest:guest@127.0.0.1:1//",
        secret_key="",
    )
    result = run_petpal(changed, *command)
    _one_line_error(result, 2, "PETPAL_SECRET_KEY", "PETPAL_DATABASE_URL")


@pytest.mark.parametrize(
    "key", [" ", "short", " " * 40, "x" * 31, "\u200b" * 40, "x\u200b" * 31]
)
def test_a_secret_key_too_short_to_sign_with_is_refused_by_name(
    settings: Settings, tmp_path: Path, key: str
) -> None:
    """Found by a trial: ``serve`` signed tokens with a key of one space."""
    result = run_petpal(_embedded(settings, tmp_path, secret_key=key), "migrate")
    _one_line_error(result, 2, "PETPAL_SECRET_KEY", "at least 32 characters")
    assert not tmp_path.joinpath("petpal.sqlite3").exists()


def test_the_relay_on_a_database_without_the_schema_says_so_in_a_line(
    settings: Settings, tmp_path: Path
) -> None:
    """Found by a trial: it logged the failing query every five seconds,
    for ever."""
    (tmp_path / "petpal.sqlite3").touch()
    changed = _embedded(
        settings, tmp_path, broker_url="amqp://guest:guest@127.0.0.1:1//"
    )
    result = run_petpal(changed, "relay", "--metrics-port", "0")
    _one_line_error(result, 1, "no such table", "petpal migrate")


def test_the_relay_waits_for_a_database_that_does_not_answer_yet(
    settings: Settings, tmp_path: Path
) -> None:
    """Found by a trial: it exited at once; the database may be starting
    beside it."""
    changed = _embedded(
        settings,
        tmp_path,
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/nowhere",
        broker_url="amqp://guest:guest@127.0.0.1:1//",
    )
    relay = subprocess.Popen(
        [str(BIN / "petpal"), "relay", "--metrics-port", "0"],
        env=settings_env(changed),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Until it says it waits, however long its start takes on a busy machine
    # (a fixed 3 s saw nothing at a load average of 9); then it must still run.
    timer = threading.Timer(STARTUP_SECONDS, relay.terminate)
    timer.start()
    seen: list[str] = []
    try:
        assert relay.stdout is not None
        for line in relay.stdout:
            seen.append(line)
            if "relay.database_unavailable" in line:
                break
        assert relay.poll() is None, "".join(seen)
    finally:
        timer.cancel()
        relay.terminate()
        relay.communicate(timeout=10)
    assert any("relay.database_unavailable" in line for line in seen), "".join(seen)


def test_a_database_without_the_schema_is_said_in_a_line(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "petpal.sqlite3").touch()
    result = run_petpal(_embedded(settings, tmp_path), "jobs", "dead")
    _one_line_error(result, 1, "no such table", "petpal migrate")


def test_a_redis_that_does_not_answer_is_said_in_a_line(
    settings: Settings, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    changed = _embedded(settings, tmp_path, redis_url=f"redis://127.0.0.1:{port}/0")
    result = run_petpal(changed, "cache", "clear")
    _one_line_error(result, 1, "Redis failed", "onnect")
