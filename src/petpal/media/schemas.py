from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class VariantView(BaseModel):
    name: str
    url: str
    width: int
    height: int
    content_type: str


class MediaView(BaseModel):
    id: str
    status: str
    failure_reason: str | None = None
    width: int | None = None
    height: int | None = None
    animated: bool = False
    blurhash: str | None = None
    variants: list[VariantView] = []
    created_at: datetime
