from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from petpal.platform.ids import GivenId
from petpal.platform.inputs import NotNull
from petpal.platform.text import NAME, STORABLE, VISIBLE

DisplayName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=50),
    STORABLE,
    VISIBLE,
    NAME,
]
Bio = Annotated[str, StringConstraints(max_length=500), STORABLE]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256), STORABLE]
Email = Annotated[str, StringConstraints(min_length=3, max_length=254), STORABLE]
Login = Annotated[str, StringConstraints(min_length=1, max_length=254), STORABLE]
GivenPassword = Annotated[
    str, StringConstraints(min_length=1, max_length=256), STORABLE
]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignUp(Input):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    email: Email
    password: Password
    display_name: DisplayName


class LogIn(Input):
    # A username or an e-mail address.
    login: Login
    password: GivenPassword


class AccountDeletion(Input):
    """The account's password, asked again before it is deleted."""

    password: GivenPassword


class RefreshRequest(Input):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class ProfileUpdate(Input):
    display_name: NotNull[DisplayName] = None
    bio: Bio | None = None
    avatar_media_id: Annotated[GivenId, StringConstraints(max_length=26)] | None = None

    @field_validator("display_name", mode="before")
    @classmethod
    def _display_name_is_not_null(cls, value: object) -> object:
        # Optional in a PATCH body, but an account always has one; refused
        # as a pet's name is (it was a code of its own).
        if value is None:
            raise ValueError("this field cannot be null")
        return value


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int


class AccountSummary(BaseModel):
    """How an account appears inside other objects (posts, comments, lists)."""

    id: str
    username: str
    display_name: str
    avatar_url: str | None = None


class Profile(AccountSummary):
    bio: str
    avatar_media_id: str | None = None
    created_at: datetime
    follower_count: int = 0
    following_count: int = 0
    post_count: int = 0
    followed_by_me: bool | None = Field(
        default=None, description="Whether the caller follows this account"
    )


class Me(Profile):
    email: str
