"""The adoption search by place from a trigram index on PostgreSQL

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 15:00:00.000000

A search for a place matches a substring of the listed pets' folded places;
without an index that fits, a place that few or no listed pets are in walked
the whole listing. PostgreSQL's pg_trgm (one of its contrib modules, a
trusted extension since PostgreSQL 13) indexes the substrings; SQLite has
no such index, and the embedded mode walks the listing as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_pets_listed_location_trigrams"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index(
        INDEX,
        "pets",
        ["location_folded"],
        postgresql_using="gin",
        postgresql_ops={"location_folded": "gin_trgm_ops"},
        postgresql_where=sa.text("listing_id IS NOT NULL"),
        # Made already where a database was set back to an earlier revision
        # to run the data migrations again (the tests do).
        if_not_exists=True,
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # The extension stays: an operator's own objects may use it.
    op.drop_index(INDEX, table_name="pets", if_exists=True)
