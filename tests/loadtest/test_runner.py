"""The load-test runner: options, data sets, and the things it starts and makes.

What matters most is that everything the runner starts or makes is gone
afterwards, also when a step fails: the server process, the database and
the Redis keys of a distributed run.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from loadtest.dataset import (
    RunError,
    parse_dataset,
    private_database,
    private_key_prefix,
    run_tag,
)
from loadtest.run import (
    p99_limits,
    parse_args,
    reproduce,
    server_environment,
    serving,
)
from loadtest.stats import AGGREGATED
from tests.conftest import (
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    PostgresServer,
    requires_postgresql,
    requires_redis,
)


def test_the_data_sets() -> None:
    demo = parse_dataset("demo")
    scale = parse_dataset("scale:20000")

    assert demo.seed_args == ("seed",)
    assert demo.prepared_accounts > 0
    assert scale.seed_args == ("seed", "--users", "20000")
    assert (scale.accounts, scale.account_count) == ("user_{i}", 20000)
    assert scale.prepared_accounts == 0
    for wrong in ("scale", "scale:0", "scale:many", "large"):
        with pytest.raises(ValueError, match="'demo' or 'scale:N'"):
            parse_dataset(wrong)


def test_p99_limits_default_and_per_request() -> None:
    options = parse_args(
        ["--p99-ms", "400", "--p99-limit", "POST /api/v1/auth/token=1500"]
    )

    assert p99_limits(options) == {
        AGGREGATED: 400.0,
        "POST /api/v1/auth/token": 1500.0,
    }
    for wrong in ("POST /api/v1/auth/token", "=5", "GET /x=fast"):
        with pytest.raises(RunError, match="METHOD /route=MS"):
            p99_limits(parse_args(["--p99-limit", wrong]))


def test_the_printed_command_repeats_the_run() -> None:
    argv = ["--users", "7", "--duration", "9", "--weights", "comment=0,post_photo=5"]

    again = reproduce(parse_args(argv)).removeprefix("python3 dev.py loadtest ")

    assert vars(parse_args(again.replace("'", "").split())) == vars(parse_args(argv))


def test_embedded_runs_ignore_engine_settings_and_lift_rate_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PETPAL_DATABASE_URL", "postgresql://someone@db/theirs")
    monkeypatch.setenv("PETPAL_REDIS_URL", "redis://cache:6379/0")

    with ExitStack() as cleanup:
        env = server_environment(parse_args([]), tmp_path, cleanup)

    assert "PETPAL_DATABASE_URL" not in env
    assert "PETPAL_REDIS_URL" not in env
    assert env["PETPAL_DATA_DIR"] == str(tmp_path)
    assert env["PETPAL_RATE_LIMITS_ENABLED"] == "false"


def test_the_server_is_stopped_when_the_run_fails(tmp_path: Path) -> None:
    with ExitStack() as cleanup:
        env = server_environment(parse_args([]), tmp_path / "data", cleanup)
    log = tmp_path / "server.log"

    failed = pytest.raises(RuntimeError, match="a step after start-up failed")
    with failed, serving(env, log) as server:
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200
        raise RuntimeError("a step after start-up failed")

    assert server.process.returncode is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/readyz", timeout=2)


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    with ExitStack() as cleanup:
        env = server_environment(parse_args([]), tmp_path / "data", cleanup)
    env["PETPAL_RATE_LIMIT_LIKE"] = "not a limit"  # refused at start-up

    refused = pytest.raises(RunError, match=r"exited at start(.|\n)*RATE_LIMIT_LIKE")
    with refused, serving(env, tmp_path / "server.log"):
        pass


@requires_postgresql
def test_a_distributed_run_drops_its_database(postgres: PostgresServer) -> None:
    tag = run_tag()

    with private_database(TEST_DATABASE_URL, tag) as url:
        assert url.endswith(f"/petpal_loadtest_{tag}")
        assert _database_exists(postgres, f"petpal_loadtest_{tag}")

    assert not _database_exists(postgres, f"petpal_loadtest_{tag}")


def _database_exists(postgres: PostgresServer, name: str) -> bool:
    async def exists() -> bool:
        import asyncpg

        dsn = postgres.url.set(drivername="postgresql")
        connection = await asyncpg.connect(dsn.render_as_string(hide_password=False))
        try:
            found = await connection.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", name
            )
        finally:
            await connection.close()
        return found == 1

    return asyncio.run(exists())


@requires_redis
def test_a_distributed_run_deletes_its_keys_and_only_those() -> None:
    client = redis.Redis.from_url(TEST_REDIS_URL)
    neighbour = f"petpal-test-neighbour:{run_tag()}"
    client.set(neighbour, b"not ours", ex=60)
    try:
        with private_key_prefix(TEST_REDIS_URL, run_tag()) as prefix:
            client.mset({f"{prefix}post:{n}": b"cached" for n in range(2500)})

        assert list(client.scan_iter(match=prefix + "*")) == []
        assert client.get(neighbour) == b"not ours"
    finally:
        client.delete(neighbour)
        client.close()
