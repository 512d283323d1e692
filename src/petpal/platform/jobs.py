"""Background jobs through a transactional outbox.

A use case that implies background work calls :func:`enqueue` with the same
session that writes its change, so the job row and the change commit (or roll
back) together: no job is lost and none runs for a change that never
happened. The embedded relay below then claims due rows, runs their handlers
and records the outcome; in distributed mode the relay in
:mod:`petpal.platform.broker` publishes the rows to RabbitMQ instead, and
Celery workers run the same handlers through :func:`start_delivery` and
:func:`run_job`.

A row's life: ``pending`` (due at ``available_at``) → ``queued`` (handed to
the broker; distributed mode only) → ``running`` (an attempt holds a lease
until ``available_at``) → ``done``, or ``pending`` again after a failure (a
retry with back-off), or ``dead`` after ``job_max_attempts`` attempts.

A job kind whose death would leave something a user sees half done (a photo
``processing`` forever) registers an :func:`on_dead` hook beside its handler;
whichever runner declares the job dead runs it in the same transaction.

Handlers must be idempotent: after a crash a job may run a second time. A
database that is down or restarting is not a crash: the runner waits for it,
and a job that finished meanwhile has its outcome recorded once the database
is back, so it does not run again.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import (
    JSON,
    ColumnElement,
    Insert,
    Integer,
    Select,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from petpal.platform.db import (
    JOBS_ENQUEUED,
    Base,
    Database,
    UTCDateTime,
    rowcount,
    utcnow,
)
from petpal.platform.errors import backend_unavailable
from petpal.platform.ids import new_id

log = structlog.get_logger(__name__)

JOB_RUNS = Counter(
    "petpal_jobs_total",
    "Finished job attempts by kind and outcome",
    ["kind", "outcome"],
)
JOB_SECONDS = Histogram(
    "petpal_job_duration_seconds", "Time a job attempt took", ["kind"]
)
# Facts of the database, read by whichever process answers /metrics: with
# several processes, the most recent reading is the one shown.
OUTBOX_BACKLOG = Gauge(
    "petpal_outbox_backlog",
    "Jobs waiting in the outbox",
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_AGE = Gauge(
    "petpal_outbox_oldest_age_seconds",
    "Age of the oldest job waiting in the outbox",
    multiprocess_mode="mostrecent",
)
DEAD_JOBS = Gauge(
    "petpal_dead_jobs",
    "Jobs that failed every attempt, waiting for an operator",
    multiprocess_mode="mostrecent",
)

PENDING, QUEUED, RUNNING, DONE, DEAD = "pending", "queued", "running", "done", "dead"
# The family of the photo jobs (``media.process`` …), slow next to every other:
# the broker gives them a queue of their own (broker.queue_for), and the
# embedded relay runs the others first.
PHOTO_FAMILY = "media"
LEASE = timedelta(minutes=5)
# Between attempts to record an outcome while the database is away: doubling
# from the first to the last figure, in seconds.
OUTCOME_RETRY_SECONDS = (0.1, 2.0)


class OutboxJob(Base):
    __tablename__ = "outbox_jobs"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


@dataclass(frozen=True)
class JobContext:
    """What a handler may use: the platform parts, never a request."""

    services: Any  # petpal.platform.app.Services; Any avoids an import cycle
    job_id: str
    attempt: int


Handler = Callable[[JobContext, dict[str, Any]], Awaitable[None]]
_handlers: dict[str, Handler] = {}


def job(kind: str) -> Callable[[Handler], Handler]:
    """Register ``fn`` as the handler of jobs of ``kind``."""

    def register(fn: Handler) -> Handler:
        if kind in _handlers and _handlers[kind] is not fn:
            raise RuntimeError(f"two handlers for job kind {kind!r}")
        _handlers[kind] = fn
        return fn

    return register


@dataclass(frozen=True)
class DeadJob:
    """A job being declared dead, as its kind's :func:`on_dead` hook sees it."""

    job_id: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    error: str | None


DeadHook = Callable[[AsyncSession, DeadJob], Awaitable[None]]
_dead_hooks: dict[str, DeadHook] = {}


def on_dead(kind: str) -> Callable[[DeadHook], DeadHook]:
    """Register ``fn`` to run when a job of ``kind`` is declared dead.

    It runs in the transaction that records the verdict, so the two commit
    together, and it must only write through that session (no cache, no
    storage, no network). It must leave things so that ``petpal jobs replay``
    can still run the job to success: replay only queues the job again.
    """

    def register(fn: DeadHook) -> DeadHook:
        if kind in _dead_hooks and _dead_hooks[kind] is not fn:
            raise RuntimeError(f"two on-dead hooks for job kind {kind!r}")
        _dead_hooks[kind] = fn
        return fn

    return register


async def declare_dead(session: AsyncSession, row: OutboxJob, error: str) -> None:
    """Record ``row`` dead in ``session`` and run its kind's on-dead hook.

    Every runner that gives up on a job goes through here: the embedded relay
    and Celery workers after the last failed attempt, a worker that finds the
    delivery limit reached, and the broker relay moving RabbitMQ's dead
    letters into the outbox.
    """
    row.status, row.finished_at, row.last_error = DEAD, utcnow(), error
    # An operator's alert, not only a metric and a row (found by a trial:
    # jobs died without a line in any log).
    log.error(
        "job.dead",
        job_id=row.id,
        job_kind=row.kind,
        attempts=row.attempts,
        error=error[:500],
    )
    hook = _dead_hooks.get(row.kind)
    if hook is None:
        return
    dead = DeadJob(row.id, row.kind, dict(row.payload), row.attempts, error)
    try:
        # A savepoint: a failing hook must not cost the verdict, or the job
        # would come back after its lease and die again, forever.
        async with session.begin_nested():
            await hook(session, dead)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("job.on_dead_failed", job_id=row.id, job_kind=row.kind)


async def record_dead(
    session: AsyncSession, kind: str, payload: dict[str, Any], error: str
) -> str:
    """Record, in ``session``, a job that ran once outside the outbox and failed.

    For work a request did itself instead of queueing it (the inline media
    baseline): it ends as a job that died on its first attempt, its kind's
    on-dead hook runs, and ``petpal jobs replay`` can run it again.
    """
    now = utcnow()
    row = OutboxJob(
        id=new_id(),
        kind=kind,
        payload=payload,
        status=RUNNING,
        attempts=1,
        available_at=now,
        created_at=now,
    )
    session.add(row)
    await session.flush()  # the row must outlive a failing hook's savepoint
    await declare_dead(session, row, error)
    JOB_RUNS.labels(kind, "dead").inc()
    return row.id


def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    *,
    delay: timedelta = timedelta(0),
) -> str:
    """Add a job to the outbox in ``session``'s transaction; returns its id.

    With ``delay`` the job is not due (neither run nor published) until that
    long after now.
    """
    now = utcnow()
    job_id = new_id()
    if not delay:
        # Wakes the relays at commit; a job not yet due would wake them for
        # nothing (they find it by their poll once it is).
        session.info[JOBS_ENQUEUED] = True
    session.add(
        OutboxJob(
            id=job_id,
            kind=kind,
            payload=payload,
            status=PENDING,
            attempts=0,
            available_at=now + delay,
            created_at=now,
        )
    )
    return job_id


def enqueue_chunked(
    session: AsyncSession,
    kind: str,
    field: str,
    items: Sequence[str],
    size: int,
    **fixed: Any,
) -> None:
    """Jobs of ``kind`` for ``items``, at most ``size`` of them in ``field``
    of each job's payload (the rest of which is ``fixed``): a payload stays
    small however many there are."""
    for start in range(0, len(items), size):
        enqueue(session, kind, {**fixed, field: list(items[start : start + size])})


def enqueue_when(kind: str, condition: ColumnElement[bool]) -> Insert:
    """A job of ``kind`` added to the outbox only if ``condition`` holds: an
    insert for the ``WITH`` clause of a statement that makes a change and
    its job together, as one statement. Bound by ``job_parameters``.

    It never wakes the relays (a statement sent alone commits without
    ``write_session``'s notice), so it suits jobs that are not due at once,
    as backstops are: the relays find those by their poll.
    """
    jobs = cast(Table, OutboxJob.__table__)
    return insert(jobs).from_select(
        ["id", "kind", "payload", "status", "attempts", "available_at", "created_at"],
        select(
            bindparam("job_id", type_=jobs.c.id.type),
            literal(kind, jobs.c.kind.type),
            bindparam("job_payload", type_=jobs.c.payload.type),
            literal(PENDING, jobs.c.status.type),
            literal(0, jobs.c.attempts.type),
            bindparam("job_available_at", type_=jobs.c.available_at.type),
            bindparam("job_created_at", type_=jobs.c.created_at.type),
        ).where(condition),
    )


def job_parameters(
    payload: dict[str, Any], *, delay: timedelta = timedelta(0)
) -> tuple[str, dict[str, Any]]:
    """A new job's id and the parameters of an ``enqueue_when`` insert."""
    now = utcnow()
    job_id = new_id()
    return job_id, {
        "job_id": job_id,
        "job_payload": payload,
        "job_available_at": now + delay,
        "job_created_at": now,
    }


# --- backstops ------------------------------------------------------------------
#
# Some work is done in the request, right after the commit, and a job committed
# with the change is only its backstop: for a process that dies before doing
# it, or a store that fails while it does. Such a job is enqueued with
# ``BACKSTOP_DELAY``; the request then records it done once it did the work
# itself (``settle_backstop``), so that neither the relay nor a worker touches
# it, or makes it due at once when it could not (``release_backstop``).

BACKSTOP_DELAY = timedelta(seconds=30)


async def settle_backstop(db: Database, job_id: str) -> None:
    """Record a backstop job done: the request did its work."""
    async with db.statement_session() as session:
        connection = await session.connection()
        await connection.execute(_SETTLE, _settle_parameters(job_id))


def _settle_parameters(job_id: str) -> dict[str, Any]:
    return {"backstop_id": job_id, "backstop_finished_at": utcnow()}


class BackstopCheck:
    """A condition read once a request has done a backstop's work, with the
    backstop recorded done in the same statement if the condition holds.

    The condition says the work stands (say, the follow the request acted on
    is still there); when it does not, the caller repairs what it did and
    then calls ``settle_backstop``, so a process that dies in between leaves
    the job to do it. On PostgreSQL that is one statement sent alone, the
    update in its ``WITH`` clause, both reading one snapshot; on SQLite a
    read and the update in one transaction. The condition's parameters are
    named by the caller; the backstop's are ``backstop_id`` and
    ``backstop_finished_at``.
    """

    def __init__(self, condition: ColumnElement[bool]) -> None:
        self._read = select(condition.label("held"))
        held = self._read.cte("held")
        settled = _settling(select(held.c.held).scalar_subquery()).cte("settled")
        self._read_and_settle: Select[Any] = select(held.c.held).add_cte(settled)

    async def settle_if(
        self, db: Database, job_id: str | None, parameters: dict[str, Any]
    ) -> bool:
        """Whether the condition holds now; if it does, the job is done.
        Without a job (a job's own run, say) the condition is only read."""
        if job_id is None:
            async with db.read_session() as session:
                connection = await session.connection()
                return bool(await connection.scalar(self._read, parameters))
        arguments = parameters | _settle_parameters(job_id)
        if db.is_sqlite:
            async with db.write_session() as session:
                connection = await session.connection()
                held = bool(await connection.scalar(self._read, arguments))
                if held:
                    await connection.execute(_SETTLE, arguments)
            return held
        async with db.statement_session() as session:
            connection = await session.connection()
            return bool(await connection.scalar(self._read_and_settle, arguments))


def _settling(condition: ColumnElement[bool] | None) -> Any:
    """The update that records a pending backstop done (if ``condition``),
    bound by ``_settle_parameters``."""
    statement = update(OutboxJob).where(
        OutboxJob.id == bindparam("backstop_id"), OutboxJob.status == PENDING
    )
    if condition is not None:
        statement = statement.where(condition)
    return statement.values(
        status=DONE,
        finished_at=bindparam(
            "backstop_finished_at", type_=OutboxJob.__table__.c.finished_at.type
        ),
    )


# Built once: settle_backstop runs after most follows and unfollows.
_SETTLE = _settling(None)


async def release_backstop(db: Database, job_id: str) -> None:
    """Make a backstop job due now: the request could not do its work."""
    async with db.write_session() as session:
        session.info[JOBS_ENQUEUED] = True  # wakes the relays at commit
        await _update_pending(session, job_id, available_at=utcnow())


async def _update_pending(session: AsyncSession, job_id: str, **values: Any) -> None:
    # Only while pending: a relay that already took the job (its delay
    # ended) leaves it alone, and the job runs, harmlessly, being idempotent.
    connection = await session.connection()
    await connection.execute(
        update(OutboxJob)
        .where(OutboxJob.id == job_id, OutboxJob.status == PENDING)
        .values(**values)
    )


def backoff(attempt: int, base_seconds: float = 1.0) -> timedelta:
    """Exponential back-off with jitter: about 2, 4, 8 … times the base, max 10 min."""
    ceiling = min(600.0, base_seconds * 2.0**attempt)
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311


@dataclass(frozen=True)
class Delivery:
    """One attempt at a job, as :func:`start_delivery` granted it."""

    job_id: str
    kind: str
    payload: dict[str, Any]
    attempt: int


class DeliveryLimitReached(Exception):
    """A job was delivered ``job_max_attempts`` times without an outcome."""


async def start_delivery(
    db: Database, job_id: str, max_attempts: int
) -> Delivery | None:
    """Take a lease on ``job_id`` for one attempt, as a broker worker does.

    Returns None when there is nothing to do: the job is unknown, or finished
    by an earlier delivery (a message can arrive twice). Every start counts
    as an attempt, so a job whose worker dies each time (a poison photo that
    exhausts memory, say) is marked dead instead of crashing workers forever:
    that raises :class:`DeliveryLimitReached`.
    """
    now = utcnow()
    async with db.write_session() as session:
        row = await session.get(OutboxJob, job_id)
        if row is None or row.status in (DONE, DEAD):
            return None
        if row.attempts < max_attempts:
            row.status = RUNNING
            row.attempts += 1
            row.available_at = now + LEASE
            return Delivery(row.id, row.kind, dict(row.payload), row.attempts)
        # Raised after the commit, which must keep the verdict.
        verdict = (
            f"delivery limit: {row.attempts} attempts started and none "
            "recorded an outcome (the worker died or lost the database)"
        )
        await declare_dead(session, row, verdict)
        kind = row.kind
    JOB_RUNS.labels(kind, "dead").inc()
    raise DeliveryLimitReached(verdict)


async def run_job(
    services: Any,
    delivery: Delivery,
    *,
    max_attempts: int,
    retry_base_seconds: float,
    stopping: Callable[[], bool] = lambda: False,
) -> str:
    """Run one attempt's handler and record its outcome: done, retry or dead."""
    handler = _handlers.get(delivery.kind)
    bound = log.bind(
        job_id=delivery.job_id, job_kind=delivery.kind, attempt=delivery.attempt
    )
    started = time.perf_counter()
    error: str | None = None
    if handler is None:
        error = f"no handler registered for job kind {delivery.kind!r}"
        # Logged as any failure is (found by a trial: it was in no log).
        bound.warning("job.failed", error=error)
    else:
        try:
            await handler(
                JobContext(services, delivery.job_id, delivery.attempt),
                delivery.payload,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = "".join(traceback.format_exception_only(exc)).strip()
            bound.warning("job.failed", error=error)
    JOB_SECONDS.labels(delivery.kind).observe(time.perf_counter() - started)
    return await _record_outcome_when_possible(
        services.db, delivery, error, max_attempts, retry_base_seconds, stopping
    )


async def _record_outcome_when_possible(
    db: Database,
    delivery: Delivery,
    error: str | None,
    max_attempts: int,
    retry_base_seconds: float,
    stopping: Callable[[], bool],
) -> str:
    """Record the outcome, waiting out a database that is down or restarting.

    Left unrecorded, the job would stay claimed until its lease ran out and
    then run a second time. Given up only when the runner stops (the lease
    then does bring it back) or on an error that is not an outage.
    """
    bound = log.bind(
        job_id=delivery.job_id, job_kind=delivery.kind, attempt=delivery.attempt
    )
    delay, longest = OUTCOME_RETRY_SECONDS
    while True:
        try:
            return await _record_outcome(
                db, delivery, error, max_attempts, retry_base_seconds
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if backend_unavailable(exc) is None:
                bound.exception("job.outcome_unrecorded")
                return "unrecorded"
            if stopping():
                bound.warning("job.outcome_unrecorded", error=type(exc).__name__)
                return "unrecorded"
            if delay == OUTCOME_RETRY_SECONDS[0]:
                bound.warning("job.outcome_waiting", error=type(exc).__name__)
        await asyncio.sleep(delay)
        delay = min(delay * 2, longest)


async def _record_outcome(
    db: Database,
    delivery: Delivery,
    error: str | None,
    max_attempts: int,
    retry_base_seconds: float,
) -> str:
    now = utcnow()
    async with db.write_session() as session:
        row = await session.get(OutboxJob, delivery.job_id)
        # Not ours any more: recorded by a commit whose answer was lost in an
        # outage, or started again by another delivery after the lease ran out.
        if row is None or row.status != RUNNING or row.attempts != delivery.attempt:
            return "gone"
        row.last_error = error
        if error is None:
            row.status, row.finished_at = DONE, now
            outcome = "done"
        elif delivery.attempt >= max_attempts:
            await declare_dead(session, row, error)
            outcome = "dead"
        else:
            row.status = PENDING
            row.available_at = now + backoff(delivery.attempt, retry_base_seconds)
            outcome = "retry"
    JOB_RUNS.labels(delivery.kind, outcome).inc()
    return outcome


class EmbeddedRelay:
    """Claims due outbox rows and runs their handlers inside this process."""

    def __init__(
        self,
        db: Database,
        services: Any,
        *,
        concurrency: int,
        poll_seconds: float,
        max_attempts: int,
        retry_base_seconds: float = 1.0,
        sole_runner: bool = False,
    ) -> None:
        self._db = db
        self._services = services
        # No other process runs this database's jobs (embedded on SQLite
        # without Redis, where a second server process is refused): a job
        # found running at the start was left by a process that died, and
        # runs again at once rather than when its lease ends (found by a
        # trial: a photo stayed "processing" for 5 minutes after a kill -9).
        self.sole_runner = sole_runner
        self._concurrency = max(1, concurrency)
        self._poll_seconds = poll_seconds
        self._max_attempts = max_attempts
        self._retry_base_seconds = retry_base_seconds
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[str]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        # True from the claim query until the claimed jobs are tasks, so that
        # drain() never sees a claimed job that is neither due nor running.
        self._claiming = False
        self._stopping = False
        # Set while the database does not answer, so that an outage is logged
        # once when it starts and once when it ends, not on every turn.
        self._database_away = False

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="petpal-job-relay")

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop claiming, let running jobs finish, then end the loop.

        The loop is asked to stop between turns rather than cancelled: a task
        cancelled inside an aiosqlite call can wait forever on a future the
        driver's thread never resolves. Jobs still running after the grace
        period are cancelled; their lease makes them due again later.
        """
        self._stopping = True
        self._wake.set()
        pending: set[asyncio.Task[Any]] = set(self._running)
        if self._loop_task is not None:
            pending.add(self._loop_task)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=grace_seconds)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1.0)

    async def drain(self, within_seconds: float = 30.0) -> None:
        """Wait until no job is due or running (tests and the seed use this)."""
        deadline = asyncio.get_running_loop().time() + within_seconds
        while asyncio.get_running_loop().time() < deadline:
            # Idle before and after the query: the relay may claim and start a
            # job while the query runs, and then nothing is "due" any more.
            if self._idle() and not await self._has_due_jobs() and self._idle():
                return
            # Woken after the check, not before it: a wake starts a claim at
            # once, and a claim (a write transaction) still running when the
            # read above ends made the check fail again and again, for
            # nothing, until the drain timed out.
            self.wake()
            await asyncio.sleep(0.02)
        raise TimeoutError("jobs still pending after drain timeout")

    def _idle(self) -> bool:
        return not self._running and not self._claiming

    async def _has_due_jobs(self) -> bool:
        async with self._db.read_session() as session:
            found = await session.scalar(
                select(OutboxJob.id)
                .where(OutboxJob.status == PENDING, OutboxJob.available_at <= utcnow())
                .limit(1)
            )
        return found is not None

    async def _loop(self) -> None:
        next_reclaim = 0.0
        reclaim_all_running = self.sole_runner
        # stop() sets the flag and wakes the loop: it ends between turns.
        while not self._stopping:
            try:
                # Jobs whose outcome could not be recorded (the database was
                # down, or another process died) come back once their lease
                # ends; checked at start and then once a minute.
                now = asyncio.get_running_loop().time()
                if now >= next_reclaim:
                    await self._reclaim_leases(every_one=reclaim_all_running)
                    reclaim_all_running = False
                    next_reclaim = now + 60.0
                await self._claim_and_start()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if backend_unavailable(exc) is None:
                    log.exception("jobs.relay_error")
                elif not self._database_away:
                    # Down or restarting: the next turns retry until it answers.
                    self._database_away = True
                    log.warning("jobs.relay_waiting", error=type(exc).__name__)
            else:
                if self._database_away:
                    self._database_away = False
                    log.info("jobs.relay_resumed")
            await self._sleep_until_woken()

    async def _sleep_until_woken(self) -> None:
        # asyncio.wait, not wait_for or timeout(): on Python 3.11 those cancel
        # this task when the timer fires, and a wake-up racing with the timer
        # leaves a stray cancellation that then lands inside a database call.
        waiter = asyncio.ensure_future(self._wake.wait())
        done, _ = await asyncio.wait({waiter}, timeout=self._poll_seconds)
        if not done:
            waiter.cancel()
        self._wake.clear()

    async def _reclaim_leases(self, *, every_one: bool) -> None:
        """Make due again the jobs whose lease ended, or all of those
        running when ``every_one`` (none of them is really running)."""
        now = utcnow()
        lapsed = [OutboxJob.status == RUNNING]
        if not every_one:
            lapsed.append(OutboxJob.available_at <= now)
        async with self._db.write_session() as session:
            due_again = {"status": PENDING, "available_at": now}
            await session.execute(update(OutboxJob).where(*lapsed).values(due_again))

    async def _claim_and_start(self) -> None:
        free = self._concurrency - len(self._running)
        if free <= 0:
            return
        self._claiming = True
        try:
            await self._claim(free)
        finally:
            self._claiming = False

    async def _claim(self, free: int) -> None:
        now = utcnow()
        due_now = (OutboxJob.status == PENDING, OutboxJob.available_at <= now)
        photos = OutboxJob.kind.startswith(f"{PHOTO_FAMILY}.")
        async with self._db.write_session() as session:
            due: list[OutboxJob] = []
            # Every other job first, then photos, each lane oldest first: in
            # distributed mode photos have a queue and workers of their own,
            # and here a post's fan-out waited behind every photo queued
            # before it (found by a trial: 3.7 s behind 20 uploads, and a
            # walk of the home feed begun meanwhile missed the post). Now it
            # waits at most for a photo already being processed.
            for lane in (~photos, photos):
                if len(due) == free:
                    break
                due += (
                    await session.scalars(
                        select(OutboxJob)
                        .where(*due_now, lane)
                        .order_by(OutboxJob.available_at, OutboxJob.id)
                        .limit(free - len(due))
                    )
                ).all()
            claimed = []
            for row in due:
                # The lease: if this process dies, the row is due again later.
                row.status = RUNNING
                row.attempts += 1
                row.available_at = now + LEASE
                claimed.append(
                    Delivery(row.id, row.kind, dict(row.payload), row.attempts)
                )
        for delivery in claimed:
            task = asyncio.create_task(
                run_job(
                    self._services,
                    delivery,
                    max_attempts=self._max_attempts,
                    retry_base_seconds=self._retry_base_seconds,
                    stopping=lambda: self._stopping,
                )
            )
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[str]) -> None:
        self._running.discard(task)
        self._wake.set()


async def list_dead_jobs(db: Database, limit: int = 100) -> list[OutboxJob]:
    async with db.read_session() as session:
        rows = await session.scalars(
            select(OutboxJob)
            .where(OutboxJob.status == DEAD)
            .order_by(OutboxJob.id)
            .limit(limit)
        )
        return list(rows.all())


async def dead_among(db: Database, job_ids: Iterable[str]) -> set[str]:
    """Which of ``job_ids`` are dead jobs."""
    async with db.read_session() as session:
        rows = await session.scalars(
            select(OutboxJob.id).where(
                OutboxJob.status == DEAD, OutboxJob.id.in_(list(job_ids))
            )
        )
        return set(rows.all())


async def replay_dead_jobs(db: Database, job_ids: list[str] | None = None) -> int:
    """Put dead jobs (all, or the given ones) back in the queue with fresh attempts."""
    async with db.write_session() as session:
        query = update(OutboxJob).where(OutboxJob.status == DEAD)
        if job_ids:
            query = query.where(OutboxJob.id.in_(job_ids))
        result = await session.execute(
            query.values(status=PENDING, attempts=0, available_at=utcnow())
        )
        return rowcount(result)


async def refresh_outbox_gauges(db: Database) -> None:
    async with db.read_session() as session:
        count, oldest = (
            await session.execute(
                select(func.count(), func.min(OutboxJob.created_at)).where(
                    OutboxJob.status.in_([PENDING, QUEUED, RUNNING])
                )
            )
        ).one()
        dead = await session.scalar(
            select(func.count()).select_from(OutboxJob).where(OutboxJob.status == DEAD)
        )
    OUTBOX_BACKLOG.set(count)
    age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
    OUTBOX_OLDEST_AGE.set(age)
    DEAD_JOBS.set(dead or 0)
