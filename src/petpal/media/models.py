from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from petpal.platform.db import Base, UTCDateTime

PROCESSING, READY, FAILED = "processing", "ready", "failed"


class Media(Base):
    __tablename__ = "media"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    owner_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=PROCESSING)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What the bytes are, by their magic numbers (never the client's word).
    source_format: Mapped[str] = mapped_column(String(16))
    byte_size: Mapped[int] = mapped_column(BigInteger)
    # Raw upload, deleted once processed: it may carry GPS and other metadata.
    incoming_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    animated: Mapped[bool] = mapped_column(Boolean, default=False)
    blurhash: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # [{"name", "key", "width", "height", "content_type"}, …]
    variants: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
