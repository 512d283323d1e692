"""Trending: posts ranked by recent engagement, decaying with age.

The ranking is recomputed at most every TRENDING_TTL seconds and kept as a
snapshot of ids; a page-walk reads the snapshot it started on, so it never
repeats or skips a post while the ranking beneath it moves.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any, TypedDict, cast

import orjson
from sqlalchemy import or_, select
from ulid import ULID

from petpal.platform.db import utcnow
from petpal.platform.ids import is_valid_id, new_id
from petpal.platform.pagination import (
    InvalidCursorError,
    Page,
    decode_cursor,
    encode_cursor,
)
from petpal.platform.services import Services
from petpal.social.models import Post
from petpal.social.schemas import PostView
from petpal.social.views import counts_of, likes_of, post_views

# The ranked list is recomputed at most this often; a page-walk keeps the
# snapshot it started on for TRENDING_SNAPSHOT_TTL, long enough to scroll.
TRENDING_TTL = 30.0
TRENDING_SNAPSHOT_TTL = 15 * 60.0
TRENDING_SIZE = 500
TRENDING_PER_AUTHOR = 3
# Posts considered for trending, from each of two angles (see _rank_trending).
TRENDING_CANDIDATES = 1000

_CURRENT_KEY = "trending:current"


def _snapshot_key(snapshot_id: str) -> str:
    return f"trending:snapshot:{snapshot_id}"


def trending_score(likes: int, comments: int, age_hours: float) -> float:
    """Engagement over a power of age: recent activity outranks old fame."""
    return (likes + 2 * comments + 1) / float((max(age_hours, 0.0) + 2) ** 1.5)


def _id_floor(moment: datetime) -> str:
    """The smallest id that can be made at ``moment`` or later."""
    return str(ULID.from_int(int(moment.timestamp() * 1000) << 80))


async def _rank_trending(services: Services) -> bytes:
    """A new ranked snapshot of trending post ids.

    Candidates are the most engaged and the newest posts of the window, to
    bound the work on a busy day. A post in neither set has no more
    engagement than the least engaged candidate and is older than the newest
    ones, so it could only outrank candidates that are old and barely
    engaged, near the end of the list.

    TODO(trending-incremental): keep scores up to date as likes and comments
    arrive (a Redis sorted set per hour bucket) instead of re-ranking the
    candidates every TRENDING_TTL seconds.
    """
    now = utcnow()
    window = timedelta(hours=services.settings.trending_window_hours)
    columns = select(
        Post.id, Post.author_id, Post.like_count, Post.comment_count, Post.created_at
    ).where(Post.id >= _id_floor(now - window))
    async with services.db.read_session() as session:
        engaged = await session.execute(
            columns.where(or_(Post.like_count > 0, Post.comment_count > 0))
            .order_by((Post.like_count + 2 * Post.comment_count).desc())
            .limit(TRENDING_CANDIDATES)
        )
        candidates = {row.id: row for row in engaged}
        newest = await session.execute(
            columns.order_by(Post.id.desc()).limit(TRENDING_CANDIDATES)
        )
        candidates.update((row.id, row) for row in newest)

    def score(row: Any) -> tuple[float, str]:
        age_hours = (now - row.created_at).total_seconds() / 3600
        return trending_score(row.like_count, row.comment_count, age_hours), row.id

    per_author: Counter[str] = Counter()
    ranked: list[str] = []
    for row in sorted(candidates.values(), key=score, reverse=True):
        if per_author[row.author_id] >= TRENDING_PER_AUTHOR:
            continue
        per_author[row.author_id] += 1
        ranked.append(row.id)
        if len(ranked) == TRENDING_SIZE:
            break
    return orjson.dumps({"snapshot": new_id(), "ids": ranked})


class _Snapshot(TypedDict):
    snapshot: str
    ids: list[str]


async def _trending_snapshot(
    services: Services, snapshot_id: str | None
) -> _Snapshot | None:
    """The ranked snapshot a page-walk started on (None: a new walk); None if gone."""
    if snapshot_id is None:
        blob = await services.cache.get_or_load(
            _CURRENT_KEY, lambda: _rank_trending(services), ttl=TRENDING_TTL
        )
        if blob is None:
            return None  # unreachable: a ranking is always some bytes
        current = cast(_Snapshot, orjson.loads(blob))
        kept = blob

        async def keep() -> bytes:
            return kept

        # Kept apart and longer than the current ranking, so that a walk that
        # began on it can finish after the next re-ranking.
        await services.cache.get_or_load(
            _snapshot_key(current["snapshot"]), keep, ttl=TRENDING_SNAPSHOT_TTL
        )
        return current

    async def gone() -> None:
        return None

    blob = await services.cache.get_or_load(
        _snapshot_key(snapshot_id), gone, missing_ttl=1.0
    )
    return None if blob is None else cast(_Snapshot, orjson.loads(blob))


def _trending_position(key: dict[str, Any]) -> tuple[str, int]:
    snapshot_id, start = key.get("snapshot"), key.get("at")
    if (
        not isinstance(snapshot_id, str)
        or not is_valid_id(snapshot_id)
        or not isinstance(start, int)
        or isinstance(start, bool)
        or not 0 < start <= TRENDING_SIZE
    ):
        raise InvalidCursorError()
    return snapshot_id, start


async def trending_feed(
    services: Services, viewer_id: str | None, cursor: str | None, limit: int
) -> Page[PostView]:
    """The trending posts, ranked once per snapshot and paged within it.

    The cursor carries the snapshot's id and a position in it, so a walk over
    the pages sees one fixed order (no repeats, no skips) even though the
    ranking beneath is recomputed every half minute. A walk whose snapshot
    has left the cache gets 400 invalid_cursor and starts again.
    """
    scope = "trending"
    snapshot_id: str | None = None
    start = 0
    if cursor is not None:
        snapshot_id, start = _trending_position(
            decode_cursor(services.secret, scope, cursor)
        )
    snapshot = await _trending_snapshot(services, snapshot_id)
    if snapshot is None:
        raise InvalidCursorError()
    all_ids: list[str] = snapshot["ids"]
    ids = all_ids[start : start + limit]
    next_cursor = None
    if start + limit < len(all_ids):
        next_cursor = encode_cursor(
            services.secret,
            scope,
            {"snapshot": snapshot["snapshot"], "at": start + limit},
        )
    # Counts from the cache, which also drops the posts deleted since the
    # ranking was made.
    by_id = await counts_of(services, ids)
    in_rank_order = [by_id[i] for i in ids if i in by_id]
    liked = await likes_of(services, viewer_id, [c.id for c in in_rank_order])
    return Page[PostView](
        items=await post_views(services, in_rank_order, liked), next_cursor=next_cursor
    )
