"""Jobs through RabbitMQ and Celery, with real servers and real processes.

Each test declares its own exchanges and queues (a unique prefix) on the test
RabbitMQ and deletes them afterwards; ``petpal relay`` and ``petpal worker``
run as child processes in their own process groups, against the test's own
PostgreSQL database, and are stopped by process group id. The test that stops
RabbitMQ starts a private RabbitMQ node for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from amqp.exceptions import ChannelError
from fastapi import FastAPI
from kombu import Connection
from kombu.exceptions import OperationalError
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from petpal.media.models import FAILED, READY, Media
from petpal.media.service import PROCESS_JOB
from petpal.platform.broker import (
    BrokerRelay,
    Topology,
    make_broker,
)
from petpal.platform.db import Database
from petpal.platform.jobs import (
    DEAD,
    DONE,
    PENDING,
    QUEUED,
    DeliveryLimitReached,
    OutboxJob,
    enqueue,
    start_delivery,
)
from petpal.platform.settings import Settings
from tests.conftest import (
    BIN,
    PHOTOS,
    RUN_TAG,
    TEST_BROKER_URL,
    requires_broker,
    run_petpal,
    settings_env,
)
from tests.factories import User, a_user, an_uploaded_photo

pytestmark = [requires_broker, pytest.mark.timeout(240)]

SMALL_PHOTO = PHOTOS / "camera-exif" / "apple_iphone5_ori3_gps.jpg"
_prefixes = itertools.count()


class Child:
    """A ``petpal`` command in its own process group, with its output kept."""

    def __init__(self, settings: Settings, log: Path, *args: str) -> None:
        self.log = log
        self._out = log.open("ab")
        # Its temporary files where the test can see them.
        self.tmp = log.with_suffix(".tmp")
        self.tmp.mkdir()
        self.process = subprocess.Popen(
            [str(BIN / "petpal"), *args],
            env={**settings_env(settings), "TMPDIR": str(self.tmp)},
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the whole group: the worker and its pool processes."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int | None:
        """SIGTERM, as a deployment stops it; its exit status (None: killed)."""
        status: int | None = self.process.poll()
        if status is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                status = self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if not self._out.closed:
            self._out.close()
        return status

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


class Processes:
    """Starts relays and workers for one test; stops every one at the end."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        self.settings = settings
        self._folder = folder
        self._children: list[Child] = []
        self._count = itertools.count()

    def _start(self, *args: str) -> Child:
        log = self._folder / f"{args[0]}-{next(self._count)}.log"
        child = Child(self.settings, log, *args)
        self._children.append(child)
        return child

    def relay(self) -> Child:
        return self._start("relay", "--metrics-port", "0")

    def worker(
        self, queues: str = "media,notifications,default", metrics_port: int = 0
    ) -> Child:
        child = self._start(
            "worker",
            "--queues",
            queues,
            "--concurrency",
            "1",
            "--metrics-port",
            str(metrics_port),
        )
        wait_for_consumers(self.settings, queues.split(","), child)
        return child

    def stop_all(self) -> None:
        for child in self._children:
            child.stop()

    def report(self) -> str:
        return "\n".join(f"--- {c.log.name}\n{c.output()}" for c in self._children)


def wait_for_consumers(settings: Settings, names: list[str], child: Child) -> None:
    """Wait until ``child`` consumes every queue in ``names`` (it is ready)."""
    topology = Topology(settings)
    deadline = time.monotonic() + 60
    with Connection(settings.broker_url, connect_timeout=5) as connection:
        while time.monotonic() < deadline:
            assert child.process.poll() is None, child.output()
            # A channel per look: asking for a queue not yet declared closes it.
            with connection.channel() as channel:
                try:
                    consumers = [
                        channel.queue_declare(
                            queue=topology.queues[name].name, passive=True
                        ).consumer_count
                        for name in names
                    ]
                except ChannelError:
                    consumers = [0]
            if all(consumers):
                return
            time.sleep(0.2)
    raise AssertionError(f"the worker never consumed {names}:\n{child.output()}")


@pytest.fixture
def settings(settings: Settings, broker_url: str) -> Iterator[Settings]:
    """The test's settings with a broker and a prefix of its own.

    Overrides the suite's ``settings``, so its ``app`` and ``client`` serve
    with the broker (and run no jobs in process).
    """
    configured = settings.model_copy(
        update={
            "broker_url": broker_url,
            "broker_prefix": f"petpal-test.{RUN_TAG}.{next(_prefixes)}.",
            "job_retry_base_seconds": 0.05,
            "job_max_attempts": 3,
            "relay_poll_seconds": 0.05,
            "broker_requeue_pause_seconds": 0.2,
            "broker_timeout_seconds": 2.0,
        }
    )
    yield configured
    try:
        with Connection(broker_url, connect_timeout=5) as connection:
            Topology(configured).delete(connection)
    except (OSError, OperationalError):
        pass  # a private node already stopped: its data dir goes with it


@pytest.fixture
def broker_url(request: pytest.FixtureRequest) -> str:
    """The test RabbitMQ, or a private node for tests that stop it."""
    if request.node.get_closest_marker("private_rabbit") is not None:
        node: PrivateRabbit = request.getfixturevalue("private_rabbit")
        return node.url
    return TEST_BROKER_URL


@pytest.fixture
def processes(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    running = Processes(settings, tmp_path)
    yield running
    running.stop_all()


async def upload(client: httpx.AsyncClient, user: User, path: Path) -> str:
    """Upload ``path``: 202, and the job is the workers' (nothing runs here)."""
    media_id: str = (await an_uploaded_photo(client, user, path))["id"]
    return media_id


async def outbox_rows(db: Database) -> list[OutboxJob]:
    async with db.read_session() as session:
        return list((await session.scalars(select(OutboxJob))).all())


async def photo_jobs(db: Database) -> list[OutboxJob]:
    """The media.process rows: a photo's death adds a media.discard_upload."""
    return [row for row in await outbox_rows(db) if row.kind == PROCESS_JOB]


async def wait_until(
    check: Any, what: str, processes: Processes, seconds: float = 90
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{processes.report()}")


async def all_ready(db: Database, media_ids: list[str]) -> bool:
    """Every photo ready and every photo job's outcome recorded (it comes last)."""
    async with db.read_session() as session:
        rows = (
            await session.scalars(select(Media).where(Media.id.in_(media_ids)))
        ).all()
        unfinished = await session.scalar(
            select(OutboxJob.id)
            .where(OutboxJob.kind == PROCESS_JOB, OutboxJob.status != DONE)
            .limit(1)
        )
    ready = len(rows) == len(media_ids) and all(m.status == READY for m in rows)
    return ready and unfinished is None


async def all_done(db: Database, media_ids: list[str]) -> bool:
    """The photos are ready and every photo job is recorded as done.

    The job marks its photo ready and only then returns for the worker to
    record the job done: a check between the two sees a ready photo whose
    job is still running.
    """
    if not await all_ready(db, media_ids):
        return False
    return all(row.status == DONE for row in await photo_jobs(db))


async def media_of(db: Database, media_id: str) -> Media:
    async with db.read_session() as session:
        media = await session.get(Media, media_id)
    assert media is not None
    return media


def stored_files(settings: Settings, media_id: str) -> list[str]:
    folder = settings.media_dir / "media" / media_id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def db_of(app: FastAPI) -> Database:
    db: Database = app.state.services.db
    return db


# --- the relay and the worker, end to end -------------------------------------------


async def test_photos_are_processed_by_workers_through_rabbitmq(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    processes: Processes,
) -> None:
    db = db_of(app)
    assert app.state.services.relay is None  # nothing runs in process
    user = await a_user(client)
    relay = processes.relay()
    metrics_port = free_port()
    worker = processes.worker("media", metrics_port=metrics_port)
    media_ids = [await upload(client, user, SMALL_PHOTO) for _ in range(3)]

    await wait_until(lambda: all_done(db, media_ids), "photos ready", processes)
    # The jobs' metrics, counted in the worker's child process, are in its
    # /metrics (found by the benchmark report: it was empty, the metrics
    # library having been imported before the command chose shared files).
    async with httpx.AsyncClient() as scraper:
        text = (await scraper.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    runs = {
        (s.labels.get("kind"), s.labels.get("outcome")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "petpal_jobs_total"
    }
    assert runs.get(("media.process", "done")) == 3, text[:2000]
    # A stop is clean: both exit 0 (the relay once crashed closing its listener).
    assert relay.stop() == 0, relay.output()
    assert worker.stop() == 0, worker.output()

    rows = await outbox_rows(db)
    assert (
        sorted((r.kind, r.status, r.attempts) for r in rows)
        == [("media.process", DONE, 1)] * 3
    )
    for media_id in media_ids:
        files = stored_files(settings, media_id)
        assert len(files) == 3, files  # small, medium and large
    # The raw uploads are gone, and the folders they were in with them.
    assert not (settings.media_dir / "incoming").exists()


async def test_a_failing_job_retries_is_dead_lettered_and_replays(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    processes: Processes,
) -> None:
    db = db_of(app)
    storage = app.state.services.storage
    user = await a_user(client)
    # No relay yet: the job waits in the outbox while its upload disappears,
    # as it would in a storage outage.
    media_id = await upload(client, user, SMALL_PHOTO)
    incoming = f"incoming/{media_id}"
    original = await storage.get_bytes(incoming)
    await storage.delete(incoming)
    processes.relay()
    worker = processes.worker("media")

    async def dead() -> bool:
        return [r.status for r in await photo_jobs(db)] == [DEAD]

    await wait_until(dead, "the job to die", processes)
    (row,) = await photo_jobs(db)
    assert row.attempts == settings.job_max_attempts
    assert row.last_error
    # Each attempt and the death are in the worker's log (found by a trial:
    # Celery's redirected stdout swallowed every line the job logged).
    log = worker.log.read_text(errors="replace").splitlines()
    failed = [line for line in log if "job.failed" in line and row.id in line]
    assert len(failed) == settings.job_max_attempts, processes.report()
    assert [line for line in log if "job.dead" in line and row.id in line]
    # Said in those lines; Celery's own report of the Reject, a traceback,
    # is not repeated after them (found by a trial).
    assert not [line for line in log if "Traceback" in line or "Reject(" in line]
    # Its metrics folder is made at start, and removed when it stops (found
    # by a trial: every start left one behind in /tmp).
    made = [p.name for p in worker.tmp.iterdir()]
    assert [name for name in made if name.startswith("petpal-metrics-")], made
    assert worker.stop() == 0
    assert list(worker.tmp.iterdir()) == []
    worker = processes.worker("media")
    # The owner's app sees the photo failed, not processing forever.
    media = await media_of(db, media_id)
    assert (media.status, media.failure_reason) == (
        FAILED,
        f"processing failed after {settings.job_max_attempts} attempts",
    )
    listed = run_cli(settings, "jobs", "dead")
    assert row.id in listed.stdout, listed

    # The operator brings the file back and replays the job.
    await storage.put(incoming, original, "image/jpeg")
    replayed = run_cli(settings, "jobs", "replay", row.id)
    assert "1 job(s) queued again" in replayed.stdout, replayed
    await wait_until(lambda: all_done(db, [media_id]), "replayed photo", processes)
    (row,) = await photo_jobs(db)
    assert (row.status, row.attempts) == (DONE, 1)


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_petpal(settings, *args)
    assert result.returncode == 0, result
    return result


async def test_a_worker_killed_mid_photo_leaves_the_job_to_finish_once(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    processes: Processes,
) -> None:
    db = db_of(app)
    user = await a_user(client)
    processes.relay()
    first = processes.worker("media")
    # The largest photo we have: several hundred milliseconds of work.
    heic = PHOTOS / "edge-cases" / "heic_iphone8_gps.heic"
    media_id = await upload(client, user, heic)

    async def running() -> bool:
        return [r.status for r in await outbox_rows(db)] == ["running"]

    await wait_until(running, "the worker to start the job", processes)
    first.kill()  # SIGKILL to the worker and its pool: no clean-up at all
    async with db.read_session() as session:
        media = await session.get(Media, media_id)
    assert media is not None
    assert media.status != READY, "the job ended before the kill; use a larger photo"

    processes.worker("media")  # RabbitMQ delivers the unacknowledged job again
    await wait_until(lambda: all_done(db, [media_id]), "photo ready", processes)

    (row,) = await outbox_rows(db)
    assert (row.status, row.attempts) == (DONE, 2)
    async with db.read_session() as session:
        media = await session.get(Media, media_id)
    assert media is not None
    names = sorted(Path(v["key"]).name for v in media.variants)
    assert stored_files(settings, media_id) == names  # one set, no strays


# --- RabbitMQ stopped while people upload ------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateRabbit:
    """A RabbitMQ node of this test's own: its data dir, ports and cookie."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        name = f"petpaltest{os.getpid()}x{self.port}"
        (folder / "plugins").write_text("[].\n")
        self.env = dict(
            os.environ,
            HOME=str(folder),
            RABBITMQ_NODENAME=f"{name}@localhost",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_MNESIA_BASE=str(folder / "mnesia"),
            RABBITMQ_LOG_BASE=str(folder / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(folder / "plugins"),
            RABBITMQ_PID_FILE=str(folder / "node.pid"),
            RABBITMQ_CONFIG_FILE=str(folder / "no-config"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(folder / "no-advanced-config"),
        )
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self._launcher: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        (self.folder / "node.pid").unlink(missing_ok=True)
        with (self.folder / "server.log").open("ab") as out:
            self._launcher = subprocess.Popen(
                [str(rabbitmq_server())],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with Connection(self.url, connect_timeout=1) as connection:
                    connection.ensure_connection(max_retries=1)
                    return
            except Exception:
                assert self._launcher.poll() is None, self.log()
                time.sleep(0.3)
        raise AssertionError(f"private RabbitMQ did not start\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM to the node's own process: a clean broker shutdown."""
        if self._launcher is None:
            return
        pid_file = self.folder / "node.pid"
        if pid_file.exists() and pid_file.read_text().strip():
            pid = int(pid_file.read_text().strip())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            self._launcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self._launcher.pid, signal.SIGKILL)
            self._launcher.wait(timeout=10)
        self._launcher = None

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def rabbitmq_server() -> Path | None:
    """The server script itself, not Debian's wrapper around it.

    The wrapper (a link into the script's folder) switches to the rabbitmq
    user, who may not enter the test's private folder.
    """
    found = shutil.which("rabbitmq-server")
    if found is None:
        return None
    beside_target = Path(os.path.realpath(found)).parent / "rabbitmq-server"
    return beside_target if beside_target.exists() else Path(found)


@pytest.fixture
def private_rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbit]:
    if rabbitmq_server() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("rabbitmq-server is not installed (CI needs it)")
        pytest.skip("rabbitmq-server is not installed")
    node = PrivateRabbit(tmp_path_factory.mktemp("rabbit"))
    node.start()
    yield node
    node.stop()


@pytest.mark.private_rabbit
async def test_uploads_are_accepted_while_rabbitmq_is_down_and_run_once_after(
    private_rabbit: PrivateRabbit,
    app: FastAPI,
    client: httpx.AsyncClient,
    processes: Processes,
) -> None:
    db = db_of(app)
    user = await a_user(client)
    processes.relay()
    processes.worker("media")
    before = [await upload(client, user, SMALL_PHOTO)]
    await wait_until(lambda: all_done(db, before), "the first photo", processes)

    private_rabbit.stop()
    during = []
    for _ in range(5):
        started = time.perf_counter()
        during.append(await upload(client, user, SMALL_PHOTO))
        # The request never waits for the broker (the outbox has the job):
        # far below the time a publish would spend finding RabbitMQ gone.
        assert time.perf_counter() - started < 2.0
    await asyncio.sleep(1.0)  # the relay tries and fails meanwhile
    statuses = {r.status for r in await outbox_rows(db) if r.status != DONE}
    assert statuses == {PENDING}

    private_rabbit.start()
    await wait_until(lambda: all_done(db, during), "photos after the outage", processes)
    rows = await outbox_rows(db)
    assert sorted((r.status, r.attempts) for r in rows) == [(DONE, 1)] * 6


# --- relay and delivery rules, without worker processes ------------------------------


async def test_the_relay_publishes_with_confirms_into_a_queue_per_kind(
    app: FastAPI, settings: Settings
) -> None:
    db = db_of(app)
    async with db.write_session() as session:
        for kind in ("media.process", "notifications.push", "social.recount"):
            enqueue(session, kind, {})
    relay = BrokerRelay(settings, db, make_broker(settings))
    try:
        assert await relay.publish_due() == 3
        assert await relay.publish_due() == 0
        depths = await relay._in_io_thread(relay._queue_depths)
    finally:
        await relay.close()
    assert {name: ready for name, (ready, _) in depths.items()} == {
        "media": 1,
        "notifications": 1,
        "default": 1,
        "dead": 0,
    }
    assert {r.status for r in await outbox_rows(db)} == {QUEUED}


async def test_a_dead_letter_joins_the_outbox_dead_list(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    db = db_of(app)
    media_id = await upload(client, await a_user(client), SMALL_PHOTO)
    (job,) = await outbox_rows(db)
    job_id = job.id
    broker = make_broker(settings)
    relay = BrokerRelay(settings, db, broker)
    try:
        await relay.publish_due()
        # What RabbitMQ does past the delivery limit: the message moves to
        # the dead-letter exchange with its headers.
        with Connection(settings.broker_url) as connection:
            queue = broker.topology.queues["media"](connection.default_channel)
            message = queue.get(no_ack=False)
            assert message is not None
            message.reject(requeue=False)

        async def swept() -> int:
            return await relay.sweep_dead_letters()

        deadline = time.monotonic() + 10
        moved = 0
        while not moved and time.monotonic() < deadline:
            moved = await swept()
            await asyncio.sleep(0.05)
    finally:
        await relay.close()
    assert moved == 1
    (row,) = await photo_jobs(db)
    assert (row.id, row.status) == (job_id, DEAD)
    assert row.last_error == "dead-lettered by RabbitMQ (rejected)"
    media = await media_of(db, media_id)
    assert (media.status, media.failure_reason) == (
        FAILED,
        "processing failed after 0 attempts",
    )


async def test_each_start_counts_and_the_delivery_limit_ends_a_crash_loop(
    app: FastAPI,
) -> None:
    db = db_of(app)
    async with db.write_session() as session:
        job_id = enqueue(session, "media.process", {"media_id": "x"})
    # Three workers take the job and die before recording an outcome.
    for attempt in (1, 2, 3):
        delivery = await start_delivery(db, job_id, max_attempts=3)
        assert delivery is not None
        assert delivery.attempt == attempt
    with pytest.raises(DeliveryLimitReached):
        await start_delivery(db, job_id, max_attempts=3)
    (row,) = await outbox_rows(db)
    assert row.status == DEAD
    assert "delivery limit" in (row.last_error or "")
    # A late duplicate of the message finds nothing to do.
    assert await start_delivery(db, job_id, max_attempts=3) is None


def test_a_metrics_port_taken_is_said_in_one_line(settings: Settings) -> None:
    """Found by a trial: a relay or worker whose metrics port was taken
    printed a traceback of some ninety lines."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for command in (["relay"], ["worker", "--queues", "default"]):
            done = run_petpal(settings, *command, "--metrics-port", port)
            assert done.returncode == 2, done
            assert done.stderr.strip().startswith("cannot serve metrics"), done
            assert "Traceback" not in done.stderr + done.stdout
            assert "--metrics-port" in done.stderr
