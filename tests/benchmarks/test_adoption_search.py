"""benchmarks/adoption_search.py on a small generated data set, and the
adoption search's use of the trigram index it measures (PostgreSQL)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from benchmarks import adoption_search
from petpal.platform.services import Services
from petpal.platform.settings import Settings
from petpal.seed.scale import seed_scale
from tests.seed.test_scale import NOW_US, PHOTOS


async def test_both_plans_are_measured_and_the_index_is_kept(
    settings: Settings, services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    if services.db.is_sqlite:
        pytest.skip("the trigram index is PostgreSQL's")
    await seed_scale(settings, 300, seed=3, now_us=NOW_US, photos=PHOTOS)
    dsn = make_url(settings.database_url).set(drivername="postgresql")

    code = await adoption_search.run(dsn.render_as_string(hide_password=False), 1)

    assert code == 0
    out = capsys.readouterr().out
    for kind in ("rare (in no place)", "common places", "one letter"):
        assert kind in out
    # The drop was rolled back.
    async with services.db.read_session() as session:
        found = await session.scalar(
            text("SELECT count(*) FROM pg_indexes WHERE indexname = :name"),
            {"name": adoption_search.INDEX},
        )
    assert found == 1


# The index read for the place.
LOOKED_UP = "Index Cond: (location_folded ~~"


async def test_a_place_of_three_letters_or_more_can_be_looked_up_by_trigrams(
    settings: Settings, services: Services
) -> None:
    """What the search's statement lets the planner do. A table this small
    is best read whole, or by the listing's indexes: for the question, in a
    transaction rolled back, those indexes are dropped and sequential scans
    turned off. A place with no three letters or digits in a row has no
    trigram to look up: it must never be looked up in the index (which it
    would read whole)."""
    if services.db.is_sqlite:
        pytest.skip("the trigram index is PostgreSQL's")
    await seed_scale(settings, 300, seed=3, now_us=NOW_US, photos=PHOTOS)

    dsn = make_url(settings.database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(dsn.render_as_string(hide_password=False))

    async def scans(place: str) -> str:
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.execute(
                "DROP INDEX ix_pets_listing_id, ix_pets_species_listing_id;"
                " SET LOCAL enable_seqscan = off"
            )
            plan = await connection.fetch("EXPLAIN " + adoption_search.statement(place))
        finally:
            await transaction.rollback()
        return "\n".join(row[0] for row in plan)

    try:
        for place in ("nowhereville", "Zürich", "москва", "o'brien"):
            plan = await scans(place)
            assert f"Bitmap Index Scan on {adoption_search.INDEX}" in plan, place
            assert LOOKED_UP in plan, place
        for place in ("zq", "a", "5/7", "a-b-c"):
            # Here the index may stand for the listing, never for the place.
            assert LOOKED_UP not in await scans(place), place
    finally:
        await connection.close()
