"""Jobs over RabbitMQ: the outbox relay publishes them, Celery workers run them.

Used when ``PETPAL_BROKER_URL`` is set. Nothing publishes from a request: a
use case writes its job to the outbox (platform/jobs.py) in its own
transaction, and ``petpal relay`` hands due rows to RabbitMQ, each publish
confirmed by the broker before the row is marked ``queued``. A crash between
the two publishes the row again; jobs are idempotent, so that is harmless.

Topology (every name starts with ``broker_prefix``, "petpal." by default):

- exchange ``jobs`` (direct, durable) routing to three durable quorum queues,
  ``media``, ``notifications`` and ``default``, so each kind of work scales on
  its own (``petpal worker --queues media``);
- each queue dead-letters to exchange ``dead`` (fanout) and queue ``dead``:
  RabbitMQ does so itself once a message has been delivered
  ``broker_delivery_limit`` times (a poison message that kills every worker),
  and workers reject there a job that has failed ``job_max_attempts`` times.

Workers acknowledge a message only after the job's outcome is recorded, so a
worker killed mid-job loses nothing: RabbitMQ delivers the message again. A
failed attempt is recorded as ``pending`` with a back-off and published again
by the relay when due; the outbox counts attempts, so a job whose worker dies
every time is marked dead after ``job_max_attempts`` starts. The relay moves
whatever reaches the ``dead`` queue into the outbox's dead list, where
``petpal jobs dead`` lists it and ``petpal jobs replay`` queues it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

import structlog
from celery import Celery
from celery.exceptions import Reject
from celery.signals import worker_process_shutdown
from celery.worker.consumer import Consumer
from kombu import Connection, Exchange, Queue
from prometheus_client import Counter, Gauge
from sqlalchemy import or_, select, update

from petpal.platform.db import OUTBOX_CHANNEL, Database, utcnow
from petpal.platform.errors import backend_unavailable
from petpal.platform.jobs import (
    DEAD,
    DONE,
    PENDING,
    PHOTO_FAMILY,
    QUEUED,
    RUNNING,
    DeliveryLimitReached,
    OutboxJob,
    declare_dead,
    refresh_outbox_gauges,
    run_job,
    start_delivery,
)
from petpal.platform.settings import Settings

log = structlog.get_logger(__name__)

TASK_NAME = "petpal.run_job"
QUEUE_NAMES = (PHOTO_FAMILY, "notifications", "default")

PUBLISHED = Counter(
    "petpal_jobs_published_total", "Jobs the relay handed to RabbitMQ", ["queue"]
)
PUBLISH_FAILURES = Counter(
    "petpal_relay_publish_failures_total", "Batches RabbitMQ did not confirm"
)
DEAD_LETTERS = Counter(
    "petpal_dead_letters_total", "Messages moved from the dead-letter queue"
)
QUEUE_DEPTH = Gauge(
    "petpal_queue_depth",
    "Messages ready in a RabbitMQ job queue",
    ["queue"],
    multiprocess_mode="mostrecent",
)
QUEUE_CONSUMERS = Gauge(
    "petpal_queue_consumers",
    "Workers consuming a RabbitMQ job queue",
    ["queue"],
    multiprocess_mode="mostrecent",
)


def queue_for(kind: str) -> str:
    """The queue of a job kind: its family when that has a queue, else default."""
    family = kind.split(".", 1)[0]
    return family if family in QUEUE_NAMES else "default"


class Topology:
    """Exchanges and queues of one deployment (names carry the prefix)."""

    def __init__(self, settings: Settings) -> None:
        prefix = settings.broker_prefix
        self.exchange = Exchange(f"{prefix}jobs", type="direct", durable=True)
        self.dead_exchange = Exchange(f"{prefix}dead", type="fanout", durable=True)
        arguments = {
            "x-queue-type": "quorum",
            "x-delivery-limit": settings.broker_delivery_limit,
            "x-dead-letter-exchange": self.dead_exchange.name,
        }
        self.queues = {
            name: Queue(
                f"{prefix}{name}",
                self.exchange,
                routing_key=name,
                durable=True,
                queue_arguments=arguments,
            )
            for name in QUEUE_NAMES
        }
        self.dead = Queue(
            f"{prefix}dead",
            self.dead_exchange,
            durable=True,
            queue_arguments={"x-queue-type": "quorum"},
        )

    def all_queues(self) -> list[Queue]:
        return [*self.queues.values(), self.dead]

    def declare(self, connection: Connection) -> None:
        channel = connection.default_channel
        for queue in self.all_queues():
            queue(channel).declare()

    def delete(self, connection: Connection) -> None:
        """Remove every queue and exchange (tests clean up with this)."""
        channel = connection.default_channel
        for queue in self.all_queues():
            queue(channel).delete()
        self.exchange(channel).delete()
        self.dead_exchange(channel).delete()


@dataclass(frozen=True)
class JobBroker:
    """A deployment's queues and the Celery app that publishes to and reads them."""

    topology: Topology
    celery: Celery


def make_broker(settings: Settings) -> JobBroker:
    """Late acks, publisher confirms, one job at a time per worker process."""
    topology = Topology(settings)
    app = Celery("petpal", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_queues=list(topology.queues.values()),
        task_default_queue=topology.queues["default"].name,
        task_default_exchange=topology.exchange.name,
        task_default_routing_key="default",
        task_create_missing_queues=False,
        # Acknowledge after the outcome is recorded; a worker that dies (even
        # a child killed by the OOM killer) leaves the message to be redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A job running when the broker connection drops finishes and records
        # its outcome; the redelivered message then finds it done and is
        # skipped. Cancelling it instead would throw the work away.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_ignore_result=True,
        # Every publish waits for the broker's ack; the relay's own loop
        # retries, so Celery's publish retries are off.
        broker_transport_options={"confirm_publish": True},
        task_publish_retry=False,
        broker_connection_timeout=settings.broker_timeout_seconds,
        broker_connection_retry_on_startup=True,
        broker_heartbeat=30,
        worker_hijack_root_logger=False,
        # Celery points a worker's stdout at a logger of its own, and our
        # events (printed to stdout) went through it back to our handler on
        # that same stdout, which Celery then dropped as a loop: no job's
        # line reached the output (found by a trial). Stdout stays stdout.
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_consumer="petpal.platform.broker:JobConsumer",
    )

    @app.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
    def run(job_id: str, kind: str) -> str:
        return _execute(settings, job_id)

    return JobBroker(topology, app)


# --- the worker side --------------------------------------------------------------


class JobConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer without "native delayed delivery".

    Celery adds that step whenever it sees quorum queues, and it declares
    some thirty exchanges and queues of its own in the virtual host. Our
    retries wait in the outbox, never in the broker, so it has nothing to do.
    """

    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        default_steps: ClassVar[list[str]] = [
            step
            for step in Consumer.Blueprint.default_steps
            if not step.endswith(":DelayedDelivery")
        ]


@dataclass
class _WorkerRuntime:
    """One event loop and one set of platform parts per worker process."""

    pid: int
    loop: asyncio.AbstractEventLoop
    services: Any


_runtime: _WorkerRuntime | None = None


def _runtime_for(settings: Settings) -> _WorkerRuntime:
    global _runtime
    # A prefork child inherits the parent's module state: build its own.
    if _runtime is None or _runtime.pid != os.getpid():
        from petpal.platform.services import Services, import_task_modules

        import_task_modules()
        loop = asyncio.new_event_loop()
        services = Services.build(settings)
        _runtime = _WorkerRuntime(os.getpid(), loop, services)
    return _runtime


@worker_process_shutdown.connect(weak=False, dispatch_uid="petpal-close-runtime")  # type: ignore[untyped-decorator]
def close_worker_runtime(**_: Any) -> None:
    """Close the process's pools when its worker process ends."""
    global _runtime
    if _runtime is not None and _runtime.pid == os.getpid():
        _runtime.loop.run_until_complete(_runtime.services.close())
        _runtime.loop.close()
    _runtime = None


def _execute(settings: Settings, job_id: str) -> str:
    """The synchronous task body: one delivery of one outbox job."""
    runtime = _runtime_for(settings)
    try:
        delivery = runtime.loop.run_until_complete(
            start_delivery(runtime.services.db, job_id, settings.job_max_attempts)
        )
        if delivery is None:
            return "skipped"  # finished by an earlier delivery
        outcome = runtime.loop.run_until_complete(
            run_job(
                runtime.services,
                delivery,
                max_attempts=settings.job_max_attempts,
                retry_base_seconds=settings.job_retry_base_seconds,
            )
        )
    except DeliveryLimitReached as exc:
        raise Reject(str(exc), requeue=False) from exc
    except Exception as exc:
        if backend_unavailable(exc) is None:
            raise
        # The database is down: give the message back after a pause, so the
        # job runs when it returns. RabbitMQ counts these deliveries too.
        log.warning("job.database_unavailable", job_id=job_id, error=str(exc))
        time.sleep(settings.broker_requeue_pause_seconds)
        raise Reject("database unavailable", requeue=True) from exc
    if outcome == "dead":
        raise Reject(f"job {job_id} failed every attempt", requeue=False)
    return outcome


# --- the relay ----------------------------------------------------------------------


class BrokerRelay:
    """Hands due outbox rows to RabbitMQ and keeps the dead list in the outbox."""

    def __init__(self, settings: Settings, db: Database, broker: JobBroker) -> None:
        self._settings = settings
        self._db = db
        self._app = broker.celery
        self._topology = broker.topology
        # Broker I/O is blocking (kombu); one thread keeps it in order.
        self._io = ThreadPoolExecutor(1, thread_name_prefix="petpal-relay-io")
        self._connection: Connection | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._declared = False

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Publish, sweep and measure until :meth:`stop`; survives outages."""
        next_reclaim = next_sweep = 0.0
        failures = 0
        while not self._stopping:
            try:
                now = time.monotonic()
                if now >= next_reclaim:
                    await self.reclaim()
                    next_reclaim = now + 60.0
                if now >= next_sweep:
                    await self.sweep_dead_letters()
                    await self.measure()
                    next_sweep = now + 5.0
                while await self.publish_due() == self._settings.relay_batch_size:
                    pass  # a full batch: there may be more right away
                failures = 0
            except Exception as exc:
                failures += 1
                self._drop_connection()
                log.warning("relay.error", error=str(exc) or type(exc).__name__)
            # After errors, wait longer each time (up to 5 s): the broker or
            # the database is down, and retrying at once only adds load.
            pause = self._settings.relay_poll_seconds
            if failures:
                pause = min(5.0, pause * 2**failures)
            await self._sleep(pause)
        await self.close()

    async def close(self) -> None:
        """Close the broker connection and its thread."""
        await self._in_io_thread(self._drop_connection)
        self._io.shutdown(wait=True)

    async def _sleep(self, seconds: float) -> None:
        waiter = asyncio.ensure_future(self._wake.wait())
        done, _ = await asyncio.wait({waiter}, timeout=seconds)
        if not done:
            waiter.cancel()
        self._wake.clear()

    async def _in_io_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def publish_due(self) -> int:
        """Publish one batch of due rows; returns how many were published.

        The rows stay locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
        several relays share the work) until the broker has confirmed every
        message; if a publish fails the transaction rolls back and the rows
        stay pending.
        """
        now = utcnow()
        async with self._db.write_session() as session:
            rows = (
                await session.scalars(
                    select(OutboxJob)
                    .where(OutboxJob.status == PENDING, OutboxJob.available_at <= now)
                    .order_by(OutboxJob.available_at, OutboxJob.id)
                    .limit(self._settings.relay_batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            try:
                await self._in_io_thread(
                    self._publish, [(row.id, row.kind) for row in rows]
                )
            except Exception:
                PUBLISH_FAILURES.inc()
                raise
            requeue_at = now + timedelta(
                seconds=self._settings.job_requeue_after_seconds
            )
            for row in rows:
                row.status = QUEUED
                row.available_at = requeue_at
        return len(rows)

    def _connect(self) -> Connection:
        if self._connection is None:
            connection = self._app.connection_for_write()
            connection.ensure_connection(max_retries=1)
            self._connection = connection
        if not self._declared:
            self._topology.declare(self._connection)
            self._declared = True
        return self._connection

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._declared = False
        if connection is not None:
            # A connection that died with the broker may fail to close.
            with contextlib.suppress(Exception):
                connection.release()

    def _publish(self, jobs: Iterable[tuple[str, str]]) -> None:
        connection = self._connect()
        with self._app.producer_or_acquire(
            self._app.amqp.Producer(connection)
        ) as producer:
            for job_id, kind in jobs:
                queue = queue_for(kind)
                # confirm_publish: this returns once RabbitMQ has the message.
                self._app.send_task(
                    TASK_NAME,
                    args=[job_id, kind],
                    task_id=job_id,
                    queue=self._topology.queues[queue],
                    routing_key=queue,
                    producer=producer,
                    retry=False,
                )
                PUBLISHED.labels(queue).inc()

    async def reclaim(self) -> None:
        """Publish again what the broker or a worker lost track of.

        A ``running`` row whose lease ended belongs to a worker that died with
        its message already acknowledged elsewhere; a ``queued`` row past
        ``job_requeue_after_seconds`` was lost by the broker.
        """
        now = utcnow()
        async with self._db.write_session() as session:
            await session.execute(
                update(OutboxJob)
                .where(
                    or_(OutboxJob.status == RUNNING, OutboxJob.status == QUEUED),
                    OutboxJob.available_at <= now,
                )
                .values(status=PENDING, available_at=now)
            )

    async def sweep_dead_letters(self) -> int:
        """Move messages from the dead-letter queue into the outbox's dead list."""
        letters: list[tuple[str, str, Any]] = await self._in_io_thread(
            self._fetch_dead_letters
        )
        if not letters:
            return 0
        async with self._db.write_session() as session:
            for job_id, reason, _ in letters:
                # Locked, so a worker recording an outcome meanwhile either
                # goes first (and the row is done) or waits for the verdict.
                row = await session.get(OutboxJob, job_id, with_for_update=True)
                if row is None or row.status in (DONE, DEAD):
                    continue
                await declare_dead(
                    session, row, f"dead-lettered by RabbitMQ ({reason})"
                )
        # Acknowledged only once the outbox has them: a crash here keeps them.
        await self._in_io_thread(lambda: [m.ack() for _, _, m in letters])
        DEAD_LETTERS.inc(len(letters))
        log.info("relay.dead_letters_moved", count=len(letters))
        return len(letters)

    def _fetch_dead_letters(self, limit: int = 500) -> list[tuple[str, str, Any]]:
        connection = self._connect()
        queue = self._topology.dead(connection.default_channel)
        letters: list[tuple[str, str, Any]] = []
        while len(letters) < limit:
            message = queue.get(no_ack=False)
            if message is None:
                break
            headers = message.headers or {}
            job_id = headers.get("id")
            if not isinstance(job_id, str):
                message.ack()  # not one of ours; nothing to record
                continue
            reason = str(headers.get("x-first-death-reason", "rejected"))
            letters.append((job_id, reason, message))
        return letters

    async def measure(self) -> None:
        """Queue depths and consumers from RabbitMQ, backlog from the outbox."""
        depths = await self._in_io_thread(self._queue_depths)
        for name, (ready, consumers) in depths.items():
            QUEUE_DEPTH.labels(name).set(ready)
            QUEUE_CONSUMERS.labels(name).set(consumers)
        await refresh_outbox_gauges(self._db)

    def _queue_depths(self) -> dict[str, tuple[int, int]]:
        channel = self._connect().default_channel
        depths = {}
        queues = [*self._topology.queues.items(), ("dead", self._topology.dead)]
        for name, queue in queues:
            _, ready, consumers = channel.queue_declare(queue=queue.name, passive=True)
            depths[name] = (ready, consumers)
        return depths


async def listen_for_jobs(
    db: Database, relay: BrokerRelay
) -> Callable[[], Awaitable[None]] | None:
    """Wake ``relay`` on each PostgreSQL NOTIFY a job commit sends, if possible.

    Returns the function that stops listening (call it on shutdown), or None
    on SQLite, where the relay polls. Polling continues either way, so a lost
    notification only delays a job by one poll.
    """
    if db.is_sqlite:
        return None
    raw = await db.engine.raw_connection()
    driver = raw.driver_connection
    assert driver is not None

    def wake(*_: object) -> None:
        relay.wake()

    await driver.add_listener(OUTBOX_CHANNEL, wake)

    async def stop() -> None:
        # The connection may have died with a database restart meanwhile.
        with contextlib.suppress(Exception):
            await driver.remove_listener(OUTBOX_CHANNEL, wake)
        raw.invalidate()  # never back to the pool with a listener on it

    return stop
