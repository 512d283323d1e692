from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from petpal.identity.schemas import AccountSummary
from petpal.media.schemas import MediaView
from petpal.platform.ids import ForeignId
from petpal.platform.text import STORABLE, VISIBLE

Caption = Annotated[str, StringConstraints(max_length=2200), STORABLE]
CommentBody = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1000),
    STORABLE,
    VISIBLE,
]

MAX_MEDIA_PER_POST = 10
MAX_PETS_PER_POST = 10


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PostCreate(Input):
    caption: Caption = ""
    media_ids: list[ForeignId] = Field(min_length=1, max_length=MAX_MEDIA_PER_POST)
    pet_ids: list[ForeignId] = Field(default=[], max_length=MAX_PETS_PER_POST)


class PostEdit(Input):
    """A new caption: its hashtags and mentions are worked out anew."""

    caption: Caption


class CommentCreate(Input):
    body: CommentBody


class PetTag(BaseModel):
    id: str
    name: str
    species: str
    photo_url: str | None = None


class PostView(BaseModel):
    id: str
    author: AccountSummary
    caption: str
    hashtags: list[str]
    mentions: list[str] = Field(description="Usernames mentioned that exist")
    media: list[MediaView]
    pets: list[PetTag]
    like_count: int
    comment_count: int
    liked_by_me: bool | None = Field(
        default=None, description="Whether the caller likes the post; null if anonymous"
    )
    created_at: datetime
    edited_at: datetime | None = Field(
        default=None, description="When the caption was last edited; null if never"
    )


class CommentView(BaseModel):
    id: str
    post_id: str
    author: AccountSummary
    body: str
    created_at: datetime


class LikeState(BaseModel):
    liked: bool
    like_count: int
