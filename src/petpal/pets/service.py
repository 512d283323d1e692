"""Pet profiles, the adoption listing and Pet of the Day.

Other services use only ``require_own_pets``, ``pet_summaries`` and
``pet_tag_wires``; the tables stay private to this package.

A pet's stored fields are cached under ``pet:{id}`` and invalidated after
every write that changes them; views add the owner and the photo from the
identity and media caches, so a change there never leaves a pet view stale.
An account's newest pet ids are cached under ``account-pet-ids:{owner id}``
and invalidated when a pet is created or deleted (a pet never changes
owner), so the first page of an account's pets is served from the cache and
rendered straight to JSON (``_pet_wires``).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    delete,
    exists,
    false,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from petpal.identity.service import (
    get_summaries,
    on_account_deletion,
    resolve_username,
    summary_wires,
)
from petpal.media.service import (
    display_urls,
    media_json,
    media_views,
    queue_release,
    require_ready_media,
)
from petpal.pets.models import Pet, PetOfTheDay
from petpal.pets.schemas import (
    PetCreate,
    PetOfTheDayView,
    PetSummary,
    PetUpdate,
    PetView,
    Species,
)
from petpal.platform.db import rowcount, utcnow
from petpal.platform.errors import (
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    ProblemError,
)
from petpal.platform.ids import is_valid_id, new_id
from petpal.platform.pagination import (
    MAX_LIMIT,
    InvalidCursorError,
    Page,
    decode_cursor,
    encode_cursor,
)
from petpal.platform.services import Services
from petpal.platform.text import fold_location, searchable_place
from petpal.platform.wire import Wire, WirePage

PET_TTL = 600.0
# An account's first page of pets, for any limit the API takes, is served
# from this many cached ids; people have a few pets, so this is all of them
# but for a few accounts, whose later pages come from the database.
ACCOUNT_PET_IDS_MAX = MAX_LIMIT
ADOPTIONS_SCOPE = "adoptions"
# With no pet to pick, "nobody" is cached this briefly, so the first pet
# with a photo is picked within a second; each look is one count over a
# partial index.
NO_PICK_TTL = 1.0
_system_random = random.SystemRandom()


def pet_key(pet_id: str) -> str:
    return f"pet:{pet_id}"


def pet_tag_key(pet_id: str) -> str:
    """How the pet appears in posts (``PetSummary``'s JSON, photo URL included).

    Invalidated with ``pet:{id}``: a pet's photo is always a ready media item,
    which never changes, so the tag changes only when the pet does.
    """
    return f"pet-tag:{pet_id}"


def pet_of_the_day_key(day: date) -> str:
    return f"pet-of-the-day:{day.isoformat()}"


def account_pet_ids_key(owner_id: str) -> str:
    return f"account-pet-ids:{owner_id}"


def _account_pets_scope(owner_id: str) -> str:
    return f"account-pets:{owner_id}"


def today_utc() -> date:
    return utcnow().date()


class _StoredPet(BaseModel):
    """A pet's own fields, as cached under ``pet:{id}``."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    owner_id: str
    name: str
    species: Species
    breed: str
    birth_date: date | None
    bio: str
    photo_media_id: str | None
    location: str
    listing_id: str | None
    created_at: datetime


# --- reading ------------------------------------------------------------------


async def _pet_blobs(services: Services, pet_ids: Sequence[str]) -> dict[str, bytes]:
    """The stored fields (``_StoredPet``'s JSON) of the existing pets among
    ``pet_ids``: one cache round trip, one query for those it misses."""
    keys = {pet_key(pet_id): pet_id for pet_id in pet_ids}
    if not keys:
        return {}

    async def load(missing: list[str]) -> dict[str, bytes | None]:
        async with services.db.read_session() as session:
            pets = await session.scalars(
                select(Pet).where(Pet.id.in_([keys[key] for key in missing]))
            )
            return {pet_key(pet.id): _pet_blob(pet) for pet in pets}

    found = await services.cache.get_or_load_many(list(keys), load, ttl=PET_TTL)
    return {keys[key]: blob for key, blob in found.items() if blob is not None}


def _pet_blob(pet: Pet) -> bytes:
    return _StoredPet.model_validate(pet).model_dump_json().encode()


async def _load_pet_blob(services: Services, pet_id: str) -> bytes | None:
    async with services.db.read_session() as session:
        pet = await session.get(Pet, pet_id)
    return None if pet is None else _pet_blob(pet)


async def _cached_pet(services: Services, pet_id: str) -> _StoredPet | None:
    if not is_valid_id(pet_id):
        return None
    blob = await services.cache.get_or_load(
        pet_key(pet_id), lambda: _load_pet_blob(services, pet_id), ttl=PET_TTL
    )
    return None if blob is None else _StoredPet.model_validate_json(blob)


async def _pet_wires(services: Services, pet_ids: Sequence[str]) -> list[Wire]:
    """``PetView``'s JSON shape of the existing pets among ``pet_ids``, in order.

    Two cache round trips: the pets, then their owners and photos (cached as
    their views' JSON, embedded as it is). A pet whose owner just vanished
    is left out, as in ``_views``.
    """
    blobs = await _pet_blobs(services, pet_ids)
    # As pydantic wrote them: dates and times are already in the API's form.
    pets = [orjson.loads(blobs[pet_id]) for pet_id in pet_ids if pet_id in blobs]
    owners, photos = await asyncio.gather(
        summary_wires(services, [pet["owner_id"] for pet in pets]),
        media_json(
            services, [p["photo_media_id"] for p in pets if p["photo_media_id"]]
        ),
    )
    wires = []
    for pet in pets:
        owner = owners.get(pet["owner_id"])
        if owner is None:
            continue
        photo = photos.get(pet["photo_media_id"]) if pet["photo_media_id"] else None
        # In PetView's field order.
        wires.append(
            {
                "id": pet["id"],
                "owner": owner,
                "name": pet["name"],
                "species": pet["species"],
                "breed": pet["breed"],
                "birth_date": pet["birth_date"],
                "bio": pet["bio"],
                "photo": None if photo is None else orjson.Fragment(photo),
                "available_for_adoption": pet["listing_id"] is not None,
                "location": pet["location"],
                "created_at": pet["created_at"],
            }
        )
    return wires


async def _views(services: Services, pets: Sequence[_StoredPet]) -> list[PetView]:
    """Views of ``pets`` in order; a pet whose owner just vanished is left out."""
    owners = await get_summaries(services, [p.owner_id for p in pets])
    photos = await media_views(
        services, [p.photo_media_id for p in pets if p.photo_media_id]
    )
    return [
        PetView(
            id=pet.id,
            owner=owners[pet.owner_id],
            name=pet.name,
            species=pet.species,
            breed=pet.breed,
            birth_date=pet.birth_date,
            bio=pet.bio,
            photo=photos.get(pet.photo_media_id) if pet.photo_media_id else None,
            available_for_adoption=pet.listing_id is not None,
            location=pet.location,
            created_at=pet.created_at,
        )
        for pet in pets
        if pet.owner_id in owners
    ]


async def get_pet(services: Services, pet_id: str) -> PetView:
    pet = await _cached_pet(services, pet_id)
    views = await _views(services, [pet]) if pet is not None else []
    if not views:
        raise NotFoundError("the pet")
    return views[0]


async def list_account_pets(
    services: Services, username: str, cursor: str | None, limit: int
) -> WirePage:
    """An account's pets, newest first, in ``PetView``'s JSON shape.

    The first page comes from the account's cached pet ids
    (``_newest_pet_ids``), a later one from one query for its ids; the pets
    themselves from their own cache either way.
    """
    owner_id = await resolve_username(services, username)
    scope = _account_pets_scope(owner_id)
    cached = await _newest_pet_ids(services, owner_id) if cursor is None else None
    if cached is not None and (len(cached.ids) >= limit or not cached.more):
        ids, more = cached.ids[:limit], len(cached.ids) > limit or cached.more
    else:
        query = select(Pet.id).where(Pet.owner_id == owner_id)
        if cursor is not None:
            query = query.where(Pet.id < _cursor_id(services, scope, cursor))
        async with services.db.read_session() as session:
            found = list(
                await session.scalars(query.order_by(Pet.id.desc()).limit(limit + 1))
            )
        ids, more = found[:limit], len(found) > limit
    next_cursor = None
    if more and ids:
        next_cursor = encode_cursor(services.secret, scope, {"id": ids[-1]})
    return WirePage(await _pet_wires(services, ids), next_cursor)


class _PetIds(NamedTuple):
    ids: list[str]
    more: bool


async def _newest_pet_ids(services: Services, owner_id: str) -> _PetIds:
    """The account's newest ``ACCOUNT_PET_IDS_MAX`` pet ids and whether it
    has more, from the cache.

    A pet created or deleted while a reader loads them is safe: the
    invalidation that follows its commit leaves a tombstone, and the cache
    does not store a load over a key that changed since its miss.
    """

    async def load() -> bytes:
        async with services.db.read_session() as session:
            ids = list(
                await session.scalars(
                    select(Pet.id)
                    .where(Pet.owner_id == owner_id)
                    .order_by(Pet.id.desc())
                    .limit(ACCOUNT_PET_IDS_MAX + 1)
                )
            )
        return orjson.dumps(
            {
                "ids": ids[:ACCOUNT_PET_IDS_MAX],
                "more": len(ids) > ACCOUNT_PET_IDS_MAX,
            }
        )

    blob = await services.cache.get_or_load(
        account_pet_ids_key(owner_id), load, ttl=PET_TTL
    )
    if blob is None:  # never cached: the loader finds a list, if an empty one
        return _PetIds([], False)
    found = orjson.loads(blob)
    return _PetIds(found["ids"], found["more"])


# What LIKE reads as wildcards, and the escape character itself.
_LIKE_SPECIAL = re.compile("[%_/]")
# Three letters or digits in a row: what pg_trgm makes a trigram of in a
# search, which it reads as words of letters and digits.
_TRIGRAM = re.compile(r"[^\W_]{3}")


def listed_pets(species: Species | None, folded_location: str) -> Select[Pet]:
    """The listing's pets of ``species`` in a place that holds
    ``folded_location`` (as ``fold_location`` leaves it; empty for any)."""
    query = select(Pet).where(Pet.listing_id.is_not(None))
    if species is not None:
        query = query.where(Pet.species == species.value)
    if folded_location:
        # A substring, by the trigram index on PostgreSQL (pets.models) or
        # the listing's, newest first, as the planner finds cheaper for this
        # place: written into the statement, so that it is planned for each
        # place. A prepared statement's generic plan, made after a few runs,
        # took the trigrams for every place: 15 ms for "a", which 6,700 of
        # 7,800 listed pets on 200k are in, against 0.2 ms by the listing
        # (benchmarks/adoption_search.py).
        pattern = "%" + _LIKE_SPECIAL.sub(r"/\g<0>", folded_location) + "%"
        column: ColumnElement[str] = Pet.location_folded.expression
        if not _TRIGRAM.search(folded_location):
            # No trigram to look up: the planner read the index whole for a
            # rare pair of letters, slower than the walk (9 ms against 5.5).
            # An expression of the column is one no index holds.
            column = Pet.location_folded.concat("")
        query = query.where(
            column.like(bindparam("place", pattern, literal_execute=True), escape="/")
        )
    return query


async def list_adoptions(
    services: Services,
    species: Species | None,
    location: str | None,
    cursor: str | None,
    limit: int,
) -> Page[PetView]:
    """Pets listed for adoption, newest listing first."""
    typed = location.strip() if location else ""
    folded = fold_location(typed)
    query = listed_pets(species, folded)
    if typed and not searchable_place(folded):
        # Only marks that places are searched without, and spaces (found by
        # trials: a lone accent listed every pet): nothing to find.
        query = query.where(false())
    # A cursor belongs to one list: the listing with these filters (found by
    # a trial: one from the whole listing was taken by a filtered one).
    scope = _adoptions_scope(species, folded)
    if cursor is not None:
        query = query.where(Pet.listing_id < _cursor_id(services, scope, cursor))
    return await _page(
        services,
        query.order_by(Pet.listing_id.desc()),
        limit,
        scope,
        lambda p: p.listing_id or "",
    )


def _adoptions_scope(species: Species | None, folded_location: str) -> str:
    return orjson.dumps(
        [ADOPTIONS_SCOPE, species.value if species else None, folded_location]
    ).decode()


def _cursor_id(services: Services, scope: str, cursor: str) -> str:
    key = decode_cursor(services.secret, scope, cursor).get("id")
    if not isinstance(key, str) or not is_valid_id(key):
        raise InvalidCursorError()
    return key


async def _page(
    services: Services,
    query: Select[Pet],
    limit: int,
    scope: str,
    sort_key: Callable[[Pet], str],
) -> Page[PetView]:
    # Lists read their rows in one query rather than one cache look-up per pet.
    async with services.db.read_session() as session:
        rows = list(await session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        next_cursor = encode_cursor(services.secret, scope, {"id": sort_key(rows[-1])})
    items = await _views(services, [_StoredPet.model_validate(p) for p in rows])
    return Page[PetView](items=items, next_cursor=next_cursor)


# --- writing ------------------------------------------------------------------


async def _owned_pet(session: AsyncSession, pet_id: str, account_id: str) -> Pet:
    """The pet, locked for this write (PostgreSQL; SQLite writers are serial)."""
    pet = (
        await session.get(Pet, pet_id, with_for_update=True)
        if is_valid_id(pet_id)
        else None
    )
    if pet is None:
        raise NotFoundError("the pet")
    if pet.owner_id != account_id:
        raise ForbiddenError("only the pet's owner can change it")
    return pet


async def do_create_pet(services: Services, owner_id: str, data: PetCreate) -> PetView:
    pet = Pet(
        id=new_id(),
        owner_id=owner_id,
        name=data.name,
        species=data.species.value,
        breed=data.breed,
        birth_date=data.birth_date,
        bio=data.bio,
        photo_media_id=data.photo_media_id,
        location=data.location,
        location_folded=fold_location(data.location),
        listing_id=new_id() if data.available_for_adoption else None,
        created_at=utcnow(),
    )
    async with services.db.write_session() as session:
        if data.photo_media_id is not None:
            await require_ready_media(session, [data.photo_media_id], owner_id)
        session.add(pet)
        stored = _StoredPet.model_validate(pet)
    await services.cache.invalidate(account_pet_ids_key(owner_id))
    return await _fresh_view(services, stored)


async def do_update_pet(
    services: Services, pet_id: str, account_id: str, data: PetUpdate
) -> PetView:
    changes = data.model_dump(exclude_unset=True)
    for field in ("breed", "bio", "location"):
        if field in changes and changes[field] is None:
            changes[field] = ""
    today, dropped_pick = today_utc(), False
    async with services.db.write_session() as session:
        pet = await _owned_pet(session, pet_id, account_id)
        if changes.get("photo_media_id") is not None:
            await require_ready_media(session, [changes["photo_media_id"]], account_id)
        elif "photo_media_id" in changes and pet.photo_media_id is not None:
            dropped_pick = await _drop_pick(session, today, pet.id)
        if changes.get("photo_media_id", pet.photo_media_id) != pet.photo_media_id:
            queue_release(session, [pet.photo_media_id])  # the one it had
        if "available_for_adoption" in changes:
            listed = changes.pop("available_for_adoption")
            if not listed:
                pet.listing_id = None
            elif pet.listing_id is None:
                pet.listing_id = new_id()
        if "location" in changes:
            pet.location_folded = fold_location(changes["location"])
        if "species" in changes:
            changes["species"] = changes["species"].value
        for field, value in changes.items():
            setattr(pet, field, value)
        stored = _StoredPet.model_validate(pet)
    await services.cache.invalidate(pet_key(pet_id), pet_tag_key(pet_id))
    if dropped_pick:
        await services.cache.invalidate(pet_of_the_day_key(today))
    return await _fresh_view(services, stored)


async def do_delete_pet(services: Services, pet_id: str, account_id: str) -> None:
    today = today_utc()
    async with services.db.write_session() as session:
        pet = await _owned_pet(session, pet_id, account_id)
        # The foreign key would remove the pick too; deleting it here tells us
        # whether the cached pick has to go.
        dropped_pick = await _drop_pick(session, today, pet.id)
        owner_id = pet.owner_id
        await session.execute(delete(Pet).where(Pet.id == pet.id))
        queue_release(session, [pet.photo_media_id])
    await services.cache.invalidate(
        pet_key(pet_id), pet_tag_key(pet_id), account_pet_ids_key(owner_id)
    )
    if dropped_pick:
        await services.cache.invalidate(pet_of_the_day_key(today))


@on_account_deletion
async def delete_pets_of(session: AsyncSession, account_id: str) -> list[str]:
    """What an account's deletion does here: its pets go by the cascade,
    and with them today's pick if it was one of theirs, as ``do_delete_pet``
    does for one."""
    today = today_utc()
    pet_ids = (
        await session.scalars(select(Pet.id).where(Pet.owner_id == account_id))
    ).all()
    forget = [account_pet_ids_key(account_id)]
    for pet_id in pet_ids:
        forget += [pet_key(pet_id), pet_tag_key(pet_id)]
        if await _drop_pick(session, today, pet_id):
            forget.append(pet_of_the_day_key(today))
    return forget


async def _fresh_view(services: Services, pet: _StoredPet) -> PetView:
    views = await _views(services, [pet])
    if not views:
        raise NotFoundError("the account")
    return views[0]


# --- Pet of the Day ---------------------------------------------------------------


async def get_pet_of_the_day(
    services: Services, day: date | None = None
) -> PetOfTheDayView:
    """The pick of ``day`` (today in UTC by default), picking it if need be."""
    day = day or today_utc()
    key = pet_of_the_day_key(day)
    # Cached until the day ends; the key names the day, so the TTL's jitter
    # can keep a pick a little longer but never serve it on the next day.
    end_of_day = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    ttl = max(1.0, (end_of_day - utcnow()).total_seconds())
    # The second round covers a pick whose pet was deleted by a path that did
    # not invalidate the cached pick (an account deletion cascading to it).
    for _ in range(2):
        blob = await services.cache.get_or_load(
            key,
            lambda: _load_pick(services, day),
            ttl=ttl,
            missing_ttl=NO_PICK_TTL,
        )
        if blob is None:
            break
        try:
            pet = await get_pet(services, blob.decode())
        except NotFoundError:
            await services.cache.invalidate(key)
            continue
        return PetOfTheDayView(date=day, pet=pet)
    raise ProblemError(
        404,
        "no_pet_of_the_day",
        "no pet has a photo yet, so there is no Pet of the Day",
    )


async def _load_pick(services: Services, day: date) -> bytes | None:
    pet_id = await do_pick_pet_of_the_day(services, day)
    return None if pet_id is None else pet_id.encode()


async def do_pick_pet_of_the_day(
    services: Services, day: date, rng: random.Random | None = None
) -> str | None:
    """The id of ``day``'s pet, picked now if that day has no valid pick yet.

    The pick is uniform among the pets that have a photo (all photos are
    ready: pets accept only ready media, and ready media stays ready). Once
    made it is kept for the whole day, however many pets arrive later; only
    if its pet is deleted or loses its photo is another one picked.
    """
    async with services.db.read_session() as session:
        pick = await _valid_pick(session, day)
    if pick is not None:
        return pick
    async with services.db.write_session() as session:
        pick = await _valid_pick(session, day)
        if pick is not None:
            return pick  # another request picked while we looked
        await session.execute(
            delete(PetOfTheDay).where(
                PetOfTheDay.day == day, ~_has_photo(PetOfTheDay.pet_id)
            )
        )
        candidate = await _random_pet_with_photo(session, rng or _system_random)
        if candidate is None:
            return None
        return await _claim_day(session, day, candidate)


def _has_photo(pet_id: Any) -> Any:
    return exists().where(Pet.id == pet_id, Pet.photo_media_id.is_not(None))


async def _valid_pick(session: AsyncSession, day: date) -> str | None:
    return await session.scalar(
        select(PetOfTheDay.pet_id).where(
            PetOfTheDay.day == day, _has_photo(PetOfTheDay.pet_id)
        )
    )


async def _random_pet_with_photo(
    session: AsyncSession, rng: random.Random
) -> str | None:
    with_photo = Pet.photo_media_id.is_not(None)
    # Count, then take the k-th in id order: uniform, and once a day a walk of
    # the partial index is cheap. Pets deleted between the two statements
    # (possible on PostgreSQL, not on SQLite's serialized writers) can leave
    # the k-th missing; counting again is rare and still uniform.
    for _ in range(3):
        count = await session.scalar(
            select(func.count()).select_from(Pet).where(with_photo)
        )
        if not count:
            return None
        picked = await session.scalar(
            select(Pet.id)
            .where(with_photo)
            .order_by(Pet.id)
            .offset(rng.randrange(count))
            .limit(1)
        )
        if picked is not None:
            return picked
    return None


async def _claim_day(session: AsyncSession, day: date, pet_id: str) -> str:
    """Record ``pet_id`` as ``day``'s pick unless another request did first.

    Returns the pick that holds: ours, or the one a concurrent request
    committed first (the primary key on the day lets only one insert win).
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(
        insert(PetOfTheDay)
        .values(day=day, pet_id=pet_id, picked_at=utcnow())
        .on_conflict_do_nothing(index_elements=[PetOfTheDay.day])
    )
    winner = await session.scalar(
        select(PetOfTheDay.pet_id).where(PetOfTheDay.day == day)
    )
    assert winner is not None, "the day's row exists after the insert"
    return winner


async def _drop_pick(session: AsyncSession, day: date, pet_id: str) -> bool:
    """Forget ``day``'s pick if it is ``pet_id``; True if it was."""
    dropped = await session.execute(
        delete(PetOfTheDay).where(PetOfTheDay.day == day, PetOfTheDay.pet_id == pet_id)
    )
    return rowcount(dropped) > 0


# --- for other services -------------------------------------------------------


async def require_own_pets(
    session: AsyncSession, pet_ids: list[str], owner_id: str
) -> None:
    """Raise 422 unless ``pet_ids`` are distinct pets of ``owner_id``.

    Runs in the caller's write session, so the check and the caller's change
    see the same pets.
    """
    if len(set(pet_ids)) != len(pet_ids):
        raise InvalidInputError("invalid_pet", "a pet is named more than once")
    if not all(is_valid_id(p) for p in pet_ids):
        raise InvalidInputError("invalid_pet", "a pet id is malformed")
    if not pet_ids:
        return
    owned = set(
        await session.scalars(
            select(Pet.id).where(Pet.id.in_(pet_ids), Pet.owner_id == owner_id)
        )
    )
    for pet_id in pet_ids:
        if pet_id not in owned:
            raise InvalidInputError(
                "invalid_pet", f"pet {pet_id} does not exist or is not yours"
            )


async def pet_tag_wires(services: Services, pet_ids: list[str]) -> dict[str, Wire]:
    """``PetSummary``'s JSON shape of the pets among ``pet_ids`` that exist,
    in one cache round trip."""
    keys = {pet_tag_key(pet_id): pet_id for pet_id in pet_ids if is_valid_id(pet_id)}
    if not keys:
        return {}

    async def load(missing: list[str]) -> dict[str, bytes | None]:
        async with services.db.read_session() as session:
            rows = (
                await session.execute(
                    select(Pet.id, Pet.name, Pet.species, Pet.photo_media_id).where(
                        Pet.id.in_([keys[key] for key in missing])
                    )
                )
            ).all()
        urls = await display_urls(
            services, [r.photo_media_id for r in rows if r.photo_media_id]
        )
        return {
            pet_tag_key(row.id): orjson.dumps(
                {
                    "id": row.id,
                    "name": row.name,
                    "species": row.species,
                    "photo_url": urls.get(row.photo_media_id)
                    if row.photo_media_id
                    else None,
                }
            )
            for row in rows
        }

    found = await services.cache.get_or_load_many(list(keys), load, ttl=PET_TTL)
    return {
        keys[key]: orjson.loads(blob) for key, blob in found.items() if blob is not None
    }


async def pet_summaries(
    services: Services, pet_ids: list[str]
) -> dict[str, PetSummary]:
    """Summaries of the pets among ``pet_ids`` that exist, from the cache."""
    return {
        pet_id: PetSummary.model_validate(wire)
        for pet_id, wire in (await pet_tag_wires(services, pet_ids)).items()
    }
