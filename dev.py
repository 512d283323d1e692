#!/usr/bin/env python3
"""PetPal's developer entry point: one command to run the demo, one to test.

    python3 dev.py run     # install into .venv, migrate, seed once, serve :8000
    python3 dev.py test    # install into .venv, lint, type-check, run the suite
    python3 dev.py loadtest [--users N --duration S …]   # see --help
    python3 dev.py bench   # docs/benchmarks.md from one run (needs wrk)
    python3 dev.py install # only create and fill .venv

`test` runs the suite twice when PostgreSQL and Redis answer: embedded
(SQLite, in-process cache) and distributed (PostgreSQL, Redis). Where they do
not answer it says what it skipped; with CI=true that is a failure.
PETPAL_TEST_MODE=embedded or =distributed runs one mode only. Then a short
load test runs, embedded; PETPAL_LOADTEST_MODE=distributed (or =both) runs it
on PostgreSQL and Redis instead (or too). PETPAL_SKIP_LOADTEST=1 skips it
(with CI=true that too is a failure).

Only the Python standard library is used here, so a fresh machine with
Python 3.11+ and access to the package index can run either command.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
REQUIREMENTS = ROOT / "requirements" / "dev.txt"
STAMP = VENV / ".petpal-installed"


def sh(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = ROOT
) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=cwd, check=True, env=env)


def from_here(*args: str | Path) -> None:
    """Run a module of the repository from the caller's directory, so that a
    relative path among the arguments is the caller's (found by a trial:
    `--mix mix/neg.toml` was looked for in the repository)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    sh(*args, env=env, cwd=None)  # None: the caller's directory


def ensure_venv() -> None:
    """Create .venv and install the hash-checked pins, once per lock change."""
    if not PY.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256(
        REQUIREMENTS.read_bytes() + (ROOT / "pyproject.toml").read_bytes()
    ).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    sh(PY, "-m", "pip", "install", "--quiet", "--require-hashes", "-r", REQUIREMENTS)
    # The project itself: editable, and without touching the pinned set.
    sh(
        PY,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "-e",
        ".",
    )
    STAMP.write_text(digest)


def run(argv: list[str]) -> None:
    data_dir = Path(os.environ.get("PETPAL_DATA_DIR", ROOT / "var"))
    env = dict(os.environ, PETPAL_DATA_DIR=str(data_dir))
    petpal = BIN / "petpal"
    sh(petpal, "migrate", env=env)
    if not (data_dir / ".seeded").exists():
        sh(petpal, "seed", env=env)
        (data_dir / ".seeded").touch()
    else:
        print(f"the demo data was seeded before, in {data_dir}", flush=True)
    options = {
        "--host": os.environ.get("PETPAL_HOST", "127.0.0.1"),
        "--port": os.environ.get("PETPAL_PORT", "8000"),
    }
    # `dev.py run --port 8013` wins over the environment and the defaults.
    rest = list(argv)
    for name in options:
        if name in rest[:-1]:
            at = rest.index(name)
            options[name] = rest[at + 1]
            del rest[at : at + 2]
    host, port = options["--host"], options["--port"]
    print(f"PetPal is at http://{host}:{port}  (API docs: /docs)", flush=True)
    os.execve(
        petpal, [str(petpal), "serve", "--host", host, "--port", port, *rest], env
    )


# The servers the distributed run uses unless PETPAL_TEST_*_URL say otherwise:
# the admin database of a local PostgreSQL, and a local Redis (each test works
# under its own key prefix there and deletes its keys).
DEFAULT_TEST_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"
# RabbitMQ's default account, which accepts connections from loopback only.
DEFAULT_TEST_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
TEST_URL_VARIABLES = (
    "PETPAL_TEST_DATABASE_URL",
    "PETPAL_TEST_REDIS_URL",
    "PETPAL_TEST_BROKER_URL",
)

# Run in .venv's Python: asks each server for one answer within 3 seconds and
# prints a line for each that gave none.
PROBE = """
import asyncio, sys
import asyncpg, kombu, redis.asyncio
from sqlalchemy.engine import make_url

async def postgresql(url):
    dsn = make_url(url).set(drivername="postgresql")
    connection = await asyncpg.connect(
        dsn.render_as_string(hide_password=False), timeout=3
    )
    try:
        await connection.fetchval("SELECT 1")
    finally:
        await connection.close()

async def cache(url):
    client = redis.asyncio.Redis.from_url(
        url, socket_timeout=3, socket_connect_timeout=3
    )
    try:
        await client.ping()
    finally:
        await client.aclose()

def connect_to_broker(url):
    with kombu.Connection(url, connect_timeout=3) as connection:
        connection.ensure_connection(max_retries=1)

async def broker(url):
    await asyncio.to_thread(connect_to_broker, url)

async def main():
    silent = []
    for name, check, url in (
        ("PostgreSQL", postgresql, sys.argv[1]),
        ("Redis", cache, sys.argv[2]),
        ("RabbitMQ", broker, sys.argv[3]),
    ):
        try:
            await asyncio.wait_for(check(url), 5)
        except Exception as exc:
            shown = make_url(url).render_as_string()  # password hidden
            silent.append(f"{name} at {shown}: {type(exc).__name__} {exc}".strip())
    for line in silent:
        print(line)

asyncio.run(main())
"""


LINTED = ("src", "tests", "benchmarks", "loadtest", "dev.py")

# Two pytest-xdist workers, one per core of the CI machine: measured there,
# embedded 95 s → 80 s and distributed 138 s → 85 s (PostgreSQL's own work
# overlaps the other worker's). `-n 0` after `test` runs in one process.
PYTEST = ("-m", "pytest", "-n", "2")


def test(argv: list[str]) -> None:
    mode = os.environ.get("PETPAL_TEST_MODE", "both")
    if mode not in ("both", "embedded", "distributed"):
        sys.exit("PETPAL_TEST_MODE is embedded, distributed or unset (both)")
    sh(BIN / "ruff", "check", *LINTED)
    sh(BIN / "ruff", "format", "--check", *LINTED)
    sh(BIN / "mypy")
    distributed = dict(os.environ)
    distributed.setdefault("PETPAL_TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    distributed.setdefault("PETPAL_TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)
    distributed.setdefault("PETPAL_TEST_BROKER_URL", DEFAULT_TEST_BROKER_URL)
    # Asked first, so that CI fails in seconds rather than after a whole run.
    silent = silent_servers(distributed) if mode != "embedded" else []
    if silent and os.environ.get("CI") == "true":
        sys.exit(distributed_skipped(silent, "FAILED (CI=true needs all three)"))
    if mode in ("both", "embedded"):
        print("== the suite, embedded (SQLite, in-process cache)", flush=True)
        embedded = {k: v for k, v in os.environ.items() if k not in TEST_URL_VARIABLES}
        sh(PY, *PYTEST, *argv, env=embedded)
    if mode != "embedded" and silent:
        print(distributed_skipped(silent, "SKIPPED"), flush=True)
    elif mode != "embedded":
        print("== the suite, distributed (PostgreSQL, Redis, RabbitMQ)", flush=True)
        sh(PY, *PYTEST, *argv, env=distributed)
    load_tests(distributed)


# The load test's short run (loadtest/run.py): long and busy enough for a p99
# to mean something, short enough for CI (about 1.5 minutes on a quiet
# machine, 2.5 on a busy one); figures in README.md, "Load tests". Access
# tokens expire after 20 s, so that the simulated app's token refresh runs
# too. Embedded only by default: the suites take 4 minutes on a quiet machine
# but were measured at 13.5 on a shared, busy one, and CI has 20.
LOAD_TEST_RUN = (
    *("--users", "30", "--spawn-rate", "2", "--duration", "45"),
    *("--access-token-ttl", "20"),
)
SKIP_LOAD_TEST = "PETPAL_SKIP_LOADTEST"
# The load test makes its own database and Redis key prefix from the
# PETPAL_TEST_* admin URLs; these would point it at someone's data instead.
ENGINE_VARIABLES = (
    "PETPAL_DATABASE_URL",
    "PETPAL_REDIS_URL",
    "PETPAL_SECRET_KEY",
    "PETPAL_CACHE_KEY_PREFIX",
    "PETPAL_BROKER_URL",
    "PETPAL_BROKER_PREFIX",
)


def load_tests(distributed: dict[str, str]) -> None:
    """The load test's gate: embedded, or as PETPAL_LOADTEST_MODE says."""
    mode = os.environ.get("PETPAL_LOADTEST_MODE", "embedded")
    if mode not in ("both", "embedded", "distributed"):
        sys.exit("PETPAL_LOADTEST_MODE is embedded (the default), distributed or both")
    if os.environ.get(SKIP_LOAD_TEST):
        ci = os.environ.get("CI") == "true"
        verdict = "FAILED (CI=true needs it)" if ci else "SKIPPED"
        print(
            f"\n{verdict}: the load test did not run, because {SKIP_LOAD_TEST} "
            "is set.\nRun it with `python3 dev.py loadtest` "
            f"({' '.join(LOAD_TEST_RUN)} in CI).",
            flush=True,
        )
        if ci:
            sys.exit(1)
        return
    silent = silent_servers(distributed) if mode != "embedded" else []
    if silent:
        sys.exit(
            "the distributed load test needs PostgreSQL and Redis; these did "
            "not answer:\n" + "\n".join(f"  - {line}" for line in silent)
        )
    env = {k: v for k, v in distributed.items() if k not in ENGINE_VARIABLES}
    for each in ("embedded", "distributed"):
        if mode in (each, "both"):
            print(f"== the load test, {each}", flush=True)
            sh(PY, "-m", "loadtest.run", "--mode", each, *LOAD_TEST_RUN, env=env)


def silent_servers(env: dict[str, str]) -> list[str]:
    """The servers of the distributed run that do not answer, described."""
    probe = subprocess.run(
        [
            PY,
            "-c",
            PROBE,
            env["PETPAL_TEST_DATABASE_URL"],
            env["PETPAL_TEST_REDIS_URL"],
            env["PETPAL_TEST_BROKER_URL"],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if probe.returncode != 0:
        return [f"the probe itself failed: {probe.stderr.strip()}"]
    return [line for line in probe.stdout.splitlines() if line.strip()]


def distributed_skipped(silent: list[str], verdict: str) -> str:
    """What did not run, why, and how to run it."""
    return "\n".join(
        [
            "",
            f"{verdict}: the suite in distributed mode (PostgreSQL, Redis and",
            "RabbitMQ) did not run, because these did not answer:",
            *(f"  - {line}" for line in silent),
            "To run it, start them (README.md, 'Running both modes'), or point",
            "PETPAL_TEST_DATABASE_URL (an admin URL: the tests create and drop",
            "their own databases), PETPAL_TEST_REDIS_URL and",
            "PETPAL_TEST_BROKER_URL at servers that answer, then run",
            "`python3 dev.py test` again.",
        ]
    )


def lock(_argv: list[str]) -> None:
    """Recompile the pins (needs uv on PATH): main first, dev constrained by it."""
    for name in ("main", "dev"):
        sh(
            "uv",
            "pip",
            "compile",
            "--python-version",
            "3.11",
            "--generate-hashes",
            "--no-header",
            f"requirements/{name}.in",
            "-o",
            f"requirements/{name}.txt",
        )


def loadtest(argv: list[str]) -> None:
    """Run the load test (loadtest/run.py); `loadtest --help` lists its options."""
    from_here(PY, "-m", "loadtest.run", *argv)


def bench(argv: list[str]) -> None:
    """Make docs/benchmarks.md (benchmarks/report.py); `bench --help` for options."""
    from_here(PY, "-m", "benchmarks.report", *argv)


def install(_argv: list[str]) -> None:
    """Only create and fill .venv (ensure_venv has already run)."""


COMMANDS = {
    "run": run,
    "test": test,
    "loadtest": loadtest,
    "bench": bench,
    "install": install,
    "lock": lock,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    command = sys.argv[1]
    try:
        if command != "lock":
            ensure_venv()
        COMMANDS[command](sys.argv[2:])
    except subprocess.CalledProcessError as failed:
        # The failing tool has said why; its traceback here would add nothing.
        sys.exit(failed.returncode)


if __name__ == "__main__":
    main()
