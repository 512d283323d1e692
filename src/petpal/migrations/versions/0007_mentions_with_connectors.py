"""Mentions found again in captions with connectors

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 04:20:00.000000

A mention ended at a connector other than the underscore, so
``@ｕｓｅｒ＿１`` (typed in full width, where the full-width low line is the
underscore) mentioned the account ``user`` rather than ``user_1``; and a
connector before an ``@`` (``x‿@lena``) did not keep it from being read as
a mention. Captions are kept as typed, so the mentions of each caption that
holds a connector are found again here, with the app's own extraction (as
0006 does for tags), among the accounts that exist now.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import context, op

from petpal.migrations.captions import captions_holding, find_mentions_again

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The connector punctuation but the underscore.
_CONNECTORS = "\u203f\u2040\u2054\ufe33\ufe34\ufe4d\ufe4e\ufe4f\uff3f"


def upgrade() -> None:
    posts = captions_holding(op.get_bind(), _CONNECTORS)
    if find_mentions_again(op.get_bind(), posts):
        # Cached posts hold the old mentions: the migration's caller clears
        # the cache (petpal.platform.migrate).
        context.config.attributes["cache_stale"] = True


def downgrade() -> None:
    # The mentions as the old rules found them are not kept; the new ones
    # are what the captions say.
    pass
