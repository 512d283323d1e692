"""The few real photos every generated media row shows.

Each seed photo goes once through the same processing an upload gets
(``media.imaging.process_image``); its variants are stored under
``media/<library id>/<variant>.<ext>``, the shape the file route serves, and
every generated media row of that photo lists those same keys. Millions of
posts then cost nine photos of storage, and the app serves each of them.

The library id is a ULID made from the photo's SHA-256, so a second seed into
the same storage finds the variants already there (through the small
manifest stored beside them) and skips the processing.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from ulid import ULID

from petpal.media.imaging import ImageLimits, inspect_header, process_image
from petpal.platform.storage import ObjectNotFoundError, Storage

PHOTOS = Path(__file__).parent / "photos"
SEED_PHOTOS = tuple(
    sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() != ".md" and p.is_file())
)


@dataclass(frozen=True)
class LibraryPhoto:
    """What a ready media row of this photo holds, except its id and times."""

    species: str
    source_format: str
    byte_size: int
    width: int
    height: int
    blurhash: str
    variants: list[dict[str, Any]]


def species_of(photo: Path) -> str:
    # The file names say what they show (see photos/SOURCES.md).
    return "cat" if "cat" in photo.stem.split("_") else "dog"


def library_id(content: bytes) -> str:
    return str(ULID.from_bytes(hashlib.sha256(content).digest()[:16]))


async def prepare_library(
    storage: Storage, limits: ImageLimits, photos: Sequence[Path] = SEED_PHOTOS
) -> list[LibraryPhoto]:
    """Process and store each photo once; the same order as ``photos``."""
    return list(
        await asyncio.gather(*(_prepare(storage, limits, photo) for photo in photos))
    )


async def _prepare(storage: Storage, limits: ImageLimits, photo: Path) -> LibraryPhoto:
    content = await asyncio.to_thread(photo.read_bytes)
    media_id = library_id(content)
    manifest_key = f"seed-library/{media_id}.json"
    try:
        return LibraryPhoto(**orjson.loads(await storage.get_bytes(manifest_key)))
    except ObjectNotFoundError:
        pass
    header = await asyncio.to_thread(inspect_header, photo, limits)
    result = await asyncio.to_thread(process_image, photo, limits)
    variants = []
    for variant in result.variants:
        key = f"media/{media_id}/{variant.name}.{variant.extension}"
        await storage.put(key, variant.data, variant.content_type)
        variants.append(
            {
                "name": variant.name,
                "key": key,
                "width": variant.width,
                "height": variant.height,
                "content_type": variant.content_type,
            }
        )
    entry = LibraryPhoto(
        species=species_of(photo),
        source_format=header.format,
        byte_size=len(content),
        width=result.width,
        height=result.height,
        blurhash=result.blurhash,
        variants=variants,
    )
    # Written last: a manifest means its variants are all stored.
    await storage.put(manifest_key, orjson.dumps(asdict(entry)), "application/json")
    return entry
