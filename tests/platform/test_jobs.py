from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest
from sqlalchemy import select

from petpal.platform.db import utcnow
from petpal.platform.ids import new_id
from petpal.platform.jobs import (
    DEAD,
    DONE,
    LEASE,
    RUNNING,
    EmbeddedRelay,
    JobContext,
    OutboxJob,
    enqueue,
    job,
    list_dead_jobs,
    record_dead,
    replay_dead_jobs,
)
from petpal.platform.services import Services
from petpal.platform.settings import Settings
from tests.conftest import run_petpal
from tests.social.builders import run_jobs

calls: dict[str, list[Any]] = {"ok": [], "flaky": [], "broken": []}


@job("test.ok")
async def ok_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    calls["ok"].append(payload["n"])


@job("test.flaky")
async def flaky_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    calls["flaky"].append(ctx.attempt)
    if ctx.attempt < 2:
        raise RuntimeError("transient")


@job("test.broken")
async def broken_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    calls["broken"].append(ctx.attempt)
    raise ValueError("always fails")


# The order the jobs of the lanes test ran in.
order: list[str] = []


@job("media.test_photo")
async def photo_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    order.append(f"photo {payload['n']}")


@job("test.fan_out")
async def fan_out_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    order.append("fan-out")


@pytest.fixture(autouse=True)
def _reset() -> None:
    for value in calls.values():
        value.clear()
    order.clear()


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    monkeypatch.setattr("petpal.platform.jobs.backoff", lambda *_: timedelta(0))


async def _status(services: Services, job_id: str) -> str:
    async with services.db.read_session() as session:
        row = await session.get(OutboxJob, job_id)
        assert row is not None
        return row.status


async def test_a_job_commits_with_its_change_and_runs(services: Services) -> None:
    async with services.db.write_session() as session:
        job_id = enqueue(session, "test.ok", {"n": 1})
    assert services.relay is not None
    await services.relay.drain()
    assert calls["ok"] == [1]
    assert await _status(services, job_id) == DONE


async def test_a_job_a_killed_process_left_running_runs_at_the_next_start(
    services: Services,
) -> None:
    """Found by a trial: after a ``kill -9`` in embedded mode, the photo
    being processed stayed "processing" until its job's 5-minute lease
    ended. Where no other process runs the jobs (SQLite without Redis), the
    next start runs such a job at once; elsewhere another process may still
    be running it, and its lease decides."""
    now = utcnow()
    async with services.db.write_session() as session:
        left = OutboxJob(
            id=new_id(),
            kind="test.ok",
            payload={"n": 7},
            status=RUNNING,
            attempts=1,
            available_at=now + LEASE,
            created_at=now,
        )
        session.add(left)
    sole = services.db.is_sqlite and not services.settings.redis_url
    relay = EmbeddedRelay(
        services.db,
        services,
        concurrency=1,
        poll_seconds=0.05,
        max_attempts=3,
        sole_runner=sole,
    )
    relay.start()
    try:
        # Up to 10 s for the job to run; a second to see it stay as it is.
        for _ in range(200 if sole else 20):
            if await _status(services, left.id) == DONE:
                break
            await asyncio.sleep(0.05)
    finally:
        await relay.stop()
    if sole:
        assert await _status(services, left.id) == DONE
        assert calls["ok"] == [7]
    else:
        assert await _status(services, left.id) == RUNNING
        assert calls["ok"] == []


async def test_other_jobs_run_before_photos_queued_earlier(services: Services) -> None:
    """Found by a trial: in embedded mode a post's fan-out waited behind
    every photo queued before it (3.7 s behind 20 uploads), and a walk of
    the home feed begun meanwhile missed the post. Photos have a queue of
    their own in distributed mode; here the other jobs go first."""
    assert services.relay is not None
    await services.relay.stop()  # this test's relay claims alone
    async with services.db.write_session() as session:
        for n in range(3):
            enqueue(session, "media.test_photo", {"n": n})
    async with services.db.write_session() as session:
        enqueue(session, "test.fan_out", {})
    await run_jobs(services, concurrency=1)
    assert order == ["fan-out", "photo 0", "photo 1", "photo 2"]


async def test_a_rolled_back_change_leaves_no_job(services: Services) -> None:
    async def failing_use_case() -> None:
        async with services.db.write_session() as session:
            enqueue(session, "test.ok", {"n": 2})
            raise RuntimeError("use case failed")

    with pytest.raises(RuntimeError):
        await failing_use_case()
    async with services.db.read_session() as session:
        assert (await session.scalars(select(OutboxJob))).all() == []


async def test_failures_retry_then_succeed(
    services: Services, no_backoff: None
) -> None:
    async with services.db.write_session() as session:
        job_id = enqueue(session, "test.flaky", {})
    assert services.relay is not None
    await services.relay.drain()
    assert calls["flaky"] == [1, 2]
    assert await _status(services, job_id) == DONE


async def test_a_job_that_keeps_failing_is_dead_and_can_be_replayed(
    services: Services, no_backoff: None, capsys: pytest.CaptureFixture[str]
) -> None:
    async with services.db.write_session() as session:
        job_id = enqueue(session, "test.broken", {})
    assert services.relay is not None
    await services.relay.drain()
    attempts = services.settings.job_max_attempts
    assert calls["broken"] == list(range(1, attempts + 1))
    assert await _status(services, job_id) == DEAD
    # Each failure and the death are in the log, not only in a metric and a
    # row (found by a trial: the death was in none).
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if "job.failed" in line and job_id in line]
    died = [line for line in lines if "job.dead" in line and job_id in line]
    assert len(failed) == attempts, lines
    assert len(died) == 1, lines
    assert "always fails" in died[0]
    dead = await list_dead_jobs(services.db)
    assert [d.id for d in dead] == [job_id]
    assert "always fails" in (dead[0].last_error or "")

    assert await replay_dead_jobs(services.db, [job_id]) == 1
    await services.relay.drain()
    assert len(calls["broken"]) == 2 * attempts


async def test_a_job_of_a_kind_no_handler_runs_is_logged_as_it_fails(
    services: Services, no_backoff: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a trial: a job of a kind this process has no handler for
    (a row left by a newer version, say) failed and died in no log."""
    async with services.db.write_session() as session:
        job_id = enqueue(session, "test.unknown_kind", {})
    assert services.relay is not None
    await services.relay.drain()
    assert await _status(services, job_id) == DEAD
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if "job.failed" in line and job_id in line]
    assert len(failed) == services.settings.job_max_attempts, lines
    assert "no handler registered" in failed[0]
    assert [line for line in lines if "job.dead" in line and job_id in line]


async def test_the_dead_job_list_is_one_line_a_job_and_replay_names_what_it_cannot(
    services: Services, settings: Settings
) -> None:
    """Found by a trial: a dead job's many-line error (an object store's
    debug dump) broke ``petpal jobs dead`` over many lines, and ``petpal
    jobs replay`` of an id that is no dead job said "0 job(s) queued again"
    and succeeded."""
    dump = 'NotFound {\n    path: "incoming/x",\n    source: Os { code: 2 },\n}'
    async with services.db.write_session() as session:
        job_id = await record_dead(session, "test.broken", {}, dump)

    async def petpal(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run_petpal, settings, "jobs", *args)

    listed = await petpal("dead")
    assert listed.returncode == 0, listed
    (line,) = listed.stdout.splitlines()
    assert line.startswith(f"{job_id}  test.broken  attempts=1  NotFound {{ path:")
    unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    replayed = await petpal("replay", job_id, unknown)
    assert replayed.returncode == 1, replayed
    assert replayed.stdout.strip() == "1 job(s) queued again"
    assert unknown in replayed.stderr
    # Nothing replayed: the error alone, no "0 job(s) queued again" first.
    replayed = await petpal("replay", unknown)
    assert replayed.returncode == 1, replayed
    assert replayed.stdout == ""
    assert unknown in replayed.stderr
    assert (await petpal("replay")).returncode == 0  # all of them: none is fine


async def test_scratch_files_a_killed_process_left_go_at_the_next_start(
    settings: Settings,
) -> None:
    """Found by a trial: a kill -9 while a photo was decoded left its copy
    (up to 25 MB) in the data folder's tmp/ for good. Where no other process
    runs the jobs, the next start removes what is there."""
    left = settings.data_dir / "tmp" / "tmpkilled" / "source"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"a photo being decoded")
    services = Services.build(settings.model_copy(update={"run_jobs_in_process": True}))
    try:
        await services.start()
        sole = services.relay is not None and services.relay.sole_runner
        assert left.exists() != sole
    finally:
        await services.close()
