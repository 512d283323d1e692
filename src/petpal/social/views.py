"""How posts are read: the page query's rows become full post views.

A page of posts starts with one query for the post ids with their like and
comment counts (the only mutable part of a post, see ``counted_query``),
which also tells which ids still exist: a deleted post drops out of every
list at once, whatever a cache still holds. Pages whose ids come from
elsewhere (home timelines) get the same two facts from the cache instead,
under ``post-counts:{id}``, which a deletion invalidates and which caches
"not found" (``counts_of``). The immutable rest of each post comes from the
cache under ``post:{id}``; the posts a page misses there are loaded
together, in one batch. Authors, media and pets come from their own
services' caches.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypedDict, cast

import orjson
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from petpal.identity.service import get_summaries
from petpal.media.service import media_views
from petpal.platform.ids import is_valid_id
from petpal.platform.pagination import InvalidCursorError, decode_cursor, encode_cursor
from petpal.platform.services import Services
from petpal.social.models import Like, Post, PostMedia, PostMention, PostPet, PostTag
from petpal.social.schemas import PetTag, PostView

POST_TTL = 3600.0
COUNTS_TTL = 600.0


def post_key(post_id: str) -> str:
    return f"post:{post_id}"


class Counted(NamedTuple):
    id: str
    like_count: int
    comment_count: int


def counted_query() -> Select[str, int, int]:
    return select(Post.id, Post.like_count, Post.comment_count)


def liked_key(viewer_id: str, post_id: str) -> str:
    return f"liked:{viewer_id}:{post_id}"


def counts_key(post_id: str) -> str:
    return f"post-counts:{post_id}"


async def read_counted(
    session: AsyncSession, query: Select[str, int, int]
) -> list[Counted]:
    return [Counted(*row) for row in (await session.execute(query))]


async def counts_of(services: Services, post_ids: Sequence[str]) -> dict[str, Counted]:
    """Like and comment counts of the existing posts among ``post_ids``.

    From the cache in one round trip; the posts it misses are loaded in one
    query. A post that is not in the result does not exist (any more).
    """
    keys = {counts_key(post_id): post_id for post_id in post_ids}

    async def load(missing: list[str]) -> dict[str, bytes | None]:
        wanted = [keys[key] for key in missing]
        async with services.db.read_session() as session:
            rows = await read_counted(
                session, counted_query().where(Post.id.in_(wanted))
            )
        return {
            counts_key(row.id): orjson.dumps([row.like_count, row.comment_count])
            for row in rows
        }

    found = await services.cache.get_or_load_many(list(keys), load, ttl=COUNTS_TTL)
    counted = {}
    for key, blob in found.items():
        if blob is not None:
            like_count, comment_count = orjson.loads(blob)
            counted[keys[key]] = Counted(keys[key], like_count, comment_count)
    return counted


def after_id(services: Services, scope: str, cursor: str | None) -> str | None:
    """The id a page continues below, from a cursor of the list ``scope``."""
    if cursor is None:
        return None
    last = decode_cursor(services.secret, scope, cursor).get("id")
    if not isinstance(last, str) or not is_valid_id(last):
        raise InvalidCursorError()
    return last


def next_cursor(
    services: Services, scope: str, ids: Sequence[str], has_more: bool
) -> str | None:
    if not has_more or not ids:
        return None
    return encode_cursor(services.secret, scope, {"id": ids[-1]})


async def likes_of(
    services: Services, viewer_id: str | None, post_ids: list[str]
) -> set[str] | None:
    """Which of ``post_ids`` ``viewer_id`` likes; None for an anonymous viewer.

    One cache key per (viewer, post), fetched in one round trip: a viewer's
    whole set of likes would grow without bound, a page's pairs do not.
    """
    if viewer_id is None:
        return None
    keys = {liked_key(viewer_id, post_id): post_id for post_id in post_ids}

    async def load(missing: list[str]) -> dict[str, bytes | None]:
        wanted = [keys[key] for key in missing]
        async with services.db.read_session() as session:
            liked = set(
                (
                    await session.scalars(
                        select(Like.post_id).where(
                            Like.account_id == viewer_id, Like.post_id.in_(wanted)
                        )
                    )
                ).all()
            )
        return {key: b"1" if keys[key] in liked else b"0" for key in missing}

    found = await services.cache.get_or_load_many(list(keys), load, ttl=POST_TTL)
    return {keys[key] for key, value in found.items() if value == b"1"}


class _PostBody(TypedDict):
    """The immutable part of a post, as cached under ``post:{id}``."""

    id: str
    author_id: str
    caption: str
    hashtags: list[str]
    mention_ids: list[str]
    media_ids: list[str]
    pet_ids: list[str]
    created_at: str


async def _load_bodies(services: Services, post_ids: list[str]) -> dict[str, bytes]:
    """The bodies of the existing posts among ``post_ids``, in five queries."""
    async with services.db.read_session() as session:
        posts = await session.execute(
            select(Post.id, Post.author_id, Post.caption, Post.created_at).where(
                Post.id.in_(post_ids)
            )
        )
        bodies: dict[str, dict[str, Any]] = {
            row.id: {
                "id": row.id,
                "author_id": row.author_id,
                "caption": row.caption,
                "hashtags": [],
                "mention_ids": [],
                "media_ids": [],
                "pet_ids": [],
                "created_at": row.created_at,
            }
            for row in posts
        }
        links: list[tuple[str, Any, Any]] = [
            ("hashtags", PostTag.tag, PostTag),
            ("mention_ids", PostMention.account_id, PostMention),
            ("media_ids", PostMedia.media_id, PostMedia),
            ("pet_ids", PostPet.pet_id, PostPet),
        ]
        for field, column, model in links:
            rows = await session.execute(
                select(model.post_id, column)
                .where(model.post_id.in_(list(bodies)))
                .order_by(model.post_id, model.position)
            )
            for post_id, value in rows:
                bodies[post_id][field].append(value)
    return {post_id: orjson.dumps(body) for post_id, body in bodies.items()}


class _BodyBatch:
    """Loads, in one batch, every post body its callers miss in the cache.

    Each caller goes through ``Cache.get_or_load`` (metrics, single flight,
    invalidation races); the loaders it starts for the missing keys of a page
    all wait here, and the first one schedules a single load for all of them.
    """

    def __init__(self, services: Services) -> None:
        self._services = services
        self._waiting: dict[str, asyncio.Future[bytes | None]] = {}
        self._task: asyncio.Task[None] | None = None

    async def load(self, post_id: str) -> bytes | None:
        future = self._waiting.get(post_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[post_id] = future
        if self._task is None:
            self._task = asyncio.create_task(self._dispatch())
        return await future

    async def _dispatch(self) -> None:
        # One turn of the loop lets the other keys of the page join the batch.
        await asyncio.sleep(0)
        waiting, self._waiting, self._task = self._waiting, {}, None
        try:
            bodies = await _load_bodies(self._services, list(waiting))
        except asyncio.CancelledError:
            for future in waiting.values():
                future.cancel()
            raise
        except Exception as exc:
            # Not swallowed: every waiter raises it from its own await.
            for future in waiting.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for post_id, future in waiting.items():
            if not future.done():
                future.set_result(bodies.get(post_id))


async def _post_bodies(services: Services, post_ids: list[str]) -> dict[str, _PostBody]:
    batch = _BodyBatch(services)
    blobs = await asyncio.gather(
        *(
            services.cache.get_or_load(
                post_key(post_id),
                functools.partial(batch.load, post_id),
                ttl=POST_TTL,
            )
            for post_id in post_ids
        )
    )
    return {
        post_id: cast(_PostBody, orjson.loads(blob))
        for post_id, blob in zip(post_ids, blobs, strict=True)
        if blob is not None
    }


async def _pet_tags(services: Services, pet_ids: list[str]) -> dict[str, PetTag]:
    if not pet_ids:
        return {}
    # Imported on use: pets may come to call social, and two services that
    # import each other at module level would make an import cycle.
    from petpal.pets.service import pet_summaries

    summaries = await pet_summaries(services, pet_ids)
    return {
        pet_id: PetTag.model_validate(summary.model_dump(mode="json"))
        for pet_id, summary in summaries.items()
    }


async def post_views(
    services: Services, counted: Sequence[Counted], liked: set[str] | None
) -> list[PostView]:
    """Views of the posts in ``counted``, in its order; vanished ones are left out."""
    if not counted:
        return []
    bodies = await _post_bodies(services, [c.id for c in counted])
    present = list(bodies.values())
    # Independent look-ups, so their round trips overlap.
    accounts, media, pets = await asyncio.gather(
        get_summaries(
            services,
            [b["author_id"] for b in present]
            + [m for b in present for m in b["mention_ids"]],
        ),
        media_views(services, [m for b in present for m in b["media_ids"]]),
        _pet_tags(services, [p for b in present for p in b["pet_ids"]]),
    )
    views = []
    for post_id, like_count, comment_count in counted:
        body = bodies.get(post_id)
        author = accounts.get(body["author_id"]) if body else None
        if body is None or author is None:
            continue
        views.append(
            PostView(
                id=post_id,
                author=author,
                caption=body["caption"],
                hashtags=body["hashtags"],
                mentions=[
                    accounts[m].username for m in body["mention_ids"] if m in accounts
                ],
                media=[media[m] for m in body["media_ids"] if m in media],
                pets=[pets[p] for p in body["pet_ids"] if p in pets],
                like_count=like_count,
                comment_count=comment_count,
                liked_by_me=None if liked is None else post_id in liked,
                created_at=datetime.fromisoformat(body["created_at"]),
            )
        )
    return views
