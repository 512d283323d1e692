"""Object storage: a stream that stops coming is given up, not waited on."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from petpal.platform import storage as storage_module
from petpal.platform.services import Services


async def test_a_file_shortened_while_it_is_read_ends_the_stream_with_an_error(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a trial: the local store waited for ever for the bytes a
    truncated file no longer had, and so did the client of /media-files."""
    if services.settings.storage_url:
        pytest.skip("the file is truncated on the local disk")
    monkeypatch.setattr(storage_module, "STREAM_CHUNK_SECONDS", 0.5)
    key = "media/STALLSTALLSTALLSTALLSTAL/large.jpg"
    size = 40 * 1024 * 1024
    await services.storage.put(key, os.urandom(size), "image/jpeg")
    declared, chunks = await services.storage.stream(key)
    assert declared == size
    first = await anext(chunks)
    os.truncate(services.settings.media_dir / key, len(first))
    received = [first]

    async def read_on() -> None:
        async for chunk in chunks:
            received.append(chunk)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(read_on(), timeout=10)  # the test's own bound
    assert sum(map(len, received)) < size
    assert time.monotonic() - started < 5  # the store's timeout, not ours
