"""E-mail addresses compared with their domain in its IDNA form

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 01:00:00.000000

An address's stored form had its domain case-folded only, so ``éxample.org``
and ``xn--xample-9ua.org`` (one domain) made two accounts of one mailbox.
The domain is now spelt as DNS knows it (``petpal.platform.text``
``canonical_email``); the stored form of each address typed with a
character past ASCII is made again here from the address as typed (its
case-folded form may be ASCII: ``straße.de`` was ``strasse.de``). The
rule is written out rather than imported: a migration must do tomorrow what
it did today. An address whose new form another account has already (two
accounts of one mailbox, made before this) keeps its old form, as does one
whose domain has no IDNA form: both accounts still log in as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import idna
import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Only addresses typed with a character past ASCII can change.
_NOT_ASCII = {
    "postgresql": "octet_length(email) <> char_length(email)",
    "sqlite": "length(CAST(email AS BLOB)) <> length(email)",
}


def _respelt(typed: str) -> str | None:
    local, _, domain = typed.strip().rpartition("@")
    labels = []
    for label in domain.split("."):
        if label.isascii():
            labels.append(label.lower())
            continue
        try:
            labels.append(idna.encode(label, uts46=True).decode("ascii"))
        except UnicodeError:
            return None
    respelt = f"{local.casefold()}@{'.'.join(labels)}"
    return respelt if all(labels) and len(respelt) <= 254 else None


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
    _spell_again(_respelt)


def downgrade() -> None:
    _spell_again(_old_form)
