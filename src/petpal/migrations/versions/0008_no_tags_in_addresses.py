"""Hashtags and mentions found again in captions with web addresses

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 10:00:00.000000

A ``#`` or an ``@`` inside an address began a tag or a mention:
``https://shelter.example.org/#adopt-now`` was the tag ``adopt``,
``https://mastodon.social/@theo`` mentioned theo, and so did
``mastodon.social/@theo`` without a scheme; and ``@theo@mastodon.social``,
an account elsewhere, mentioned the local theo. Captions are kept as typed,
so the tags and mentions of each caption that holds a ``/`` (every
address does) or two at signs are found again here, by the app's own
extraction (``petpal.migrations.captions``).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import context, op

from petpal.migrations.captions import (
    captions_holding,
    find_mentions_again,
    find_tags_again,
)

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# LIKE patterns: a slash; an at sign, anything, another (either width).
_MAY_CHANGE = ("/", "@%@", "@%\uff20", "\uff20%@", "\uff20%\uff20")


def upgrade() -> None:
    bind = op.get_bind()
    posts = captions_holding(bind, _MAY_CHANGE)
    # Both, whatever the first found: a caption may hold a tag and a mention.
    tags_changed = find_tags_again(bind, posts)
    if find_mentions_again(bind, posts) or tags_changed:
        # Cached posts and tag timelines hold the old ones: the migration's
        # caller clears the cache (petpal.platform.migrate).
        context.config.attributes["cache_stale"] = True


def downgrade() -> None:
    # The tags and mentions as the old rules found them are not kept; the
    # new ones are what the captions say.
    pass
