"""The ``petpal`` command: serve, migrate, seed and operate the platform."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from petpal.platform import datadir
from petpal.platform.settings import Settings, get_settings
from petpal.seed import DEMO_PASSWORD, MAX_USERS

if TYPE_CHECKING:
    from petpal.platform.db import Database

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
jobs_app = typer.Typer(no_args_is_help=True, help="Inspect and replay background jobs.")
app.add_typer(jobs_app, name="jobs")
media_app = typer.Typer(no_args_is_help=True, help="Operate on stored media.")
app.add_typer(media_app, name="media")
cache_app = typer.Typer(no_args_is_help=True, help="Operate on the Redis cache.")
app.add_typer(cache_app, name="cache")

DataDir = Annotated[
    Path | None,
    typer.Option(help="Folder for the SQLite database and media (PETPAL_DATA_DIR)."),
]


def _settings(data_dir: Path | None) -> Settings:
    """The settings from the environment; a bad one ends the command with
    what is wrong with it, one line a setting (pydantic's report ran to a
    screenful of traceback)."""
    from pydantic import ValidationError

    if data_dir is not None:
        os.environ["PETPAL_DATA_DIR"] = str(data_dir)
        get_settings.cache_clear()
    try:
        return get_settings()
    except ValidationError as exc:
        lines = [
            f"PETPAL_{'_'.join(map(str, error['loc'])).upper()}: {error['msg']}"
            for error in exc.errors()
        ]
        _fail("petpal: invalid settings\n" + "\n".join(lines))


def _existing_settings(data_dir: Path | None) -> Settings:
    """The settings of a deployment that exists: in embedded mode, one whose
    data directory holds a database. Found by a trial: ``petpal jobs dead
    --data-dir /tmp/typo`` made a database, a secret and a storage folder
    there, then failed on the empty database with a long traceback."""
    settings = _settings(data_dir)
    if not settings.database_url and not settings.sqlite_path.exists():
        _fail(
            f"petpal: no database at {settings.sqlite_path}: is --data-dir "
            "(PETPAL_DATA_DIR) right? `petpal migrate` makes one"
        )
    return settings


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply the database migrations."""
    from petpal.platform.migrate import upgrade

    upgrade(_settings(data_dir))
    # Said the same whether tables were made or all were there already.
    typer.echo("database schema is at the latest revision")


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on.", envvar="PETPAL_HOST")
    ] = "127.0.0.1",
    # A port past 65535 was taken modulo 65536 (found by a trial: 84436
    # listened on 18900, and said 84436).
    port: Annotated[
        int,
        typer.Option(min=1, max=65535, help="Port to listen on.", envvar="PETPAL_PORT"),
    ] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes sharing the port (more than one needs "
            "PETPAL_REDIS_URL); each runs its own jobs unless a broker is set.",
        ),
    ] = 1,
    data_dir: DataDir = None,
) -> None:
    """Apply migrations, then serve the API and run the jobs in this process."""
    from petpal.platform.migrate import upgrade

    settings = _settings(data_dir)
    _require_secret_key(settings)
    if workers > 1 and not settings.redis_url:
        # Each process would keep its own cache, home timelines and rate
        # limits: a follow or a comment made through one would stay unseen
        # through the others until its keys expired.
        raise typer.BadParameter(
            "more than one server process needs PETPAL_REDIS_URL: without "
            "it the cache, timelines and rate limits live in each process, "
            "and the processes would answer differently",
            param_hint="--workers",
        )
    if settings.jobs_run_alone:
        # Refused before the migrations and the port: its start-up would
        # take over the jobs of the server already serving this directory.
        # Held by this process as it serves (released as it exits).
        datadir.claim(settings.data_dir)
    upgrade(settings)
    address = f"[{host}]" if ":" in host else host
    if settings.broker_url:
        jobs = "its jobs go to RabbitMQ: run `petpal relay` and `petpal worker` too"
    elif workers == 1:
        jobs = "its jobs run in the server process"
    else:
        jobs = "its jobs run in the server processes"
    # Said before the port is bound: a port in use is told by uvicorn next.
    typer.echo(f"starting PetPal at http://{address}:{port}; {jobs}", err=True)
    # Several processes count into shared files, so that /metrics, whichever
    # process answers it, gives the sums (found by a trial: each scrape gave
    # one process's counts, which Prometheus reads as counter resets).
    shared = _metrics_shared_by_processes() if workers > 1 else contextlib.nullcontext()
    with shared:
        _run_uvicorn(host, port, workers)


def _run_uvicorn(host: str, port: int, workers: int) -> None:
    import uvicorn

    from petpal.platform.http_protocol import ProblemHttpToolsProtocol

    uvicorn.run(
        "petpal.platform.app:create_server_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        proxy_headers=False,
        # Uvicorn's own, with a problem document for a request it cannot
        # parse, and limits on a request's head (platform/http_protocol.py).
        http=ProblemHttpToolsProtocol,
        # No WebSocket routes: the protocol above answers a request to
        # switch protocols itself, as HTTP or as a problem.
        ws="none",
        access_log=False,
        log_level="warning",
    )


@app.command()
def seed(
    data_dir: DataDir = None,
    users: Annotated[
        int | None,
        typer.Option(
            min=2,
            max=MAX_USERS,
            help="Generate this many accounts (user_0 … user_<N-1>) and their"
            " pets, posts, follows, likes and comments, loaded in bulk. Without"
            " it: the small demo data set.",
        ),
    ] = None,
    seed_: Annotated[
        int,
        typer.Option("--seed", min=0, help="Random seed of the generated data set."),
    ] = 0,
    password: Annotated[
        str | None,
        typer.Option(
            help=f"Password of every generated account (default: {DEMO_PASSWORD})."
        ),
    ] = None,
    append: Annotated[
        bool,
        typer.Option(
            "--append",
            help="Allow generating into a database that already has accounts.",
        ),
    ] = False,
) -> None:
    """Create the demo data, or with --users a large generated data set."""
    from petpal.platform.migrate import upgrade

    settings = _settings(data_dir)
    if users is not None and password is not None:
        from petpal.seed.scale import password_problem

        problem = password_problem(password, settings.password_min_strength)
        if problem is not None:
            raise typer.BadParameter(problem, param_hint="'--password'")
    if users is None:
        if password is not None or append or seed_:
            raise typer.BadParameter("--seed, --password and --append go with --users")
        from petpal.seed.demo import SeedError, seed_demo

        upgrade(settings)
        try:
            typer.echo(asyncio.run(seed_demo(settings)))
        except SeedError as exc:
            typer.echo(f"petpal seed: {exc}", err=True)
            raise typer.Exit(1) from exc
        return

    from petpal.seed.scale import DEFAULT_PASSWORD, SeedRefusedError, seed_scale

    upgrade(settings)
    try:
        report = asyncio.run(
            seed_scale(
                settings,
                users,
                seed=seed_,
                password=DEFAULT_PASSWORD if password is None else password,
                append=append,
                progress=lambda message: typer.echo(f"… {message}", err=True),
            )
        )
    except SeedRefusedError as exc:
        typer.echo(f"petpal seed: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(report.render())


@app.command()
def relay(
    metrics_port: Annotated[
        int, typer.Option(help="Serve /metrics on this port (0: none).")
    ] = 9101,
    metrics_host: Annotated[str, typer.Option(help="Address for /metrics.")] = (
        "127.0.0.1"
    ),
) -> None:
    """Hand outbox jobs to RabbitMQ (PETPAL_BROKER_URL) until stopped."""
    import signal

    from petpal.platform.broker import BrokerRelay, listen_for_jobs, make_broker
    from petpal.platform.db import Database
    from petpal.platform.observability import configure_logging

    settings = _settings(None)
    _require_broker(settings)
    configure_logging(settings.log_level, settings.log_json, libraries=True)
    if metrics_port:
        _serve_metrics(metrics_port, metrics_host)

    async def run() -> None:
        db = Database(settings)
        await _wait_for_schema(db)
        relay = BrokerRelay(settings, db, make_broker(settings))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, relay.stop)
        stop_listening = await listen_for_jobs(db, relay)
        typer.echo("relay: publishing outbox jobs to RabbitMQ", err=True)
        try:
            await relay.run()
        finally:
            if stop_listening is not None:
                await stop_listening()
            await db.dispose()

    asyncio.run(run())


@app.command()
def worker(
    queues: Annotated[
        str,
        typer.Option(help="Comma-separated: media, notifications, default."),
    ] = "media,notifications,default",
    concurrency: Annotated[
        int, typer.Option(help="Worker processes (default: one per core).")
    ] = 0,
    metrics_port: Annotated[
        int, typer.Option(help="Serve /metrics on this port (0: none).")
    ] = 9102,
    metrics_host: Annotated[str, typer.Option(help="Address for /metrics.")] = (
        "127.0.0.1"
    ),
) -> None:
    """Run jobs from RabbitMQ (PETPAL_BROKER_URL) in Celery worker processes."""
    # Job metrics are counted in the worker's child processes.
    with _metrics_shared_by_processes():
        _run_worker(queues, concurrency, metrics_port, metrics_host)


@contextlib.contextmanager
def _metrics_shared_by_processes() -> Iterator[None]:
    """Prometheus's multiprocess mode for the processes started inside: each
    counts into files of a shared folder, and /metrics sums them all.

    On before prometheus_client is first imported by those processes. Unless
    ``PROMETHEUS_MULTIPROC_DIR`` names one already, the folder is made here
    and removed at the end (found by a trial: each start left one in /tmp).
    """
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        yield
        return
    made = tempfile.mkdtemp(prefix="petpal-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    try:
        yield
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(made, ignore_errors=True)


def _run_worker(
    queues: str, concurrency: int, metrics_port: int, metrics_host: str
) -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from petpal.platform.broker import QUEUE_NAMES, make_broker
    from petpal.platform.observability import configure_logging

    settings = _settings(None)
    _require_broker(settings)
    _require_secret_key(settings)
    names = [name.strip() for name in queues.split(",") if name.strip()]
    unknown = sorted(set(names) - set(QUEUE_NAMES))
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown queue(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(QUEUE_NAMES)}",
            param_hint="--queues",
        )
    configure_logging(settings.log_level, settings.log_json, libraries=True)
    # A job given up on leaves Celery with a Reject, which it logged as a
    # warning with a whole traceback (found by a trial), after our own
    # job.dead event had said it in a line. Its task failures that are not
    # ours to expect still come out, as errors.
    logging.getLogger("celery.app.trace").setLevel(logging.ERROR)
    if metrics_port:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        _serve_metrics(metrics_port, metrics_host, registry)
    broker = make_broker(settings)
    argv = [
        "worker",
        "--queues",
        ",".join(broker.topology.queues[name].name for name in names),
        "--loglevel",
        settings.log_level,
        "--without-mingle",
        "--without-gossip",
        "--hostname",
        f"petpal-{'-'.join(names)}@%h.{os.getpid()}",
    ]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    broker.celery.worker_main(argv)


def _serve_metrics(port: int, host: str, registry: Any = None) -> None:
    """Serve /metrics on ``port``; a port taken is said in one line, not a
    traceback (found by a trial: ninety lines ending in errno 98)."""
    from prometheus_client import REGISTRY, start_http_server

    try:
        start_http_server(port, host, registry=registry or REGISTRY)
    except OSError as exc:
        _fail(
            f"cannot serve metrics on {host}:{port} ({exc.strerror}); "
            "choose another port with --metrics-port, or 0 for none"
        )


def _fail(message: str, code: int = 2) -> NoReturn:
    """End the command with ``message`` on stderr, no traceback."""
    typer.echo(message, err=True)
    raise typer.Exit(code)


# How long the relay waits before asking a database that did not answer.
SCHEMA_RETRY_SECONDS = 5.0


async def _wait_for_schema(db: Database) -> None:
    """Return once the database answers with the schema; raise its own
    error if the schema is missing, which only `petpal migrate` mends (found
    by a trial: the relay logged the failing query every five seconds, for
    ever). A database that does not answer yet is waited for, as it may be
    starting beside the relay (found by the next trial: the relay exited)."""
    import structlog
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    log = structlog.get_logger("petpal.relay")
    while True:
        try:
            async with db.read_session() as session:
                await session.execute(text("SELECT 1 FROM outbox_jobs LIMIT 0"))
            return
        except DBAPIError as exc:
            detail = str(exc.orig if exc.orig is not None else exc)
            if _schema_missing(detail):
                await db.dispose()
                raise
        except OSError as exc:
            detail = str(exc) or type(exc).__name__
        log.warning(
            "relay.database_unavailable",
            error=_one_line(detail),
            retry_in_seconds=SCHEMA_RETRY_SECONDS,
        )
        await asyncio.sleep(SCHEMA_RETRY_SECONDS)


def _schema_missing(detail: str) -> bool:
    return "no such table" in detail or bool(
        re.search(r"relation \S+ does not exist", detail)
    )


def _require_secret_key(settings: Settings) -> None:
    # Found by a trial: the server said so at start-up, in a traceback.
    if missing := settings.secret_key_missing():
        _fail(f"petpal: {missing}")


def _require_broker(settings: Settings) -> None:
    if not settings.broker_url:
        _fail(
            "PETPAL_BROKER_URL is not set: jobs run inside `petpal serve` "
            "(embedded mode), so there is nothing for this command to do."
        )


@jobs_app.command("dead")
def jobs_dead(data_dir: DataDir = None) -> None:
    """List jobs that failed every attempt."""
    from petpal.platform.db import Database
    from petpal.platform.jobs import list_dead_jobs

    settings = _existing_settings(data_dir)

    async def run() -> None:
        db = Database(settings)
        if settings.broker_url:
            # What RabbitMQ dead-lettered joins the list first.
            from petpal.platform.broker import BrokerRelay, make_broker

            sweeper = BrokerRelay(settings, db, make_broker(settings))
            try:
                await sweeper.sweep_dead_letters()
            finally:
                await sweeper.close()
        rows = await list_dead_jobs(db)
        for row in rows:
            typer.echo(
                f"{row.id}  {row.kind}  attempts={row.attempts}  "
                f"{_one_line(row.last_error or '')}"
            )
        if not rows:
            typer.echo("no dead jobs")
        await db.dispose()

    asyncio.run(run())


@jobs_app.command("replay")
def jobs_replay(
    job_ids: Annotated[
        list[str] | None, typer.Argument(help="Ids; none means all.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Queue dead jobs again."""
    from petpal.platform.db import Database
    from petpal.platform.jobs import dead_among, replay_dead_jobs

    settings = _existing_settings(data_dir)

    async def run() -> tuple[int, list[str]]:
        db = Database(settings)
        try:
            # Named but not dead (a typo, a job replayed already): said, and
            # the command fails, rather than "0 job(s)" and success (found
            # by a trial).
            named = set(job_ids or ())
            unknown = sorted(named - await dead_among(db, named)) if named else []
            return await replay_dead_jobs(db, job_ids), unknown
        finally:
            await db.dispose()

    queued, unknown = asyncio.run(run())
    if queued or not unknown:  # not "0 job(s)" before the error
        typer.echo(f"{queued} job(s) queued again")
    if unknown:
        _fail(f"petpal jobs replay: not dead jobs: {' '.join(unknown)}", 1)


def _one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut at ``limit`` characters: a dead job's error
    may be a many-line dump (an object store's), and the list is one line a
    job (found by a trial)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@cache_app.command("clear")
def cache_clear(data_dir: DataDir = None) -> None:
    """Delete every key under PETPAL_CACHE_KEY_PREFIX in Redis (cache,
    timelines, trending, rate limits): after restoring the database from a
    backup, whose data the keys no longer describe."""
    from petpal.platform.redis_cache import clear_prefix

    settings = _settings(data_dir)
    if not settings.redis_url:
        _fail(
            "PETPAL_REDIS_URL is not set: the cache lives in each server "
            "process, and goes when it stops."
        )
    cleared = clear_prefix(settings)
    typer.echo(f"deleted {cleared} key(s) under {settings.cache_key_prefix!r}")


@media_app.command("sweep-uploads")
def media_sweep_uploads(data_dir: DataDir = None) -> None:
    """Delete raw uploads nothing needs any more (run it daily, e.g. from cron),
    and what killed processes left in this data directory's scratch folder."""
    from petpal.media.service import (
        SCRATCH_ABANDONED_SECONDS,
        do_sweep_uploads,
        sweep_scratch,
    )
    from petpal.platform.services import Services

    settings = _existing_settings(data_dir)

    async def run() -> str:
        services = Services.build(
            settings.model_copy(update={"run_jobs_in_process": False})
        )
        try:
            swept = await do_sweep_uploads(services)
        finally:
            await services.close()
        scratch = sweep_scratch(settings.data_dir / "tmp", SCRATCH_ABANDONED_SECONDS)
        return (
            f"{swept.deleted} of {swept.examined} stored upload(s) deleted; "
            f"{scratch} abandoned scratch file(s) deleted"
        )

    typer.echo(asyncio.run(run()))


def main() -> None:
    """The command, with a backend that cannot be used said in one line:
    a database, a Redis or a broker that does not answer, or a database
    without the schema, printed a traceback of hundreds of lines (found by
    a trial)."""
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import RedisError
    from sqlalchemy.exc import DBAPIError

    try:
        app()
    except datadir.DataDirInUseError as exc:
        typer.echo(f"petpal: {exc}", err=True)
        raise SystemExit(1) from None
    except DBAPIError as exc:
        _fail_backend("the database", exc.orig if exc.orig is not None else exc)
    except RedisError as exc:
        _fail_backend("Redis", exc)
    except BrokerError as exc:
        _fail_backend("the broker", exc)
    except OSError as exc:  # a connection refused, a folder not writable
        _fail_backend("a backend", exc)
    except Exception as exc:
        if _raised_by_the_cache(exc):
            _fail_backend("Redis", exc)
        raise


def _raised_by_the_cache(exc: Exception) -> bool:
    """Whether ``exc`` is the cache's ``CacheBackendError``, without importing
    ``petpal.platform.cache`` (a command that raised one has imported it).

    That module imports prometheus_client, which chooses between in-process
    and shared-file metrics as it is first imported, and ``worker`` and
    ``serve --workers`` must have said which first (found by the benchmark
    report: imported here, before the command ran, it left every job's
    metrics in the worker's child processes, and the worker's /metrics was
    empty).
    """
    cache = sys.modules.get("petpal.platform.cache")
    return cache is not None and isinstance(exc, cache.CacheBackendError)


def _fail_backend(what: str, exc: BaseException) -> NoReturn:
    detail = _one_line(str(exc) or type(exc).__name__)
    hint = ""
    if _schema_missing(detail):
        hint = " (no schema: `petpal migrate` makes it)"
    typer.echo(f"petpal: {what} failed: {detail}{hint}", err=True)
    raise SystemExit(1)
