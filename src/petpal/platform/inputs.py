"""Shapes shared by the request bodies of every service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import Field

T = TypeVar("T")


def _without_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


# A field of a PATCH body that may be left out but never be null: a pet
# always has a name. Left out, it reads as None and the model's
# ``model_dump(exclude_unset=True)`` leaves it out; a null is refused by the
# model (a validator of its own) or the service, with a 422 that names the
# field. The schema says what the server takes: the field's own type, no
# null and no default (found by a trial: it offered ``null``, which the
# server then refused).
if TYPE_CHECKING:
    NotNull = Annotated[T | None, Field()]  # what the code may meet: None
else:
    # Validated as the field's own type alone (its default None is never
    # validated). As a union with None, a bad value was reported once for
    # each branch, under pydantic's names for them: "display_name.function-
    # after[check_name(), ...]: String should have at least 1 character",
    # then "Input should be None" (found by a trial).
    NotNull = Annotated[T, Field(json_schema_extra=_without_default)]
