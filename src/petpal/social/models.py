"""Social tables: posts and what hangs off them, follows, and per-account counts.

Every id is a ULID, so ``ORDER BY id`` is ``ORDER BY creation time`` with ties
broken, and every list pages on an index that ends in an id. Rows that belong
to a post reference it with ``ON DELETE CASCADE``: deleting the post row is
the whole of deleting a post.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from petpal.platform.db import Base, UTCDateTime

# Longest canonical hashtag stored; the caption pattern allows 100 characters
# before normalisation, and NFKC may lengthen a few of them.
TAG_MAX_LENGTH = 100


class Post(Base):
    __tablename__ = "posts"
    __table_args__ = (
        # The profile grid, and the home feed's "author IN (…) ORDER BY id".
        Index("ix_posts_author_id_id", "author_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    author_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE")
    )
    caption: Mapped[str] = mapped_column(Text, default="")
    # Denormalized, kept exact by bumping them only in the transaction that
    # really inserted or deleted a like or comment row.
    like_count: Mapped[int] = mapped_column(Integer, default=0)
    comment_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When the caption was last edited; None for a post never edited.
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PostMedia(Base):
    __tablename__ = "post_media"
    __table_args__ = (PrimaryKeyConstraint("post_id", "position"),)

    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    media_id: Mapped[str] = mapped_column(ForeignKey("media.id"), index=True)


class PostPet(Base):
    __tablename__ = "post_pets"
    __table_args__ = (PrimaryKeyConstraint("post_id", "position"),)

    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    # A deleted pet leaves the posts it was tagged in.
    pet_id: Mapped[str] = mapped_column(
        ForeignKey("pets.id", ondelete="CASCADE"), index=True
    )


class PostTag(Base):
    """One hashtag of one post; the primary key is the /tags/{tag} index."""

    __tablename__ = "post_tags"
    __table_args__ = (PrimaryKeyConstraint("tag", "post_id"),)

    tag: Mapped[str] = mapped_column(String(TAG_MAX_LENGTH))
    post_id: Mapped[str] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), index=True
    )
    # Order of first appearance in the caption, for the post's own view.
    position: Mapped[int] = mapped_column(Integer)


class PostMention(Base):
    __tablename__ = "post_mentions"
    __table_args__ = (PrimaryKeyConstraint("post_id", "account_id"),)

    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)


class Like(Base):
    __tablename__ = "likes"
    # The primary key makes a second like of the same post a no-op conflict.
    __table_args__ = (PrimaryKeyConstraint("post_id", "account_id"),)

    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Comment(Base):
    __tablename__ = "comments"
    __table_args__ = (Index("ix_comments_post_id_id", "post_id", "id"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    post_id: Mapped[str] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"))
    author_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Follow(Base):
    """``follower_id`` follows ``followee_id``.

    The surrogate ULID ``id`` is the page key of both follow lists, newest
    first, so two follows made in the same instant still page apart.
    """

    __tablename__ = "follows"
    __table_args__ = (
        UniqueConstraint("follower_id", "followee_id"),
        Index("ix_follows_followee_id_id", "followee_id", "id"),
        Index("ix_follows_follower_id_id", "follower_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    follower_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE")
    )
    followee_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AccountStats(Base):
    """Follower, following and post counts of one account, kept exact.

    A row appears on the account's first social write. Counting rows instead
    would cost a scan of a celebrity's follower index on every profile view
    after each new follow invalidated the cache.
    """

    __tablename__ = "account_stats"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    follower_count: Mapped[int] = mapped_column(Integer, default=0)
    following_count: Mapped[int] = mapped_column(Integer, default=0)
    post_count: Mapped[int] = mapped_column(Integer, default=0)
