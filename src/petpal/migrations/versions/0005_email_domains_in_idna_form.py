"""E-mail addresses compared with their domain in its IDNA form

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 01:00:00.000000

An address's stored form had its domain case-folded only, so ``éxample.org``
and ``xn--xample-9ua.org`` (one domain) made two accounts of one mailbox.
The domain is now spelt as DNS knows it (``petpal.platform.text``
``canonical_email``); the stored form of each address typed with a
character past ASCII is made again here from the address as typed (its
case-folded form may be ASCII: ``straße.de`` was ``strasse.de``). This one
calls the app's own rule rather than a copy of it: what it must leave is
what the app computes from the address at log-in.

Two accounts of one mailbox, made before this, both stay: the one whose new
form the other has already keeps its old form, and logs in by its username
only (its address, in any spelling, now names the other account); so does
an address the rule now refuses (a domain with no IDNA form).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

from petpal.platform.text import canonical_email

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Only addresses typed with a character past ASCII can change.
_NOT_ASCII = {
    "postgresql": "octet_length(email) <> char_length(email)",
    "sqlite": "length(CAST(email AS BLOB)) <> length(email)",
}


def _old_form(typed: str) -> str:
    local, _, domain = typed.strip().rpartition("@")
    return f"{local}@{domain.lower()}".casefold()


def _spell_again(spelling: Callable[[str], str | None]) -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT id, email, email_canonical FROM accounts"  # noqa: S608
            f" WHERE {_NOT_ASCII[bind.dialect.name]}"
        )
    ).all()
    for account_id, typed, stored in rows:
        spelt = spelling(typed)
        if spelt is None or spelt == stored:
            continue
        bind.execute(
            sa.text(
                "UPDATE accounts SET email_canonical = :spelt WHERE id = :id"
                " AND NOT EXISTS (SELECT 1 FROM accounts AS other"
                " WHERE other.email_canonical = :spelt)"
            ),
            {"id": account_id, "spelt": spelt},
        )


def upgrade() -> None:
    _spell_again(canonical_email)


def downgrade() -> None:
    _spell_again(_old_form)
