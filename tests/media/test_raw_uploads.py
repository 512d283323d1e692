"""No raw upload, with its GPS position, outlives its need in storage.

Each test runs on the local disk store and on an object store reached
through a URL (obstore's in-memory one: the tests have no S3 server; it
takes the same path through ``Storage`` as S3 does).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import obstore
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from petpal.cli import app as cli_app
from petpal.identity.models import Account
from petpal.media import service as media_service
from petpal.media.service import DISCARD_UPLOAD_JOB, do_sweep_uploads
from petpal.platform.app import create_app
from petpal.platform.db import utcnow
from petpal.platform.jobs import PENDING, OutboxJob, replay_dead_jobs
from petpal.platform.services import Services
from petpal.platform.settings import Settings, get_settings
from tests.factories import User, a_user, an_uploaded_photo, assert_problem, drain_jobs

PHOTO = Path(__file__).parent.parent / "fixtures" / "photos" / "camera-exif"
GPS_PHOTO = PHOTO / "apple_iphone5_ori3_gps.jpg"
WEEK = 7 * 24 * 3600.0


@pytest.fixture(params=["local", "memory:///"])
def storage_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    url = "" if request.param == "local" else str(request.param)
    return settings.model_copy(
        update={
            "storage_url": url,
            "media_failed_upload_retention_seconds": WEEK,
        }
    )


@pytest.fixture
async def stack(
    storage_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    # Failed jobs are retried at once, so that draining the jobs waits for them.
    monkeypatch.setattr("petpal.platform.jobs.backoff", lambda *_: timedelta(0))
    application: FastAPI = create_app(storage_settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c, application.state.services


def stored_uploads(services: Services) -> list[str]:
    return [
        str(meta["path"])
        for batch in obstore.list(services.storage.store, prefix="incoming")
        for meta in batch
    ]


async def media_row(services: Services, media_id: str) -> Any:
    async with services.db.read_session() as session:
        return (
            await session.execute(
                select(
                    media_service.Media.status,
                    media_service.Media.incoming_key,
                    media_service.Media.failure_reason,
                ).where(media_service.Media.id == media_id)
            )
        ).one_or_none()


async def pending_discards(services: Services) -> list[OutboxJob]:
    """The upload deletions waiting in the outbox, oldest first."""
    async with services.db.read_session() as session:
        return list(
            (
                await session.scalars(
                    select(OutboxJob)
                    .where(
                        OutboxJob.kind == DISCARD_UPLOAD_JOB,
                        OutboxJob.status == PENDING,
                    )
                    .order_by(OutboxJob.id)
                )
            ).all()
        )


@pytest.fixture
def processing_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processing raises every time."""

    def broken(*_: Any) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr("petpal.media.service.process_image", broken)


async def test_an_upload_storage_failed_to_delete_is_deleted_by_the_retry(
    stack: tuple[httpx.AsyncClient, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The photo is recorded ready, then deleting its upload fails once (a
    # storage hiccup, or the worker dying at that moment).
    client, services = stack
    real_delete = services.storage.delete
    failures = []

    async def flaky_delete(key: str) -> None:
        if key.startswith("incoming/") and not failures:
            failures.append(key)
            raise OSError("storage timed out")
        await real_delete(key)

    monkeypatch.setattr(services.storage, "delete", flaky_delete)
    user = await a_user(client)
    media = await an_uploaded_photo(client, user, GPS_PHOTO, services)

    assert media["status"] == "ready"
    assert failures == [f"incoming/{media['id']}"]
    assert stored_uploads(services) == []
    row = await media_row(services, media["id"])
    assert (row.status, row.incoming_key) == ("ready", None)


async def test_a_dead_photo_keeps_its_upload_for_a_replay_then_loses_it(
    stack: tuple[httpx.AsyncClient, Services],
    processing_breaks: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, services = stack
    user = await a_user(client)
    media = await an_uploaded_photo(client, user, GPS_PHOTO, services)
    assert media["status"] == "failed", media

    # Kept while a replay can still use it, with its deletion scheduled.
    assert stored_uploads(services) == [f"incoming/{media['id']}"]
    (discard,) = await pending_discards(services)
    assert discard.status == PENDING
    due_in = (discard.available_at - utcnow()).total_seconds()
    assert WEEK - 60 < due_in <= WEEK

    # A week later the job runs, and the upload is gone.
    later = utcnow() + timedelta(seconds=WEEK + 1)
    monkeypatch.setattr("petpal.media.service.utcnow", lambda: later)
    async with services.db.write_session() as session:
        await session.execute(
            update(OutboxJob)
            .where(OutboxJob.id == discard.id)
            .values(available_at=utcnow())
        )
    await drain_jobs(services)
    assert stored_uploads(services) == []
    row = await media_row(services, media["id"])
    assert (row.status, row.incoming_key) == ("failed", None)
    assert row.failure_reason == media["failure_reason"]

    # A replay after that has nothing to process: the photo stays failed.
    monkeypatch.undo()
    assert await replay_dead_jobs(services.db) == 1
    await drain_jobs(services)
    fetched = await client.get(f"/api/v1/media/{media['id']}", headers=user.headers)
    assert fetched.json()["status"] == "failed"


async def test_a_discard_scheduled_before_a_replay_spares_a_later_failure(
    stack: tuple[httpx.AsyncClient, Services],
    processing_breaks: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, services = stack
    user = await a_user(client)
    media = await an_uploaded_photo(client, user, GPS_PHOTO, services)
    # Replayed, and dead again: the first failure's discard must not count.
    assert await replay_dead_jobs(services.db) == 1
    await drain_jobs(services)
    assert (await media_row(services, media["id"])).status == "failed"
    first, _second = await pending_discards(services)
    first_failed_at = datetime.fromisoformat(first.payload["failed_at"])
    just_after_first = first_failed_at + timedelta(seconds=WEEK + 0.001)
    monkeypatch.setattr("petpal.media.service.utcnow", lambda: just_after_first)
    await media_service.do_discard_upload(services, media["id"], first_failed_at)
    assert stored_uploads(services) == [f"incoming/{media['id']}"]


async def test_the_sweep_deletes_uploads_of_rows_removed_by_cascade(
    stack: tuple[httpx.AsyncClient, Services], storage_settings: Settings
) -> None:
    # An account removed by cascade takes its media rows along, but not
    # what they named in storage.
    client, services = stack
    assert services.relay is not None
    await services.relay.stop()  # the uploads stay processing
    leaving, staying = await a_user(client), await a_user(client)
    await an_uploaded_photo(client, leaving, GPS_PHOTO)
    kept = await an_uploaded_photo(client, staying, GPS_PHOTO)
    async with services.db.write_session() as session:
        await session.execute(delete(Account).where(Account.id == leaving.id))

    # Too fresh to tell from an upload whose row is still being written.
    assert await do_sweep_uploads(services) == media_service.UploadSweep(2, 0)

    services.settings = storage_settings.model_copy(
        update={"media_orphan_upload_grace_seconds": 0}
    )
    assert await do_sweep_uploads(services) == media_service.UploadSweep(2, 1)
    assert stored_uploads(services) == [f"incoming/{kept['id']}"]


async def test_the_sweep_deletes_expired_and_processed_uploads_only(
    stack: tuple[httpx.AsyncClient, Services],
    storage_settings: Settings,
    processing_breaks: None,
) -> None:
    client, services = stack
    user = await a_user(client)
    dead = await an_uploaded_photo(client, user, GPS_PHOTO, services)
    assert dead["status"] == "failed"
    services.settings = storage_settings.model_copy(
        update={"media_orphan_upload_grace_seconds": 0}
    )
    assert await do_sweep_uploads(services) == media_service.UploadSweep(1, 0)

    services.settings = services.settings.model_copy(
        update={"media_failed_upload_retention_seconds": 0}
    )
    assert await do_sweep_uploads(services) == media_service.UploadSweep(1, 1)
    assert stored_uploads(services) == []
    assert (await media_row(services, dead["id"])).incoming_key is None


def test_petpal_media_sweep_uploads(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("data_dir", "database_url", "redis_url", "cache_key_prefix"):
        monkeypatch.setenv(f"PETPAL_{name.upper()}", str(getattr(settings, name)))
    monkeypatch.setenv("PETPAL_SECRET_KEY", settings.secret_key)
    monkeypatch.setenv("PETPAL_MEDIA_ORPHAN_UPLOAD_GRACE_SECONDS", "0")
    orphan = settings.media_dir / "incoming" / "01J00000000000000000000000"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"a photo whose row never committed")
    left, kept = _scratch_files(settings.data_dir / "tmp")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["media", "sweep-uploads"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "1 of 1 stored upload(s) deleted" in result.output
    assert "2 abandoned scratch file(s) deleted" in result.output
    assert not orphan.exists()
    assert not any(path.exists() for path in left)
    assert all(path.exists() for path in kept)


def _scratch_files(scratch: Path) -> tuple[list[Path], list[Path]]:
    """What killed processes left in the scratch folder two hours ago (an
    upload being received, a job's folder), and two in use now (one a folder
    whose file was written just now)."""
    scratch.mkdir(parents=True, exist_ok=True)
    old = time.time() - 2 * 3600
    upload = scratch / "upload-left"
    upload.write_bytes(b"half an upload")
    job = scratch / "tmpjobleft"
    job.mkdir()
    (job / "source").write_bytes(b"a photo being decoded")
    busy = scratch / "tmpjobbusy"
    busy.mkdir()
    (busy / "source").write_bytes(b"a photo being decoded now")
    for path in (upload, job / "source", job, busy):
        os.utime(path, (old, old))
    receiving = scratch / "upload-now"
    receiving.write_bytes(b"an upload arriving")
    return [upload, job], [busy, busy / "source", receiving]


async def test_scratch_files_killed_processes_left_are_swept(
    stack: tuple[httpx.AsyncClient, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a trial, in distributed mode: a worker killed while it
    decoded a photo, or a server killed during an upload, left the file in
    the data directory's tmp folder for ever (only an embedded server, the
    folder's only user, emptied it at start). A process sweeps it when it
    next needs it after a while."""
    client, services = stack
    left, kept = _scratch_files(services.settings.data_dir / "tmp")
    monkeypatch.setattr(media_service, "_scratch_swept_at", {})
    user = await a_user(client)
    photo = await an_uploaded_photo(client, user, GPS_PHOTO, services)
    assert photo["status"] == "ready"
    assert not any(path.exists() for path in left)
    assert all(path.exists() for path in kept)
    # Not again before the interval: one left now stays until then.
    late = services.settings.data_dir / "tmp" / "upload-late"
    late.write_bytes(b"x")
    os.utime(late, (0, 0))
    await an_uploaded_photo(client, user, GPS_PHOTO, services)
    assert late.exists()


async def _upload_in_two(
    client: httpx.AsyncClient,
    user: User,
    between: Callable[[list[Path]], None],
    scratch: Path,
) -> httpx.Response:
    """Upload the GPS photo in two pieces; ``between`` gets the scratch
    files of the upload being received, after the first."""
    photo = GPS_PHOTO.read_bytes()
    head = (
        b'--zzz\r\nContent-Disposition: form-data; name="file"; '
        b'filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    )

    async def body() -> AsyncIterator[bytes]:
        yield head + photo[:50]
        between(sorted(scratch.glob("upload-*")))  # noqa: ASYNC240 - a test's look
        yield photo[50:] + b"\r\n--zzz--\r\n"

    return await client.post(
        "/api/v1/media",
        headers={**user.headers, "content-type": "multipart/form-data; boundary=zzz"},
        content=body(),
    )


async def test_a_held_scratch_file_is_never_swept(
    stack: tuple[httpx.AsyncClient, Services],
) -> None:
    """Found by a trial: an upload arriving slowly kept the time its file
    was made (its bytes wait in the write buffer), so a sweep took it for a
    leftover and deleted it, and the upload ended in a 500."""
    client, services = stack
    user = await a_user(client)
    scratch = services.settings.data_dir / "tmp"
    seen: list[Path] = []

    def sweep_while_receiving(files: list[Path]) -> None:
        assert files
        for path in files:
            os.utime(path, (0, 0))
        seen.extend(files)
        assert media_service.sweep_scratch(scratch, 3600) == 0
        assert all(path.exists() for path in files)

    answer = await _upload_in_two(client, user, sweep_while_receiving, scratch)
    assert answer.status_code == 202, answer.text
    assert seen
    assert not any(path.exists() for path in seen)
    # A job's folder is held the same way while it runs.
    job = scratch / "tmpjob"
    job.mkdir()
    os.utime(job, (0, 0))
    with media_service.held_scratch(job):
        assert media_service.sweep_scratch(scratch, 3600) == 0
    assert media_service.sweep_scratch(scratch, 3600) == 1
    assert not job.exists()


async def test_an_upload_whose_scratch_file_vanished_is_a_problem(
    stack: tuple[httpx.AsyncClient, Services],
) -> None:
    """Deleted by hand under a live upload: a 503 saying to send it again,
    not a 500."""
    client, services = stack
    user = await a_user(client)

    def delete(files: list[Path]) -> None:
        for path in files:
            path.unlink()

    answer = await _upload_in_two(
        client, user, delete, services.settings.data_dir / "tmp"
    )
    assert_problem(answer, 503, "upload_lost")
    assert "Retry-After" in answer.headers
