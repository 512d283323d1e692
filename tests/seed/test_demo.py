"""The demo data ``python3 dev.py run`` seeds: made whole, made once, and
never left half made without saying so."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from petpal.platform.app import create_app
from petpal.platform.settings import Settings
from petpal.seed.demo import DEMO_OWNERS, SeedError, seed_demo
from petpal.social.service import do_delete_comment
from tests.conftest import RUN_TAG, TEST_BROKER_URL, requires_broker, requires_redis


async def test_the_demo_is_seeded_whole_even_under_small_rate_limits(
    settings: Settings,
) -> None:
    """Found by a trial: with PETPAL_RATE_LIMIT_SIGN_UP=3/minute the fourth
    sign-up was refused, the run died, and the next run said the demo data
    was there with an owner, her pets and posts missing."""
    limited = settings.model_copy(
        update={
            "rate_limits_enabled": True,
            "rate_limit_sign_up": "1/minute",
            "rate_limit_upload": "1/minute",
            "rate_limit_post": "1/minute",
            "rate_limit_like": "1/minute",
        }
    )
    said = await seed_demo(limited)
    assert said.startswith(f"seeded {len(DEMO_OWNERS)} accounts"), said
    assert await seed_demo(limited) == "the demo data is already there"

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://petpal.test"
        ) as client:
            for name in DEMO_OWNERS:
                posts = await client.get(f"/api/v1/accounts/{name}/posts")
                assert posts.status_code == 200, name
                assert posts.json()["items"], name
                assert all(p["comment_count"] == 1 for p in posts.json()["items"])
            # A seed that stopped part way: the last comment is gone.
            last = list(DEMO_OWNERS)[-1]
            newest = (await client.get(f"/api/v1/accounts/{last}/posts")).json()
            post = newest["items"][0]
            comments = await client.get(f"/api/v1/posts/{post['id']}/comments")
            services = app.state.services
            for comment in comments.json()["items"]:
                await do_delete_comment(
                    services, comment["id"], comment["author"]["id"]
                )
    with pytest.raises(SeedError, match="incomplete"):
        await seed_demo(settings)


@requires_broker
async def test_the_demo_is_seeded_with_a_broker_and_no_worker_running(
    settings: Settings,
) -> None:
    """Found by a trial: with ``PETPAL_BROKER_URL`` set, ``petpal seed``
    waited for an in-process relay there is none of, and failed on an
    assertion after the sign-ups and uploads; the next run said the demo
    was half made. Its photos are processed in their requests; the jobs it
    queues wait for the relay and workers."""
    distributed = settings.model_copy(
        update={
            "broker_url": TEST_BROKER_URL,
            "broker_prefix": f"petpal-test.{RUN_TAG}.seed.",
        }
    )
    said = await seed_demo(distributed)
    assert said.startswith(f"seeded {len(DEMO_OWNERS)} accounts"), said
    app = create_app(distributed)
    async with app.router.lifespan_context(app):
        assert app.state.services.relay is None  # no job runs in this process
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://petpal.test"
        ) as client:
            for name in DEMO_OWNERS:
                posts = (await client.get(f"/api/v1/accounts/{name}/posts")).json()
                photos = [m for p in posts["items"] for m in p["media"]]
                assert photos, name
                assert all(m["status"] == "ready" for m in photos), photos
    assert await seed_demo(distributed) == "the demo data is already there"


@requires_redis
async def test_a_cache_kept_from_an_earlier_database_does_not_stop_the_seed(
    settings: Settings, migrated_template: Path, tmp_path: Path
) -> None:
    """Found by a trial: after the database was dropped and made again, the
    Redis it shared still mapped the demo's names to the old accounts, and
    the seed said the demo data was half made."""
    await seed_demo(settings)
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    shutil.copyfile(migrated_template, fresh_dir / "petpal.sqlite3")
    # Another, empty database; the same Redis and key prefix.
    fresh = settings.model_copy(update={"database_url": "", "data_dir": fresh_dir})
    said = await seed_demo(fresh)
    assert said.startswith(f"seeded {len(DEMO_OWNERS)} accounts"), said
