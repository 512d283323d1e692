"""Uploads and their processing state.

The upload request only streams bytes to storage, checks the header, records
the media as ``processing`` and queues the job; decoding happens in
``do_process``, which the ``media.process`` job (:mod:`petpal.media.tasks`)
runs. Public functions for other services: ``require_ready_media``,
``display_urls``, ``media_views`` and ``media_json``.

``settings.media_process_inline`` is a benchmark baseline only: the upload
request then runs ``do_process`` itself before answering.

The raw upload (``incoming/<id>`` in storage) may carry the uploader's GPS
position, so it lives no longer than it is needed, and the media row names
it (``incoming_key``) until the object is gone, so that nothing can be
forgotten in storage:

- ``ready`` or ``failed`` for an unreadable photo: ``do_process`` deletes it
  once the outcome is recorded; a crash in between leaves the row naming it,
  and the job's next delivery finishes the deletion.
- ``failed`` because its job died (:func:`do_fail_processing`): kept for
  ``media_failed_upload_retention_seconds``, so that ``petpal jobs replay``
  can still process it, then deleted by the ``media.discard_upload`` job
  that the death scheduled (:func:`do_discard_upload`).
- an upload no row names (its row was never committed, or was removed with
  its account by cascade): ``petpal media sweep-uploads``
  (:func:`do_sweep_uploads`) deletes it, and any upload the rules above
  should have deleted, once it is older than
  ``media_orphan_upload_grace_seconds``.

A ready photo is shown by posts, pets and avatars. A write that stops
showing one (a post deleted, a pet deleted or given another photo, an
avatar changed) queues ``media.release`` with it (:func:`queue_release`),
in its own transaction; the job deletes the photo if nothing shows it any
more (:func:`do_release_media`), and ``media.delete_files`` then deletes
its sizes from storage. So a deleted post's photo stops being served, and
one still shown elsewhere stays. A photo uploaded and never used is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import structlog
from sqlalchemy import Update, delete, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from petpal.identity.service import on_account_deletion
from petpal.media.imaging import (
    ImageFailed,
    ImageLimits,
    ImageRejected,
    inspect_header,
    process_image,
)
from petpal.media.models import FAILED, PROCESSING, READY, Media
from petpal.media.schemas import MediaView, VariantView
from petpal.media.upload import receive_file
from petpal.platform.db import rowcount, utcnow
from petpal.platform.errors import (
    RETRY_AFTER_SECONDS,
    InvalidInputError,
    NotFoundError,
    ProblemError,
)
from petpal.platform.ids import is_valid_id, new_id
from petpal.platform.jobs import enqueue, enqueue_chunked, record_dead
from petpal.platform.services import Services

log = structlog.get_logger(__name__)

PROCESS_JOB = "media.process"
DISCARD_UPLOAD_JOB = "media.discard_upload"
RELEASE_JOB = "media.release"
DELETE_FILES_JOB = "media.delete_files"
INCOMING_PREFIX = "incoming/"
DISPLAY_VARIANT = "medium"
READY_TTL = 3600.0


def media_key(media_id: str) -> str:
    return f"media:{media_id}"


def image_limits(services: Services) -> ImageLimits:
    return ImageLimits(
        max_bytes=services.settings.max_upload_bytes,
        max_pixels=services.settings.max_upload_pixels,
    )


async def do_upload(services: Services, owner_id: str, request: Request) -> Media:
    limits = image_limits(services)
    received = await receive_file(request, await _scratch(services), limits.max_bytes)
    try:
        try:
            header = await asyncio.to_thread(inspect_header, received.path, limits)
        except ImageRejected as exc:
            raise ProblemError(exc.status, exc.code, exc.detail) from exc
        media_id = new_id()
        incoming_key = f"{INCOMING_PREFIX}{media_id}"
        await services.storage.put(incoming_key, received.path, header.content_type)
    except FileNotFoundError as exc:
        # Its scratch file was deleted under it (by hand: the sweep leaves
        # held files alone); a 500 said nothing of what to do.
        raise ProblemError(
            503,
            "upload_lost",
            "the upload was lost on the server before it was stored; send it again",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from exc
    finally:
        received.path.unlink(missing_ok=True)
    media = Media(
        id=media_id,
        owner_id=owner_id,
        status=PROCESSING,
        source_format=header.format,
        byte_size=received.size,
        incoming_key=incoming_key,
        width=header.width,
        height=header.height,
        animated=header.frames > 1,
        variants=[],
        created_at=utcnow(),
    )
    inline = services.settings.media_process_inline
    try:
        async with services.db.write_session() as session:
            session.add(media)
            if not inline:
                enqueue(session, PROCESS_JOB, {"media_id": media_id})
    except IntegrityError:
        # Refused (an owner who does not exist: 401), so no row names the
        # stored upload: deleted now, not left for ``do_sweep_uploads``
        # (found by a trial). Any other failure may have committed, and
        # the sweep knows, as it does if this deletion fails.
        try:
            await services.storage.delete(incoming_key)
        except Exception as exc:  # the refusal is the answer, not this
            log.warning("media.upload_not_deleted", key=incoming_key, error=repr(exc))
        raise
    if not inline:
        return media
    await _process_inline(services, media_id)
    async with services.db.read_session() as session:
        processed = await session.get(Media, media_id)
    # Deleted meanwhile only if its owner was: nothing newer to show then.
    return processed or media


async def _process_inline(services: Services, media_id: str) -> None:
    """Run ``do_process`` in the request; if it raises, end as the job would.

    The queued job retries and, dead, leaves the photo ``failed`` for a replay;
    here the one attempt is recorded as that dead job, through the same hook,
    and the request answers a problem instead of leaving the photo
    ``processing`` forever behind a 500.
    """
    try:
        await do_process(services, media_id)
    except Exception as exc:
        error = "".join(traceback.format_exception_only(exc)).strip()
        log.warning("media.inline_processing_failed", media_id=media_id, error=error)
        async with services.db.write_session() as session:
            await record_dead(session, PROCESS_JOB, {"media_id": media_id}, error)
        raise ProblemError(
            503,
            "processing_failed",
            "the photo could not be processed now; it is recorded as failed",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            extra={"media_id": media_id},
        ) from exc


async def do_process(services: Services, media_id: str) -> None:
    """Decode an upload, store its variants and record it ``ready`` (or
    ``failed``, with a reason); the raw upload is deleted either way.

    Idempotent: media no longer ``processing`` is left as it is (but for an
    upload a crash kept, which is deleted now), and the variants' keys depend
    only on the media id and the variant, so a second run overwrites instead
    of adding a second set. The one exception is media failed by
    :func:`do_fail_processing` (its job died; the upload is kept): a replayed
    job takes it back to ``processing`` and tries again.
    """
    async with services.db.read_session() as session:
        media = await session.get(Media, media_id)
    if media is None or media.incoming_key is None:
        return  # already done by an earlier delivery, or deleted
    if media.status == READY:
        # The outcome was recorded but the upload not deleted (the process
        # died, or storage failed, in between): finish that now.
        await _delete_upload(services, media_id, media.incoming_key)
        return
    if media.status == FAILED:
        if not await _resume_processing(services, media_id):
            return  # resumed by another delivery meanwhile
    elif media.status != PROCESSING:
        return
    incoming_key = media.incoming_key

    with (
        tempfile.TemporaryDirectory(dir=await _scratch(services)) as workdir,
        held_scratch(Path(workdir)),
    ):
        source = Path(workdir) / "source"
        await services.storage.download_to(incoming_key, source)
        try:
            result = await asyncio.to_thread(
                process_image, source, image_limits(services)
            )
        except ImageFailed as exc:
            await _finish(services, media_id, status=FAILED, failure_reason=exc.reason)
            await _delete_upload(services, media_id, incoming_key)
            log.info("media.failed", media_id=media_id, reason=exc.reason)
            return

    variants = []
    for variant in result.variants:
        key = f"media/{media_id}/{variant.name}.{variant.extension}"
        await services.storage.put(key, variant.data, variant.content_type)
        variants.append(
            {
                "name": variant.name,
                "key": key,
                "width": variant.width,
                "height": variant.height,
                "content_type": variant.content_type,
            }
        )
    finished = await _finish(
        services,
        media_id,
        status=READY,
        width=result.width,
        height=result.height,
        animated=result.animated,
        blurhash=result.blurhash,
        variants=variants,
    )
    if not finished and not await _still_there(services, media_id):
        # Its account was deleted while it was processed, after the deletion
        # listed its files: what was stored since goes now.
        for stored in variants:
            await services.storage.delete(str(stored["key"]))
    await _delete_upload(services, media_id, incoming_key)


async def do_fail_processing(session: AsyncSession, media_id: str, reason: str) -> None:
    """Record media ``failed`` because its job gave up, in ``session``.

    The raw upload is kept, so that ``petpal jobs replay`` can process it
    once the cause (a storage outage, say) is gone, and a
    ``media.discard_upload`` job is queued to delete it once the retention
    has passed. No cache entry needs dropping: only ready media is cached.
    """
    failed_at = utcnow()
    result = await session.execute(
        update(Media)
        .where(Media.id == media_id, Media.status == PROCESSING)
        .values(status=FAILED, failure_reason=reason, processed_at=failed_at)
    )
    if rowcount(result):
        enqueue(
            session,
            DISCARD_UPLOAD_JOB,
            {"media_id": media_id, "failed_at": failed_at.isoformat()},
        )


async def do_discard_upload(
    services: Services, media_id: str, failed_at: datetime
) -> None:
    """Delete the upload of media that failed at ``failed_at``, once expired.

    Runs as soon as the death is recorded (a dead-job hook cannot read the
    settings) and, before the retention has passed, only queues itself again
    for when it has. Media replayed meanwhile is left alone: ``ready`` lost
    its upload when processed, and media that failed again since has a job
    of its own, counted from the later failure.
    """
    retention = timedelta(
        seconds=services.settings.media_failed_upload_retention_seconds
    )
    not_before = failed_at + retention
    now = utcnow()
    if now < not_before:
        async with services.db.write_session() as session:
            enqueue(
                session,
                DISCARD_UPLOAD_JOB,
                {"media_id": media_id, "failed_at": failed_at.isoformat()},
                delay=not_before - now,
            )
        return
    async with services.db.read_session() as session:
        media = await session.get(Media, media_id)
    if media is None or media.incoming_key is None:
        return
    if media.status == READY:
        await _delete_upload(services, media_id, media.incoming_key)
        return
    failed_since = media.processed_at is not None and media.processed_at > failed_at
    if media.status != FAILED or failed_since:
        return
    # Unnamed first, then deleted: a replay from now on finds no upload and
    # leaves the photo failed, instead of racing the deletion.
    if not await _unname_upload(services, media_id, media.incoming_key):
        return
    await services.storage.delete(media.incoming_key)
    log.info("media.upload_discarded", media_id=media_id)


@dataclass(frozen=True)
class UploadSweep:
    """What :func:`do_sweep_uploads` found under ``incoming/``."""

    examined: int
    deleted: int


async def do_sweep_uploads(services: Services) -> UploadSweep:
    """Delete every stored upload that nothing needs any more.

    Kept: uploads of media still ``processing``, and of media failed by its
    job's death within the retention (a replay needs them). Deleted, once
    older than ``media_orphan_upload_grace_seconds``: the rest, above all
    uploads no media row names, which nothing else would ever find: a row
    removed with its account by cascade, an upload whose row never committed,
    a discard job that was lost. Safe to run at any time and from anywhere.
    """
    settings = services.settings
    now = utcnow()
    stored_before = now - timedelta(seconds=settings.media_orphan_upload_grace_seconds)
    failed_before = now - timedelta(
        seconds=settings.media_failed_upload_retention_seconds
    )
    examined = deleted = 0
    async for batch in services.storage.list_objects(INCOMING_PREFIX):
        examined += len(batch)
        stored = {
            key: key.removeprefix(INCOMING_PREFIX)
            for key, modified in batch
            if modified <= stored_before
        }
        async with services.db.read_session() as session:
            rows = await session.execute(
                select(Media.id, Media.status, Media.processed_at).where(
                    Media.id.in_(list(stored.values())),
                    Media.incoming_key.in_(list(stored)),
                )
            )
            needed = {
                row.id
                for row in rows
                if row.status == PROCESSING
                or (
                    row.status == FAILED
                    and row.processed_at is not None
                    and row.processed_at > failed_before
                )
            }
        for key, media_id in stored.items():
            if media_id not in needed and await _unname_upload(services, media_id, key):
                await services.storage.delete(key)
                deleted += 1
    log.info("media.uploads_swept", examined=examined, deleted=deleted)
    return UploadSweep(examined=examined, deleted=deleted)


async def _unname_upload(services: Services, media_id: str, key: str) -> bool:
    """Stop naming ``key`` unless a replay took its media back meanwhile.

    Unnamed before it is deleted: a crash in between leaves an upload no row
    names, which the next sweep deletes.
    """
    async with services.db.write_session() as session:
        result = await session.execute(_stop_naming(media_id, key))
        if rowcount(result):
            return True
        still_named = await session.scalar(
            select(Media.id).where(Media.id == media_id, Media.incoming_key == key)
        )
    return still_named is None


async def _delete_upload(services: Services, media_id: str, incoming_key: str) -> None:
    """Delete the upload of processed media, then stop naming it.

    In this order so that a crash in between leaves a row that still names
    the upload, for the job's next delivery to delete it.
    """
    await services.storage.delete(incoming_key)
    async with services.db.write_session() as session:
        await session.execute(_stop_naming(media_id, incoming_key))


def _stop_naming(media_id: str, key: str) -> Update:
    """The update that makes a media row stop naming its upload ``key``;
    it leaves a row that a replay took back to ``processing`` alone."""
    return (
        update(Media)
        .where(
            Media.id == media_id,
            Media.incoming_key == key,
            Media.status != PROCESSING,
        )
        .values(incoming_key=None)
    )


async def _resume_processing(services: Services, media_id: str) -> bool:
    """Take media failed by its job's death back to ``processing``."""
    async with services.db.write_session() as session:
        result = await session.execute(
            update(Media)
            .where(
                Media.id == media_id,
                Media.status == FAILED,
                Media.incoming_key.is_not(None),
            )
            .values(status=PROCESSING, failure_reason=None, processed_at=None)
        )
    return rowcount(result) > 0


# --- scratch files -----------------------------------------------------------------

# An upload being received and a photo being decoded live in the data
# directory's ``tmp`` folder, deleted when their request or job ends,
# whatever its outcome. Only a process that was killed leaves one there (up
# to 25 MB each; found by a trial, in distributed mode, where several
# processes share the folder and none may empty it at start). Each is held
# with a shared lock (``flock``) while in use, which the system drops when
# its process dies: the sweep deletes an entry whose exclusive lock it can
# take, and which nothing has changed in for this long (the lock is taken
# a moment after the entry is made; an upload's file, once closed, waits
# seconds for its storage).
SCRATCH_ABANDONED_SECONDS = 3600.0
# Each process looks for leftovers when it next needs the folder after this
# long, and `petpal media sweep-uploads` does whenever it runs.
SCRATCH_SWEEP_INTERVAL_SECONDS = 600.0
_scratch_swept_at: dict[Path, float] = {}


async def _scratch(services: Services) -> Path:
    """The scratch folder, swept of leftovers now and then."""
    path = services.settings.data_dir / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    now = time.monotonic()
    last = _scratch_swept_at.get(path)
    if last is None or now - last >= SCRATCH_SWEEP_INTERVAL_SECONDS:
        _scratch_swept_at[path] = now
        await asyncio.to_thread(sweep_scratch, path, SCRATCH_ABANDONED_SECONDS)
    return path


@contextlib.contextmanager
def held_scratch(path: Path) -> Iterator[None]:
    """Hold the scratch entry ``path`` as in use (see ``sweep_scratch``)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH)
        yield
    finally:
        os.close(descriptor)


def sweep_scratch(path: Path, older_than_seconds: float) -> int:
    """Delete what killed processes left in the scratch folder ``path``:
    each entry no process holds and nothing in has changed for
    ``older_than_seconds``; how many."""
    cutoff = time.time() - older_than_seconds
    deleted = 0
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if _last_change(entry) >= cutoff:
                continue
            if not _delete_unless_held(entry):
                continue
        except FileNotFoundError:
            continue  # its request or job ended meanwhile
        except OSError as exc:
            log.warning("media.scratch_not_deleted", path=entry.path, error=repr(exc))
            continue
        deleted += 1
    if deleted:
        log.info("media.scratch_swept", path=str(path), deleted=deleted)
    return deleted


def _delete_unless_held(entry: os.DirEntry[str]) -> bool:
    """Delete ``entry`` if no process holds it; True if it was deleted."""
    if entry.is_symlink():
        os.unlink(entry.path)  # none of ours: removed, never followed
        return True
    descriptor = os.open(entry.path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # in use, however old it looks
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
        return True
    finally:
        os.close(descriptor)


def _last_change(entry: os.DirEntry[str]) -> float:
    """The newest modification time of ``entry`` and all it holds."""
    newest = entry.stat(follow_symlinks=False).st_mtime
    if entry.is_dir(follow_symlinks=False):
        for folder, _, files in os.walk(entry.path):
            for name in [folder, *(os.path.join(folder, f) for f in files)]:
                newest = max(newest, os.lstat(name).st_mtime)
    return newest


async def _finish(services: Services, media_id: str, **values: Any) -> bool:
    """Record the outcome of processing; False if the media was no longer
    ``processing`` (another delivery finished it, or it is gone)."""
    async with services.db.write_session() as session:
        result = await session.execute(
            update(Media)
            .where(Media.id == media_id, Media.status == PROCESSING)
            .values(processed_at=utcnow(), **values)
        )
    await services.cache.invalidate(media_key(media_id))
    return rowcount(result) > 0


async def _still_there(services: Services, media_id: str) -> bool:
    async with services.db.read_session() as session:
        found = await session.scalar(select(Media.id).where(Media.id == media_id))
    return found is not None


def queue_release(session: AsyncSession, media_ids: Iterable[str | None]) -> None:
    """Queue ``media.release`` for ``media_ids`` (None left out) in
    ``session``, the write that stops showing them."""
    released = sorted({media_id for media_id in media_ids if media_id})
    if released:
        enqueue(session, RELEASE_JOB, {"media_ids": released})


def _shown_anywhere() -> Any:
    """SQL: whether a post, an avatar or a pet shows the media row's photo.

    The media service reads the other services' columns here, where a
    photo's life is decided, rather than trusting each of them to report
    every use: a use forgotten would delete a photo still shown.
    """
    from petpal.identity.models import Account
    from petpal.pets.models import Pet
    from petpal.social.models import PostMedia

    return or_(
        exists().where(PostMedia.media_id == Media.id),
        exists().where(Account.avatar_media_id == Media.id),
        exists().where(Pet.photo_media_id == Media.id),
    )


async def do_release_media(services: Services, media_ids: Sequence[str]) -> None:
    """Delete each of ``media_ids`` that nothing shows any more (the
    ``media.release`` job); its files go by ``media.delete_files``, queued
    with the deletion.

    A post that takes a photo up at the same moment either commits first,
    and the deletion sees it, or fails its foreign key and is told the
    photo does not exist. An avatar or a pet's photo has no foreign key:
    one set to a photo this job is deleting shows no photo (the owner would
    have to re-use the id of a photo they just stopped showing).
    """
    for media_id in media_ids:
        try:
            async with services.db.write_session() as session:
                gone = (
                    await session.execute(
                        delete(Media)
                        .where(Media.id == media_id, ~_shown_anywhere())
                        .returning(Media.variants, Media.incoming_key)
                    )
                ).one_or_none()
                if gone is None:
                    continue  # still shown, or deleted already
                keys = _stored_keys([gone])
                _queue_file_deletion(session, keys)
        except IntegrityError:
            continue  # a post took it up meanwhile: its foreign key says so
        log.info("media.released", media_id=media_id, files=len(keys))
        await services.cache.invalidate(media_key(media_id))


# Files a deletion job carries.
DELETE_FILES_CHUNK = 500


def _stored_keys(rows: Sequence[Any]) -> list[str]:
    """The storage keys of the media ``rows`` (with their ``variants`` and
    ``incoming_key``): each size, and any raw upload."""
    keys = [variant["key"] for row in rows for variant in row.variants or []]
    return keys + [row.incoming_key for row in rows if row.incoming_key]


def _queue_file_deletion(session: AsyncSession, keys: Sequence[str]) -> None:
    """Queue ``media.delete_files`` for ``keys`` in ``session``, the write
    that deletes their media rows."""
    enqueue_chunked(session, DELETE_FILES_JOB, "keys", keys, DELETE_FILES_CHUNK)


@on_account_deletion
async def delete_media_of(session: AsyncSession, account_id: str) -> list[str]:
    """What an account's deletion does here: its photos' rows go by the
    cascade, and their files (each size, and any raw upload) by jobs
    committed with it."""
    rows = (
        await session.execute(
            select(Media.id, Media.variants, Media.incoming_key).where(
                Media.owner_id == account_id
            )
        )
    ).all()
    _queue_file_deletion(session, _stored_keys(rows))
    return [media_key(row.id) for row in rows]


async def do_delete_files(services: Services, keys: Sequence[str]) -> None:
    """Delete stored files of a released photo (the ``media.delete_files``
    job); a file already gone is no error."""
    for key in keys:
        await services.storage.delete(key)


def to_view(services: Services, media: Media) -> MediaView:
    ready = media.status == READY
    return MediaView(
        id=media.id,
        status=media.status,
        failure_reason=media.failure_reason,
        width=media.width if ready else None,
        height=media.height if ready else None,
        animated=media.animated,
        blurhash=media.blurhash,
        variants=[
            VariantView(
                name=v["name"],
                url=services.storage.url_for(v["key"]),
                width=v["width"],
                height=v["height"],
                content_type=v["content_type"],
            )
            for v in (media.variants if ready else [])
        ],
        created_at=media.created_at,
    )


async def get_media(
    services: Services, media_id: str, viewer_id: str | None
) -> MediaView:
    """A media item; others than its owner see it only once it is ready."""
    if is_valid_id(media_id):
        views = await media_views(services, [media_id])
        if media_id in views:
            return views[media_id]
        async with services.db.read_session() as session:
            media = await session.get(Media, media_id)
        if media is not None and media.owner_id == viewer_id:
            return to_view(services, media)
    raise NotFoundError("the media")


async def media_json(services: Services, media_ids: Iterable[str]) -> dict[str, bytes]:
    """The *ready* media among ``media_ids``, each as its view's JSON.

    Cached as that JSON, which never changes once ready: a page embeds it as
    it is, without building a model of it.
    """
    keys = {media_key(media_id): media_id for media_id in media_ids}
    if not keys:
        return {}

    async def load(missing: list[str]) -> dict[str, bytes | None]:
        async with services.db.read_session() as session:
            ready = await session.scalars(
                select(Media).where(
                    Media.id.in_([keys[k] for k in missing]), Media.status == READY
                )
            )
            return {
                media_key(m.id): to_view(services, m).model_dump_json().encode()
                for m in ready
            }

    # One cache round trip for the whole list, one query for what it misses.
    # A media item still processing is cached as missing only briefly.
    found = await services.cache.get_or_load_many(
        list(keys), load, ttl=READY_TTL, missing_ttl=2.0
    )
    return {keys[key]: blob for key, blob in found.items() if blob is not None}


async def media_views(
    services: Services, media_ids: Iterable[str]
) -> dict[str, MediaView]:
    """Views of the *ready* media among ``media_ids``, cached (they never change)."""
    return {
        media_id: MediaView.model_validate_json(blob)
        for media_id, blob in (await media_json(services, media_ids)).items()
    }


async def display_urls(services: Services, media_ids: Iterable[str]) -> dict[str, str]:
    """The display-size URL of each ready media item among ``media_ids``."""
    urls = {}
    for media_id, blob in (await media_json(services, media_ids)).items():
        # Read from the cached JSON directly: only one field is needed.
        by_name = {v["name"]: v["url"] for v in orjson.loads(blob)["variants"]}
        url = by_name.get(DISPLAY_VARIANT) or next(iter(by_name.values()), None)
        if url:
            urls[media_id] = url
    return urls


async def require_ready_media(
    session: AsyncSession, media_ids: list[str], owner_id: str
) -> None:
    """Raise 422 unless every id names a ready media item of ``owner_id``."""
    wanted = set(media_ids)
    if not all(is_valid_id(m) for m in wanted):
        raise InvalidInputError("invalid_media", "a media id is malformed")
    rows = await session.execute(
        select(Media.id, Media.owner_id, Media.status).where(Media.id.in_(wanted))
    )
    found = {row.id: row for row in rows}
    for media_id in media_ids:
        row = found.get(media_id)
        if row is None or row.owner_id != owner_id:
            raise InvalidInputError(
                "invalid_media", f"media {media_id} does not exist or is not yours"
            )
        if row.status != READY:
            raise InvalidInputError(
                "media_not_ready", f"media {media_id} is {row.status}, not ready"
            )
