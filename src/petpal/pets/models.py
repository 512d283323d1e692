from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from petpal.platform.db import Base, UTCDateTime, postgresql_only


class Pet(Base):
    __tablename__ = "pets"
    __table_args__ = (
        # An account's pets, newest first.
        Index("ix_pets_owner_id_id", "owner_id", "id"),
        # The adoption listing, newest listing first, whole or by species.
        Index("ix_pets_listing_id", "listing_id"),
        Index("ix_pets_species_listing_id", "species", "listing_id"),
        # Pet of the Day counts and walks the pets that have a photo, once a day.
        Index(
            "ix_pets_with_photo",
            "id",
            sqlite_where=text("photo_media_id IS NOT NULL"),
            postgresql_where=text("photo_media_id IS NOT NULL"),
        ),
        # The adoption search by place, a substring of location_folded: on
        # PostgreSQL, by trigrams, so a place few or no listed pets are in
        # is answered from the index instead of a walk of the whole listing
        # (5 to 8 ms warm, 58 ms cold, for 7,779 listed pets on 200k; 0.02 ms
        # with it: benchmarks/adoption_search.py). SQLite has no such index;
        # the embedded mode walks the listing.
        postgresql_only(
            Index(
                "ix_pets_listed_location_trigrams",
                "location_folded",
                postgresql_using="gin",
                postgresql_ops={"location_folded": "gin_trgm_ops"},
                postgresql_where=text("listing_id IS NOT NULL"),
            )
        ),
        # Whether a photo is still some pet's (media.release).
        Index(
            "ix_pets_photo_media_id",
            "photo_media_id",
            sqlite_where=text("photo_media_id IS NOT NULL"),
            postgresql_where=text("photo_media_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(50))
    species: Mapped[str] = mapped_column(String(16))
    breed: Mapped[str] = mapped_column(String(80), default="")
    birth_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    bio: Mapped[str] = mapped_column(Text, default="")
    # A ready media item of the owner's. No foreign key: media is another
    # service's table. A media item stays while a pet, an avatar or a post
    # shows it, and is deleted once none does (media.release).
    photo_media_id: Mapped[str | None] = mapped_column(String(26), nullable=True)
    location: Mapped[str] = mapped_column(String(120), default="")
    # NFKC + casefold of ``location``, what the adoption search matches
    # against; Text because case folding may lengthen it ("ß" becomes "ss").
    location_folded: Mapped[str] = mapped_column(Text, default="")
    # Set while the pet is listed for adoption: a fresh time-ordered id each
    # time it is listed, so the listing pages "newest listing first" by a
    # unique key, the way other lists page by the row id.
    listing_id: Mapped[str | None] = mapped_column(String(26), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def available_for_adoption(self) -> bool:
        return self.listing_id is not None


class PetOfTheDay(Base):
    """The pick of one UTC day; the primary key makes it one pick per day."""

    __tablename__ = "pet_of_the_day"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    # Deleting the pet deletes the pick, and the next request picks again.
    pet_id: Mapped[str] = mapped_column(
        ForeignKey("pets.id", ondelete="CASCADE"), index=True
    )
    picked_at: Mapped[datetime] = mapped_column(UTCDateTime)
