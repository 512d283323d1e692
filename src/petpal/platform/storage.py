"""Object storage for media: local disk embedded, S3-compatible distributed.

Keys are relative paths such as ``media/01J…/small.jpg``. Only processed,
metadata-free variants are ever served; raw uploads live under ``incoming/``
until their job has replaced them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import NotFoundError as _StoreNotFoundError
from obstore.store import LocalStore, ObjectStore, from_url

from petpal.platform.settings import Settings

if TYPE_CHECKING:
    from obstore import GetResult  # in the type stubs only

# How long the store may take to hand over the next chunk of an object being
# streamed before the stream is given up.
STREAM_CHUNK_SECONDS = 30.0

__all__ = ["ObjectNotFoundError", "Storage"]

# The local store reports a missing object as FileNotFoundError, remote ones
# as obstore's NotFoundError: callers catch either through this one name.
ObjectNotFoundError = (_StoreNotFoundError, FileNotFoundError)


async def _chunks(result: GetResult, min_size: int) -> AsyncIterator[bytes]:
    """An object's bytes as they come; a chunk that does not come within
    ``STREAM_CHUNK_SECONDS`` raises ``TimeoutError``.

    Found by a trial: a file shortened while it was read left obstore, and
    the client of the answer streaming it, waiting for ever. A server cuts
    such an answer off; a job fails and is retried.
    """
    parts = result.stream(min_chunk_size=min_size).__aiter__()
    while True:
        try:
            async with asyncio.timeout(STREAM_CHUNK_SECONDS):
                chunk = await parts.__anext__()
        except StopAsyncIteration:
            return
        yield bytes(chunk)


class Storage:
    def __init__(self, settings: Settings) -> None:
        self.store: ObjectStore
        # Object stores keep the content type with the object; the local file
        # system cannot, and the file route derives it from the key instead.
        self._keeps_attributes = bool(settings.storage_url)
        if settings.storage_url:
            self.store = from_url(settings.storage_url)
        else:
            settings.media_dir.mkdir(parents=True, exist_ok=True)
            # A folder a deletion leaves empty goes with its last file: a
            # released photo left its media/<id>/ behind, one per photo
            # (found by a trial). A write into a folder being removed
            # makes it again.
            self.store = LocalStore(
                settings.media_dir.resolve(), mkdir=True, automatic_cleanup=True
            )
        self.base_url = settings.media_base_url.rstrip("/")

    def url_for(self, key: str) -> str:
        return f"{self.base_url}/{key}"

    async def put(self, key: str, data: bytes | Path, content_type: str) -> None:
        if self._keeps_attributes:
            await obstore.put_async(
                self.store, key, data, attributes={"Content-Type": content_type}
            )
        else:
            await obstore.put_async(self.store, key, data)

    async def get_bytes(self, key: str) -> bytes:
        result = await obstore.get_async(self.store, key)
        return bytes(await result.bytes_async())

    async def download_to(self, key: str, target: Path) -> None:
        result = await obstore.get_async(self.store, key)
        with target.open("wb") as out:
            async for chunk in _chunks(result, 1024 * 1024):
                out.write(chunk)

    async def size(self, key: str) -> int:
        """The size of an object, without reading it; raises ObjectNotFoundError."""
        meta = await obstore.head_async(self.store, key)
        return int(meta["size"])

    async def stream(self, key: str) -> tuple[int, AsyncIterator[bytes]]:
        """Size and chunks of an object; raises ObjectNotFoundError."""
        result = await obstore.get_async(self.store, key)
        size = int(result.meta["size"])

        return size, _chunks(result, 256 * 1024)

    async def list_objects(
        self, prefix: str, batch_size: int = 1000
    ) -> AsyncIterator[list[tuple[str, datetime]]]:
        """Batches of (key, last modified) of the objects under ``prefix``."""
        async for batch in obstore.list(
            self.store, prefix=prefix.rstrip("/"), chunk_size=batch_size
        ):
            yield [(str(meta["path"]), meta["last_modified"]) for meta in batch]

    async def delete(self, key: str) -> None:
        with contextlib.suppress(*ObjectNotFoundError):
            await obstore.delete_async(self.store, key)

    async def check(self) -> None:
        """Raise if the store does not answer (used by /readyz)."""
        stream = obstore.list(self.store, prefix="media", chunk_size=1)
        next(iter(stream), None)
