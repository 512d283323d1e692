"""A photo whose processing job dies ends ``failed``, and a replay revives it.

So does one whose processing raises inside its upload request (the inline
benchmark baseline): the request answers a problem, never a 500.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from petpal.media.service import PROCESS_JOB
from petpal.platform.app import create_app
from petpal.platform.jobs import (
    DEAD,
    DONE,
    DeadJob,
    DeliveryLimitReached,
    JobContext,
    OutboxJob,
    enqueue,
    job,
    list_dead_jobs,
    on_dead,
    replay_dead_jobs,
    start_delivery,
)
from petpal.platform.services import Services
from petpal.platform.settings import Settings
from tests.factories import a_user, an_uploaded_photo, assert_problem, drain_jobs

PHOTO = Path(__file__).parent.parent / "fixtures" / "photos" / "camera-exif"
SMALL_PHOTO = PHOTO / "apple_iphone5_ori3_gps.jpg"


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("petpal.platform.jobs.backoff", lambda *_: timedelta(0))


@pytest.fixture
def processing_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processing raises, as in an outage, not as for an unreadable photo."""

    def broken(*_: Any) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr("petpal.media.service.process_image", broken)


async def the_job(services: Services) -> OutboxJob:
    async with services.db.read_session() as session:
        (row,) = (
            await session.scalars(
                select(OutboxJob).where(OutboxJob.kind == PROCESS_JOB)
            )
        ).all()
        return row


async def test_a_photo_whose_job_dies_is_failed_and_a_replay_makes_it_ready(
    client: httpx.AsyncClient,
    services: Services,
    no_backoff: None,
    processing_breaks: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = await a_user(client)
    media = await an_uploaded_photo(client, user, SMALL_PHOTO, services)

    attempts = services.settings.job_max_attempts
    assert media["status"] == "failed", media
    assert media["failure_reason"] == f"processing failed after {attempts} attempts"
    assert not media["variants"]
    job = await the_job(services)
    assert (job.status, job.attempts) == (DEAD, attempts)
    assert "no space left on device" in (job.last_error or "")

    # The cause is gone; the operator replays the job.
    monkeypatch.undo()
    assert await replay_dead_jobs(services.db, [job.id]) == 1
    await drain_jobs(services)
    fetched = await client.get(f"/api/v1/media/{media['id']}", headers=user.headers)
    assert fetched.json()["status"] == "ready", fetched.json()
    assert fetched.json()["failure_reason"] is None
    assert (await the_job(services)).status == DONE


async def test_a_photo_is_failed_when_its_delivery_limit_is_reached(
    client: httpx.AsyncClient, services: Services
) -> None:
    assert services.relay is not None
    await services.relay.stop()  # this test plays the broker's workers
    user = await a_user(client)
    media = await an_uploaded_photo(client, user, SMALL_PHOTO)
    job = await the_job(services)
    # Two workers take the job and die before recording an outcome.
    for _ in range(2):
        assert await start_delivery(services.db, job.id, max_attempts=2)
    with pytest.raises(DeliveryLimitReached):
        await start_delivery(services.db, job.id, max_attempts=2)

    fetched = await client.get(f"/api/v1/media/{media['id']}", headers=user.headers)
    assert fetched.json()["status"] == "failed"
    assert fetched.json()["failure_reason"] == "processing failed after 2 attempts"


@job("test.dies")
async def dies(ctx: JobContext, payload: dict[str, Any]) -> None:
    raise RuntimeError("always")


@on_dead("test.dies")
async def hook_breaks(session: AsyncSession, dead: DeadJob) -> None:
    raise RuntimeError("a bug in the hook")


async def test_a_failing_on_dead_hook_does_not_cost_the_verdict(
    services: Services, no_backoff: None
) -> None:
    async with services.db.write_session() as session:
        job_id = enqueue(session, "test.dies", {})
    await drain_jobs(services)
    async with services.db.read_session() as session:
        row = await session.get(OutboxJob, job_id)
    assert row is not None
    assert (row.status, row.last_error) == (DEAD, "RuntimeError: always")


@pytest.mark.parametrize(
    "error",
    [OSError("no space left on device"), RuntimeError("a bug in a decoder")],
    ids=["outage", "bug"],
)
async def test_inline_processing_that_raises_ends_failed_and_answers_a_problem(
    settings: Settings, error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The benchmark's naive path: the request processes the photo itself, and
    # processing raises. Like a job that died on its only attempt, the photo
    # is failed and the operator can replay it.
    def broken(*_: Any) -> None:
        raise error

    monkeypatch.setattr("petpal.media.service.process_image", broken)
    inline = settings.model_copy(update={"media_process_inline": True})
    app: FastAPI = create_app(inline)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            user = await a_user(c)
            with SMALL_PHOTO.open("rb") as f:
                answer = await c.post(
                    "/api/v1/media",
                    headers=user.headers,
                    files={"file": ("p.jpg", f, "image/jpeg")},
                )
            problem = assert_problem(answer, 503, "processing_failed")
            assert answer.headers["retry-after"]
            media_id = problem["media_id"]
            fetched = await c.get(f"/api/v1/media/{media_id}", headers=user.headers)
            assert fetched.json()["status"] == "failed"
            assert (
                fetched.json()["failure_reason"] == "processing failed after 1 attempt"
            )

            (dead,) = await list_dead_jobs(services.db)
            assert (dead.kind, dead.payload) == (PROCESS_JOB, {"media_id": media_id})
            assert str(error) in (dead.last_error or "")
            monkeypatch.undo()
            assert await replay_dead_jobs(services.db) == 1
            await drain_jobs(services)
            fetched = await c.get(f"/api/v1/media/{media_id}", headers=user.headers)
            assert fetched.json()["status"] == "ready"
