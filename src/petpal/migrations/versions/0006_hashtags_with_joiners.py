"""Hashtags found again in captions with joiners or connectors

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 01:20:00.000000

A hashtag ended at a zero-width joiner, which is spelling in Persian and the
Indic scripts (``#گربه‌ها``, "cats", was the tag ``گربه``, "cat"), and at a
connector other than the underscore (``‿``, a full-width ``＿``). Captions are
kept as typed, so the tags of each caption that holds one of those
characters are found again here, by the app's own extraction
(``petpal.migrations.captions``).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import context, op

from petpal.migrations.captions import captions_holding, find_tags_again

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# ZWNJ, ZWJ, and the connector punctuation but the underscore.
_NEW_IN_TAGS = "\u200c\u200d\u203f\u2040\u2054\ufe33\ufe34\ufe4d\ufe4e\ufe4f\uff3f"


def upgrade() -> None:
    posts = captions_holding(op.get_bind(), _NEW_IN_TAGS)
    if find_tags_again(op.get_bind(), posts):
        # Cached posts and tag timelines hold the old tags: the migration's
        # caller clears the cache (petpal.platform.migrate).
        context.config.attributes["cache_stale"] = True


def downgrade() -> None:
    # The tags as the old rules found them are not kept; the new ones are
    # what the captions say.
    pass
