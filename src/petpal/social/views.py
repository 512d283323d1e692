"""How posts are read: the page query's rows become full post views.

A page of posts served by the database starts with one query for the post
ids with their like and comment counts (the only mutable part of a post,
see ``counted_query``), which also tells which ids still exist: a deleted
post drops out of every list at once, whatever a cache still holds. Pages
whose ids come from elsewhere (timelines, see :mod:`petpal.social.feeds`;
the trending ranking) get the same two facts from the cache instead,
under ``post-counts:{id}``, which a deletion invalidates and which caches
"not found" (``counts_of``). The rest of each post (which changes only by
an edit of its caption, which invalidates it) comes from the
cache under ``post:{id}``; the posts a page misses there are loaded
together, in one batch. Authors, media and pets come from their own
services' caches.

A page is built as plain dicts in ``PostView``'s JSON shape and rendered
once (:mod:`petpal.platform.wire`), in two cache round trips whatever its
size (``post_wires``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, NotRequired, TypedDict, cast

import orjson
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from petpal.identity.service import summary_wires
from petpal.media.service import media_json
from petpal.platform.ids import is_valid_id
from petpal.platform.pagination import InvalidCursorError, decode_cursor, encode_cursor
from petpal.platform.services import Services
from petpal.platform.wire import Wire, utc_text
from petpal.social.models import Like, Post, PostMedia, PostMention, PostPet, PostTag

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
    """A post without its counts, as cached under ``post:{id}``. Only an edit
    of its caption changes it (``service.do_edit_post``), which invalidates it."""

    id: str
    author_id: str
    caption: str
    hashtags: list[str]
    mention_ids: list[str]
    media_ids: list[str]
    pet_ids: list[str]
    created_at: str
    # Absent from bodies cached before posts could be edited.
    edited_at: NotRequired[str | None]


async def _load_bodies(services: Services, post_ids: list[str]) -> dict[str, bytes]:
    """The bodies of the existing posts among ``post_ids``, in five queries."""
    async with services.db.read_session() as session:
        posts = await session.execute(
            select(
                Post.id, Post.author_id, Post.caption, Post.created_at, Post.edited_at
            ).where(Post.id.in_(post_ids))
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
                "edited_at": row.edited_at,
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


async def _post_bodies(services: Services, post_ids: list[str]) -> dict[str, _PostBody]:
    """The bodies of the existing posts among ``post_ids``: one cache round
    trip, and one batch of queries for those it misses."""
    keys = {post_key(post_id): post_id for post_id in post_ids}

    async def load(missing: list[str]) -> dict[str, bytes | None]:
        bodies = await _load_bodies(services, [keys[key] for key in missing])
        return {post_key(post_id): body for post_id, body in bodies.items()}

    found = await services.cache.get_or_load_many(list(keys), load, ttl=POST_TTL)
    return {
        keys[key]: cast(_PostBody, orjson.loads(blob))
        for key, blob in found.items()
        if blob is not None
    }


async def _pet_tags(services: Services, pet_ids: list[str]) -> dict[str, Wire]:
    if not pet_ids:
        return {}
    # Imported on use: pets may come to call social, and two services that
    # import each other at module level would make an import cycle.
    from petpal.pets.service import pet_tag_wires

    return await pet_tag_wires(services, pet_ids)


def _edited_text(stored: str | None) -> str | None:
    return None if stored is None else utc_text(stored)


async def post_wires(
    services: Services,
    post_ids: Sequence[str],
    viewer_id: str | None,
    counted: Mapping[str, Counted] | None = None,
) -> list[Wire]:
    """``PostView``'s JSON shape of the existing posts among ``post_ids``, in order.

    ``counted`` holds the counts when the page's own query read them; they
    come from the cache otherwise. Two cache round trips, whatever the
    page's size: the posts with their counts and the viewer's likes, then
    their authors (avatars included), media and pet tags (photos included).
    A post that is gone, or whose author is, is left out.
    """
    ids = list(post_ids)
    if not ids:
        return []

    async def counts() -> Mapping[str, Counted]:
        return counted if counted is not None else await counts_of(services, ids)

    # Side by side, so each step's look-ups share one round trip.
    found, liked, bodies = await asyncio.gather(
        counts(), likes_of(services, viewer_id, ids), _post_bodies(services, ids)
    )
    present = [bodies[i] for i in ids if i in bodies and i in found]
    accounts, media, pets = await asyncio.gather(
        summary_wires(
            services,
            [b["author_id"] for b in present]
            + [m for b in present for m in b["mention_ids"]],
        ),
        media_json(services, [m for b in present for m in b["media_ids"]]),
        _pet_tags(services, [p for b in present for p in b["pet_ids"]]),
    )
    wires = []
    for body in present:
        author = accounts.get(body["author_id"])
        if author is None:
            continue
        post_id = body["id"]
        counts_now = found[post_id]
        # In PostView's field order; media as their cached JSON, as it is.
        wires.append(
            {
                "id": post_id,
                "author": author,
                "caption": body["caption"],
                "hashtags": body["hashtags"],
                "mentions": [
                    accounts[m]["username"]
                    for m in body["mention_ids"]
                    if m in accounts
                ],
                "media": [
                    orjson.Fragment(media[m]) for m in body["media_ids"] if m in media
                ],
                "pets": [pets[p] for p in body["pet_ids"] if p in pets],
                "like_count": counts_now.like_count,
                "comment_count": counts_now.comment_count,
                "liked_by_me": None if liked is None else post_id in liked,
                "created_at": utc_text(body["created_at"]),
                "edited_at": _edited_text(body.get("edited_at")),
            }
        )
    return wires
