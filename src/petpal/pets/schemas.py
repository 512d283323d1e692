from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StringConstraints,
    field_validator,
)

from petpal.identity.schemas import AccountSummary
from petpal.media.schemas import MediaView
from petpal.platform.db import utcnow
from petpal.platform.ids import ForeignId
from petpal.platform.inputs import NotNull
from petpal.platform.text import NAME, PLACE, STORABLE, VISIBLE, VISIBLE_OR_EMPTY

EARLIEST_BIRTH_DATE = dt.date(1950, 1, 1)
# The calendar runs furthest ahead at UTC+14 (Kiribati): a pet born "today"
# there is born tomorrow in UTC, and that is not a date in the future.
_EARLIEST_TIME_ZONE = dt.timedelta(hours=14)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class Species(StrEnum):
    """What kind of animal a pet is; "other" for anything not listed."""

    DOG = "dog"
    CAT = "cat"
    BIRD = "bird"
    RABBIT = "rabbit"
    RODENT = "rodent"
    REPTILE = "reptile"
    FISH = "fish"
    HORSE = "horse"
    OTHER = "other"


def _iso_date_only(value: object) -> object:
    # Lax pydantic reads a number as a Unix timestamp and a midnight datetime
    # as its date; JSON has no date type, so a date is "YYYY-MM-DD" and only that.
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        return value
    raise ValueError("a date is a string in the form YYYY-MM-DD")


def _plausible_birth_date(value: dt.date) -> dt.date:
    if value < EARLIEST_BIRTH_DATE:
        raise ValueError(f"a birth date cannot be before {EARLIEST_BIRTH_DATE}")
    if value > (utcnow() + _EARLIEST_TIME_ZONE).date():
        raise ValueError("a birth date cannot be in the future")
    return value


# The constraints before the check (see petpal.platform.text).
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=50),
    STORABLE,
    # As an account's name is (found by a trial: a pet named "\u200b" or
    # "\u202egnp.exe" was taken).
    VISIBLE,
    NAME,
]
Breed = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=80),
    STORABLE,
    VISIBLE_OR_EMPTY,
]
Bio = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=1000),
    STORABLE,
]
Location = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=120),
    STORABLE,
    VISIBLE_OR_EMPTY,
    PLACE,
]
BirthDate = Annotated[
    dt.date, BeforeValidator(_iso_date_only), AfterValidator(_plausible_birth_date)
]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PetCreate(Input):
    name: Name
    species: Species
    breed: Breed = ""
    birth_date: BirthDate | None = None
    bio: Bio = ""
    photo_media_id: ForeignId | None = None
    available_for_adoption: StrictBool = False
    location: Location = ""


class PetUpdate(Input):
    """Only the fields present change; ``null`` clears an optional field."""

    name: NotNull[Name] = None
    species: NotNull[Species] = None
    breed: Breed | None = None
    birth_date: BirthDate | None = None
    bio: Bio | None = None
    photo_media_id: ForeignId | None = None
    available_for_adoption: NotNull[StrictBool] = None
    location: Location | None = None

    @field_validator("name", "species", "available_for_adoption", mode="before")
    @classmethod
    def _required_fields_are_not_null(cls, value: object) -> object:
        # These are optional in a PATCH body, but a pet always has them.
        if value is None:
            raise ValueError("this field cannot be null")
        return value


class PetSummary(BaseModel):
    """How a pet appears inside other objects (e.g. the pets tagged in a post)."""

    id: str
    name: str
    species: Species
    photo_url: str | None = None


class PetView(BaseModel):
    id: str
    owner: AccountSummary
    name: str
    species: Species
    breed: str
    birth_date: dt.date | None = None
    bio: str
    photo: MediaView | None = None
    available_for_adoption: bool
    location: str
    created_at: dt.datetime


class PetOfTheDayView(BaseModel):
    date: dt.date
    pet: PetView
