"""Hashtags found again in captions with joiners or connectors

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 01:20:00.000000

A hashtag ended at a zero-width joiner, which is spelling in Persian and the
Indic scripts (``#گربه‌ها``, "cats", was the tag ``گربه``, "cat"), and at a
connector other than the underscore (``‿``, a full-width ``＿``). Captions are
kept as typed, so the tags of each caption that holds one of those
characters are found again here. This one calls the app's own extraction
rather than a copy of it: what it must leave is what the app finds in the
caption, and a later change of the rules brings a migration of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from petpal.platform.text import extract_hashtags

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# ZWNJ, ZWJ, and the connector punctuation but the underscore.
_NEW_IN_TAGS = "\u200c\u200d\u203f\u2040\u2054\ufe33\ufe34\ufe4d\ufe4e\ufe4f\uff3f"
# As the app refuses a caption with a longer tag, one found longer here
# leaves its post's tags as they were.
_TAG_MAX_LENGTH = 100


def upgrade() -> None:
    bind = op.get_bind()
    holds = " OR ".join(f"caption LIKE :c{i}" for i in range(len(_NEW_IN_TAGS)))
    posts = bind.execute(
        sa.text(f"SELECT id, caption FROM posts WHERE {holds}"),  # noqa: S608
        {f"c{i}": f"%{ch}%" for i, ch in enumerate(_NEW_IN_TAGS)},
    ).all()
    changed = False
    for post_id, caption in posts:
        tags = extract_hashtags(caption)
        if any(len(tag) > _TAG_MAX_LENGTH for tag in tags):
            continue
        stored = bind.execute(
            sa.text("SELECT tag FROM post_tags WHERE post_id = :id ORDER BY position"),
            {"id": post_id},
        ).scalars()
        if list(stored) == tags:
            continue
        bind.execute(
            sa.text("DELETE FROM post_tags WHERE post_id = :id"), {"id": post_id}
        )
        if tags:
            bind.execute(
                sa.text(
                    "INSERT INTO post_tags (tag, post_id, position)"
                    " VALUES (:tag, :id, :position)"
                ),
                [{"tag": t, "id": post_id, "position": i} for i, t in enumerate(tags)],
            )
        changed = True
    if changed:
        # Cached posts and tag timelines hold the old tags: the migration's
        # caller clears the cache (petpal.platform.migrate).
        context.config.attributes["cache_stale"] = True


def downgrade() -> None:
    # The tags as the old rules found them are not kept; the new ones are
    # what the captions say.
    pass
