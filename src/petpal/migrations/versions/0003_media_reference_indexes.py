"""Indexes on the columns that name a photo: avatars and pets' photos

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 20:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # media.release asks whether any account or pet still shows a photo:
    # without these, a scan of every row, for each photo it releases.
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_accounts_avatar_media_id",
            ["avatar_media_id"],
            unique=False,
            sqlite_where=sa.text("avatar_media_id IS NOT NULL"),
            postgresql_where=sa.text("avatar_media_id IS NOT NULL"),
        )
    with op.batch_alter_table("pets", schema=None) as batch_op:
        batch_op.create_index(
            "ix_pets_photo_media_id",
            ["photo_media_id"],
            unique=False,
            sqlite_where=sa.text("photo_media_id IS NOT NULL"),
            postgresql_where=sa.text("photo_media_id IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("pets", schema=None) as batch_op:
        batch_op.drop_index("ix_pets_photo_media_id")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index("ix_accounts_avatar_media_id")
