"""An invalidation one process cannot deliver is delivered by another."""

from __future__ import annotations

from pathlib import Path

import httpx

from petpal.platform.services import Services
from petpal.platform.settings import Settings
from petpal.social import service
from petpal.social.schemas import PostEdit
from tests.conftest import requires_redis
from tests.factories import drain_jobs
from tests.social.builders import a_member, a_photo, a_post


@requires_redis
async def test_a_process_cut_off_from_redis_has_others_forget_what_it_changed(
    client: httpx.AsyncClient, services: Services, settings: Settings, photos: Path
) -> None:
    """Found by a trial: while one server process could not reach Redis,
    the posts it deleted and the captions it edited were served by the
    other processes, from the cache they share, for as long as it was cut
    off. Its invalidations are handed to the others, through the outbox."""
    alice = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    edited = await a_post(client, alice, media_id, "before")
    deleted = await a_post(client, alice, media_id, "going")
    for post in (edited, deleted):  # cached by this process
        assert (await client.get(f"/api/v1/posts/{post['id']}")).status_code == 200

    # Another process of the same deployment, whose Redis does not answer.
    cut_off = Services.build(
        settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    )
    try:
        await service.do_edit_post(
            cut_off, edited["id"], alice.id, PostEdit(caption="after")
        )
        await service.do_delete_post(cut_off, deleted["id"], alice.id)
    finally:
        await cut_off.close()  # after its hand-overs are written

    await drain_jobs(services)  # this process runs the jobs, and reaches Redis
    shown = await client.get(f"/api/v1/posts/{edited['id']}")
    assert shown.json()["caption"] == "after"
    gone = await client.get(f"/api/v1/posts/{deleted['id']}")
    assert gone.status_code == 404
