"""Shapes shared by the request bodies of every service."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

T = TypeVar("T")


def _without_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


# A field of a PATCH body that may be left out but never be null: a pet
# always has a name. Left out, it reads as None and the model's
# ``model_dump(exclude_unset=True)`` leaves it out; a null is refused by the
# model or the service, with a 422 that names the field. The schema says
# what the server takes: the field's own type, no null and no default (found
# by a trial: it offered ``null``, which the server then refused).
NotNull = Annotated[T | SkipJsonSchema[None], Field(json_schema_extra=_without_default)]
