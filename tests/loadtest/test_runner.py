"""The load-test runner: options, data sets, and the things it starts and makes.

What matters most is that everything the runner starts or makes is gone
afterwards, also when a step fails: the server process, the database and
the Redis keys of a distributed run.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from loadtest import run
from loadtest.dataset import (
    SEED_MAX_USERS,
    SEED_MIN_USERS,
    RunError,
    parse_dataset,
    private_database,
    private_key_prefix,
    run_tag,
)
from loadtest.mix import BASELINE_NAME, DEFAULT_MIX, MIX_ENV, WEIGHTS_ENV, load_mix
from loadtest.run import (
    final_results,
    p99_limits,
    parse_args,
    reproduce,
    server_environment,
    serving,
)
from loadtest.stats import AGGREGATED
from tests.conftest import (
    FIXTURES,
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
    # Found by a trial: "scale:²" passed isdigit() and failed in int().
    for wrong in ("scale", "scale:many", "large", "scale:\u00b2", "scale:-5"):
        with pytest.raises(ValueError, match="'demo' or 'scale:N'"):
            parse_dataset(wrong)
    # Found by a trial: refused by the seed, after a migration.
    for wrong in ("scale:0", "scale:1", "scale:99999999"):
        with pytest.raises(ValueError, match="has 2 to 5,000,000 accounts"):
            parse_dataset(wrong)


def test_the_data_sets_bounds_are_the_seeds() -> None:
    from petpal.platform.settings import MAX_DURATION_SECONDS
    from petpal.seed import MAX_USERS

    assert (SEED_MIN_USERS, SEED_MAX_USERS) == (2, MAX_USERS)
    assert run.MAX_DURATION_SECONDS == MAX_DURATION_SECONDS


def test_a_mix_the_environment_names_is_the_runs_and_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a trial: a relative PETPAL_LOADTEST_MIX was the caller's
    file to the runner and the repository's to Locust, which runs there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.toml").write_text(DEFAULT_MIX.read_text())
    monkeypatch.setenv(MIX_ENV, "mine.toml")
    monkeypatch.setenv(WEIGHTS_ENV, "comment=0")
    seen: dict[str, Any] = {}

    def stop_at_the_run(options: Any, mix: Any, *_: Any) -> Any:
        seen.update(options=options, mix=mix)
        raise RunError("stopped here")

    monkeypatch.setattr(run, "run", stop_at_the_run)
    assert run.main(["--dataset", "demo"]) == 2
    assert seen["options"].mix == Path("mine.toml")
    assert seen["mix"].source == Path("mine.toml")
    assert seen["mix"].weights["comment"] == 0
    printed = run.reproduce(seen["options"])
    assert "--mix mine.toml --weights comment=0" in printed


def test_a_kept_results_folder_holds_only_this_runs_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a trial: a run that could not be made left the last run's
    results beside its error."""
    kept = tmp_path / "kept"
    kept.mkdir()
    for name in run.RESULT_FILES:
        (kept / name).write_text("the last run's")
    (kept / "mine.txt").write_text("not the runner's")
    options = parse_args(["--results", str(kept), "--dataset", "demo"])
    monkeypatch.setenv("PETPAL_REFRESH_TOKEN_TTL_SECONDS", "0")  # migrate refuses
    with ExitStack() as cleanup, pytest.raises(subprocess.CalledProcessError):
        run.run(options, load_mix(), parse_dataset("demo"), cleanup)
    assert sorted(p.name for p in kept.iterdir()) == ["mine.txt"]


def test_p99_limits_default_and_per_request() -> None:
    options = parse_args(
        ["--p99-ms", "400", "--p99-limit", "POST /api/v1/auth/token=1500"]
    )

    assert p99_limits(options) == {
        AGGREGATED: 400.0,
        "POST /api/v1/auth/token": 1500.0,
    }
    wrong_limits = ["POST /api/v1/auth/token", "=5", "GET /x=fast"]
    # Found by a trial: NaN passed every request; a negative one none.
    wrong_limits += ["GET /x=nan", "GET /x=inf", "GET /x=-1", "GET /x=0"]
    for wrong in wrong_limits:
        with pytest.raises(RunError, match="METHOD /route=MS"):
            p99_limits(parse_args(["--p99-limit", wrong]))
    # Found by a trial: each taken without a word, doing something else.
    for twice, complaint in [
        (["GET /x=1", "GET /x=900"], "'GET /x' is given twice"),
        (["Aggregated=1"], "--p99-ms is the limit of every request not named"),
        ([f"GET {BASELINE_NAME}=0.5"], "a yardstick, held to no limit"),
    ]:
        argv = [word for item in twice for word in ("--p99-limit", item)]
        with pytest.raises(RunError, match=re.escape(complaint)):
            p99_limits(parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        # Found by a trial: NaN turned the latency gate off.
        ["--p99-ms", "nan"],
        ["--p99-ms", "inf"],
        ["--p99-ms", "-5"],
        # Found by a trial: refused only by Locust or the server, after the
        # migration and the seed; 0 was left out without a word.
        ["--spawn-rate", "nan"],
        ["--access-token-ttl", "-1"],
        ["--access-token-ttl", "0"],
        # Found by a trial: taken, and every log-in was then a 500.
        ["--access-token-ttl", "99999999999999999999"],
        # Found by a trial: taken, and the seed began.
        ["--spawn-rate", "1e-300"],
        ["--duration", "99999999999"],
    ],
)
def test_options_no_run_could_use_are_refused_at_once(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        parse_args(argv)
    assert refused.value.code == 2


def test_the_printed_command_repeats_the_run() -> None:
    argv = ["--users", "7", "--duration", "9", "--weights", "comment=0,post_photo=5"]

    again = reproduce(parse_args(argv)).removeprefix("python3 dev.py loadtest ")

    assert vars(parse_args(again.replace("'", "").split())) == vars(parse_args(argv))
    # Found by a trial: which account each person takes was left out.
    seeded = [*argv, "--seed", "other", "--results", "kept"]
    again = reproduce(parse_args(seeded)).removeprefix("python3 dev.py loadtest ")
    assert vars(parse_args(again.split())) == vars(parse_args(seeded))


def test_locust_exiting_without_results_says_why(tmp_path: Path) -> None:
    """Found by a trial: Locust died of a MemoryError, and the run said its
    CSV files were missing; a crash exits 1, as failed requests do."""
    log = tmp_path / "locust.log"
    log.write_text("Traceback (most recent call last):\nMemoryError\n")
    final = tmp_path / "locust_final.json"

    with pytest.raises(RunError, match="exited with 1 and left no readable results"):
        final_results(final, 1, log)
    final.write_text('{"requests": [')  # cut short
    with pytest.raises(RunError, match="MemoryError"):
        final_results(final, 1, log)
    shutil.copyfile(FIXTURES / "locust" / "run_final.json", final)
    with pytest.raises(RunError, match="exited with 1 but recorded no failure"):
        final_results(final, 1, log)
    assert final_results(final, 0, log).aggregated is not None


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
