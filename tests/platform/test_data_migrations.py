"""Migrations that rewrite stored data: 0004 (İ in hashtags and places),
0005 (e-mail domains in their IDNA form), 0006 (hashtags with joiners),
0007 (mentions with connectors), 0008 (no tags or mentions in addresses),
0009 and 0010 (places without accents)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import InstrumentedAttribute

from petpal.identity.models import Account
from petpal.pets.models import Pet
from petpal.platform.migrate import upgrade
from petpal.platform.services import Services
from petpal.social.models import PostMention, PostTag
from petpal.social.service import post_key
from tests.factories import PASSWORD
from tests.pets.helpers import a_pet
from tests.social.builders import a_member, a_photo, a_post, many_users

OLD = "i\u0307"  # what case-folding made of İ, and 0003's code stored


async def _upgrade_clearing_the_cache(services: Services) -> None:
    """Upgrade, and check that a migration which rewrote what the cache may
    hold had its caller clear the Redis cache (an in-process one starts
    empty with its process)."""
    marker = "before-the-migration"
    if services.settings.redis_url:
        await services.cache.backend.set(marker, b"1", 600)
    await asyncio.to_thread(upgrade, services.settings)
    if services.settings.redis_url:
        assert await services.cache.backend.get(marker) is None


async def test_stored_forms_with_a_dotted_capital_i_are_folded_again(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    """What the code before 0004 stored: a tag of its own for #İstanbul (a
    second row where the caption also had #istanbul), a place folded to
    ``i̇zmir``. The migration leaves one row per tag and post, at the first
    of their places, and the place as a search now folds it."""
    alice = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    both = await a_post(client, alice, media_id, "#İstanbul #cats #istanbul")
    alone = await a_post(client, alice, media_id, "#İzmir")
    pet = await a_pet(client, alice, location="İzmir", available_for_adoption=True)
    async with services.db.write_session() as session:
        await session.execute(
            update(PostTag)
            .where(PostTag.post_id == both["id"], PostTag.tag == "istanbul")
            .values(tag=f"{OLD}stanbul")
        )
        session.add(PostTag(tag="istanbul", post_id=both["id"], position=2))
        await session.execute(
            update(PostTag)
            .where(PostTag.post_id == alone["id"])
            .values(tag=f"{OLD}zmir")
        )
        await session.execute(
            update(Pet).where(Pet.id == pet["id"]).values(location_folded=f"{OLD}zmir")
        )
        await session.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    await _upgrade_clearing_the_cache(services)

    async with services.db.read_session() as session:
        tags = (
            await session.execute(
                select(PostTag.post_id, PostTag.tag, PostTag.position).order_by(
                    PostTag.post_id, PostTag.position
                )
            )
        ).all()
        folded = await session.scalar(
            select(Pet.location_folded).where(Pet.id == pet["id"])
        )
    assert [tuple(row) for row in tags] == [
        (both["id"], "istanbul", 0),
        (both["id"], "cats", 1),
        (alone["id"], "izmir", 0),
    ]
    assert folded == "izmir"
    adoptions = await client.get("/api/v1/adoptions", params={"location": "izmir"})
    assert [p["id"] for p in adoptions.json()["items"]] == [pet["id"]]


async def _sign_up(client: httpx.AsyncClient, username: str, email: str) -> str:
    body = {
        "username": username,
        "email": email,
        "password": PASSWORD,
        "display_name": username,
    }
    response = await client.post("/api/v1/accounts", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_stored_addresses_are_spelt_again_with_idna_domains(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Before 0005 an address's domain was case-folded only: ``Straße.de``
    was stored as ``strasse.de`` (and would log in no more by its address),
    ``éxample.org`` as itself, beside ``xn--xample-9ua.org``, the same
    mailbox, which another account may have. 0005 spells each address again
    from the address as typed; one whose new form is another's keeps its own.
    """
    street = await _sign_up(client, "street", "maya@Straße.de")
    accented = await _sign_up(client, "accented", "twin@éxample.org")

    async def store(account_id: str, stored: str) -> None:
        async with services.db.write_session() as session:
            await session.execute(
                update(Account)
                .where(Account.id == account_id)
                .values(email_canonical=stored)
            )

    await store(street, "maya@strasse.de")
    await store(accented, "twin@éxample.org")
    twin = await _sign_up(client, "twin", "twin@xn--xample-9ua.org")
    async with services.db.write_session() as session:
        await session.execute(text("UPDATE alembic_version SET version_num = '0004'"))

    await asyncio.to_thread(upgrade, services.settings)

    async with services.db.read_session() as session:
        stored = dict(
            (await session.execute(select(Account.id, Account.email_canonical))).all()
        )
    assert stored[street] == "maya@xn--strae-oqa.de"
    assert stored[accented] == "twin@éxample.org"  # its new form is twin's
    assert stored[twin] == "twin@xn--xample-9ua.org"
    login = {"login": "MAYA@straße.de", "password": PASSWORD}
    assert (await client.post("/api/v1/auth/token", json=login)).status_code == 200


async def _linked(
    services: Services,
    link: type[PostTag] | type[PostMention],
    column: InstrumentedAttribute[str],
) -> list[tuple[str, str]]:
    """(post id, ``column``) of every row of ``link``, in each post's order."""
    async with services.db.read_session() as session:
        rows = await session.execute(
            select(link.post_id, column).order_by(link.post_id, link.position)
        )
        return [(row[0], row[1]) for row in rows]


async def test_tags_cut_at_a_joiner_are_found_again_in_their_captions(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    """Before 0006 a tag ended at a zero-width joiner or a connector other
    than the underscore: ``#گربه‌ها`` was stored as ``گربه``, ``#x‿y`` as
    ``x``. 0006 finds the tags of such captions again."""
    alice = await a_member(services)
    media_id = await a_photo(client, alice, services, photos)
    cut = await a_post(client, alice, media_id, "#گربه\u200cها #x‿y #dogs")
    plain = await a_post(client, alice, media_id, "#dogs")
    async with services.db.write_session() as session:
        await session.execute(delete(PostTag).where(PostTag.post_id == cut["id"]))
        for position, tag in enumerate(["گربه", "x", "dogs"]):
            session.add(PostTag(tag=tag, post_id=cut["id"], position=position))
        await session.execute(text("UPDATE alembic_version SET version_num = '0005'"))

    await asyncio.to_thread(upgrade, services.settings)

    assert await _linked(services, PostTag, PostTag.tag) == [
        (cut["id"], "گربه\u200cها"),
        (cut["id"], "x‿y"),
        (cut["id"], "dogs"),
        (plain["id"], "dogs"),
    ]


async def test_mentions_cut_at_a_connector_are_found_again_in_their_captions(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    """Before 0007's rules a mention ended at a full-width low line, so
    ``@ｕｓｅｒ＿１`` mentioned ``user`` rather than ``user_1``, and
    ``x‿@lena`` mentioned lena. 0007 finds the mentions of such captions
    again, among the accounts that exist."""
    alice, user, user_1, lena = await many_users(services, 4)
    names = {"user": user, "user_1": user_1, "lena": lena}
    async with services.db.write_session() as session:
        for name, who in names.items():
            await session.execute(
                update(Account)
                .where(Account.id == who.id)
                .values(username=name, username_canonical=name)
            )
    media_id = await a_photo(client, alice, services, photos)
    cut = await a_post(client, alice, media_id, "@ｕｓｅｒ＿１ and x‿@lena")
    plain = await a_post(client, alice, media_id, "@user and @lena")
    async with services.db.write_session() as session:
        await session.execute(
            delete(PostMention).where(PostMention.post_id == cut["id"])
        )
        for position, who in enumerate((user, lena)):
            session.add(
                PostMention(post_id=cut["id"], account_id=who.id, position=position)
            )
        await session.execute(text("UPDATE alembic_version SET version_num = '0006'"))

    await asyncio.to_thread(upgrade, services.settings)

    assert await _linked(services, PostMention, PostMention.account_id) == [
        (cut["id"], user_1.id),
        (plain["id"], user.id),
        (plain["id"], lena.id),
    ]
    # What a restarted embedded server reads (a Redis cache, 0007 cleared).
    await services.cache.invalidate(post_key(cut["id"]))
    shown = await client.get(f"/api/v1/posts/{cut['id']}")
    assert shown.json()["mentions"] == ["user_1"]


async def test_tags_and_mentions_in_addresses_are_found_again(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    """Before 0008's rules a ``#`` or an ``@`` in an address began a tag or
    a mention (found by a trial). 0008 finds both again in the captions
    that hold an address, and leaves the others as they are."""
    alice, theo = await many_users(services, 2)
    async with services.db.write_session() as session:
        await session.execute(
            update(Account)
            .where(Account.id == theo.id)
            .values(username="theo", username_canonical="theo")
        )
    media_id = await a_photo(client, alice, services, photos)
    caption = "adopt https://shelter.example.org/#adopt-now mastodon.social/@theo #dogs"
    linked = await a_post(client, alice, media_id, caption)
    plain = await a_post(client, alice, media_id, "#adopt with @theo")
    # Right as they were stored, and left so (a first 0008 took them out).
    slashed = await a_post(client, alice, media_id, "walk w/@theo and w/#friends")
    elsewhere = await a_post(client, alice, media_id, "hi @theo@mastodon.social")
    async with services.db.write_session() as session:
        # As the old rules stored them.
        await session.execute(delete(PostTag).where(PostTag.post_id == linked["id"]))
        for position, tag in enumerate(["adopt", "dogs"]):
            session.add(PostTag(tag=tag, post_id=linked["id"], position=position))
        for post in (linked, elsewhere):
            session.add(PostMention(post_id=post["id"], account_id=theo.id, position=0))
        await session.execute(text("UPDATE alembic_version SET version_num = '0007'"))

    await asyncio.to_thread(upgrade, services.settings)

    assert await _linked(services, PostTag, PostTag.tag) == [
        (linked["id"], "dogs"),
        (plain["id"], "adopt"),
        (slashed["id"], "friends"),
    ]
    assert await _linked(services, PostMention, PostMention.account_id) == [
        (plain["id"], theo.id),
        (slashed["id"], theo.id),
    ]
    await services.cache.invalidate(post_key(linked["id"]))
    shown = (await client.get(f"/api/v1/posts/{linked['id']}")).json()
    assert (shown["hashtags"], shown["mentions"]) == (["dogs"], [])


async def test_places_are_folded_again_without_their_accents(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Before 0009 a place was folded by case only, so ``malmo`` found no
    Malmö (found by a trial). 0009 folds every stored place again, and the
    search finds it by its plain spelling; a place with no accent stays."""
    alice = await a_member(services)
    accented = await a_pet(
        client, alice, location="Malmö, Skåne", available_for_adoption=True
    )
    plain = await a_pet(client, alice, location="Lund", available_for_adoption=True)
    nowhere = await a_pet(client, alice, available_for_adoption=True)
    async with services.db.write_session() as session:
        # As the fold before 0009 stored it.
        await session.execute(
            update(Pet)
            .where(Pet.id == accented["id"])
            .values(location_folded="malmö, skåne")
        )
        await session.execute(text("UPDATE alembic_version SET version_num = '0008'"))
    await _upgrade_clearing_the_cache(services)

    async with services.db.read_session() as session:
        folded = dict(
            (
                await session.execute(
                    select(Pet.id, Pet.location_folded).where(
                        Pet.id.in_([accented["id"], plain["id"], nowhere["id"]])
                    )
                )
            ).all()
        )
    assert folded == {
        accented["id"]: "malmo, skane",
        plain["id"]: "lund",
        nowhere["id"]: "",
    }
    adoptions = await client.get("/api/v1/adoptions", params={"location": "malmo"})
    assert [p["id"] for p in adoptions.json()["items"]] == [accented["id"]]


async def test_places_are_folded_again_with_cyrillic_letters_of_their_own(
    client: httpx.AsyncClient, services: Services
) -> None:
    """0009's fold dropped й's breve and ї's dots, and kept a soft hyphen:
    Київ was stored as ``киів`` and searched by ``київ`` in vain (found by a
    trial). 0010 folds every stored place again."""
    alice = await a_member(services)
    kyiv = await a_pet(client, alice, location="Київ", available_for_adoption=True)
    malmo = await a_pet(
        client, alice, location="Mal\u00admö", available_for_adoption=True
    )
    async with services.db.write_session() as session:
        # As 0009's fold stored them.
        for pet, old in ((kyiv, "киів"), (malmo, "mal\u00admo")):
            await session.execute(
                update(Pet).where(Pet.id == pet["id"]).values(location_folded=old)
            )
        await session.execute(text("UPDATE alembic_version SET version_num = '0009'"))

    await _upgrade_clearing_the_cache(services)

    for query, pet in (("київ", kyiv), ("Київ", kyiv), ("malmo", malmo)):
        adoptions = await client.get("/api/v1/adoptions", params={"location": query})
        assert [p["id"] for p in adoptions.json()["items"]] == [pet["id"]], query
