from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from petpal.platform.ids import ForeignId
from petpal.platform.inputs import NotNull
from petpal.platform.security import stable_password
from petpal.platform.text import (
    EMAIL_MAX_LENGTH,
    LOGIN_MAX_LENGTH,
    NAME,
    STORABLE,
    VISIBLE,
)

DisplayName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=50),
    STORABLE,
    VISIBLE,
    NAME,
]
Bio = Annotated[str, StringConstraints(max_length=500), STORABLE]
# A password is hashed in NFKC form (platform.security), and its length is
# that form's: ``é`` typed as ``e`` and a combining accent is one character,
# and was two (found by a trial: a password of 8 typed characters and 7
# stable ones was taken, and one of 250 stable ones typed decomposed could
# not log in past 256). What arrives is bounded first, at what 256 stable
# characters can take typed decomposed.
PASSWORD_MIN, PASSWORD_MAX, PASSWORD_TYPED_MAX = 8, 256, 1024


_PASSWORD_RULE = (
    f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters, counted in "
    "Unicode NFKC form"
)


def _typed_length(password: str) -> str:
    # Said in the rule's words (found by a trial: past the bound a client was
    # told "at most 1024 characters", a limit no password can come near).
    if len(password) > PASSWORD_TYPED_MAX:
        raise ValueError(
            f"{_PASSWORD_RULE} (this one has more than {PASSWORD_TYPED_MAX} as typed)"
        )
    return password


def _stable_length(password: str) -> str:
    length = len(stable_password(password))
    if not PASSWORD_MIN <= length <= PASSWORD_MAX:
        raise ValueError(f"{_PASSWORD_RULE} (this one has {length})")
    return password


Password = Annotated[
    str,
    Field(json_schema_extra={"maxLength": PASSWORD_TYPED_MAX}),
    AfterValidator(_typed_length),
    STORABLE,
    AfterValidator(_stable_length),
]
Email = Annotated[
    str, StringConstraints(min_length=3, max_length=EMAIL_MAX_LENGTH), STORABLE
]
Login = Annotated[
    str, StringConstraints(min_length=1, max_length=LOGIN_MAX_LENGTH), STORABLE
]
GivenPassword = Annotated[
    str, StringConstraints(min_length=1, max_length=PASSWORD_TYPED_MAX), STORABLE
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


class PasswordChange(Input):
    """The password in use, asked again, and the one to use from now on."""

    current_password: GivenPassword
    new_password: Password


class EmailChange(Input):
    """The address to use from now on, with the account's password."""

    email: Email
    password: GivenPassword


class RefreshRequest(Input):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class ProfileUpdate(Input):
    display_name: NotNull[DisplayName] = None
    bio: Bio | None = None
    avatar_media_id: ForeignId | None = None

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
