"""How fast the adoption search finds pets by place, with and without its index.

On PostgreSQL the search reads a trigram index of the listed pets' places
(``ix_pets_listed_location_trigrams``, migration 0011) where the planner
finds it cheaper than walking the listing newest first. The baseline,
measured in the same run on the same data, is the plan every search had
before: the same statement in a transaction that drops the index and is
rolled back (it holds the table meanwhile: run it on a data set nothing
else uses, as the benchmark report's is between its runs).

Both run the statement the API runs for the first page
(``petpal.pets.service.listed_pets``, 21 rows), each repeated and timed by
PostgreSQL itself (``EXPLAIN ANALYZE``'s execution time, warm: the pages
are read once before). Places are of four kinds: rare (made-up words, in
no listed pet's place), the most common places of the listing, single
letters, and rare pairs of letters (no trigram to look up: the index's
weakest case).

    .venv/bin/python benchmarks/adoption_search.py [--users 200000]
        [--database-url URL] [--rounds 5]

``--users N`` reads the data set that ``python3 dev.py bench --users N``
keeps (database ``petpal_bench_uN`` on the server of
``PETPAL_TEST_DATABASE_URL``); it must be seeded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from petpal.pets.models import Pet
from petpal.pets.service import listed_pets
from petpal.platform.text import fold_location

# As benchmarks/report.py and loadtest/run.py have it: run as a script, this
# file cannot import either (only benchmarks/ is on the path).
DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
PAGE = 21  # a page of 20 and one to tell whether there is more
INDEX = "ix_pets_listed_location_trigrams"


def statement(place: str) -> str:
    query = listed_pets(None, fold_location(place))
    query = query.order_by(Pet.listing_id.desc()).limit(PAGE)
    compiled = query.compile(
        dialect=postgresql.asyncpg.dialect(), compile_kwargs={"literal_binds": True}
    )
    return str(compiled)


def _scans(plan: dict[str, Any]) -> set[str]:
    """The indexes (or the table) a plan reads."""
    found = set()
    if "Index Name" in plan:
        found.add(plan["Index Name"])
    elif plan.get("Node Type") == "Seq Scan":
        found.add("the table")
    for child in plan.get("Plans", []):
        found |= _scans(child)
    return found


@dataclass
class Timings:
    milliseconds: list[float] = field(default_factory=list)
    scans: set[str] = field(default_factory=set)
    rows: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.milliseconds)


async def timed(
    connection: asyncpg.Connection, sql: str, rounds: int, timings: Timings
) -> None:
    await connection.fetch(sql)  # its pages read once: warm
    runs = []
    for _ in range(rounds):
        raw = await connection.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
        (explained,) = json.loads(raw)
        runs.append(explained["Execution Time"])
        timings.scans |= _scans(explained["Plan"])
        timings.rows = explained["Plan"]["Actual Rows"]
    timings.milliseconds.append(min(runs))


async def places(connection: asyncpg.Connection) -> dict[str, list[str]]:
    rng = random.Random(7)
    consonants = "bcdfghjklmnpqrstvwxz"
    common = await connection.fetch(
        "SELECT location_folded FROM pets WHERE listing_id IS NOT NULL"
        " AND location_folded <> '' GROUP BY 1 ORDER BY count(*) DESC LIMIT 5"
    )
    return {
        "rare (in no place)": [
            "".join(rng.choice(consonants) for _ in range(8)) for _ in range(10)
        ],
        "common places": [row[0].split(",")[0] for row in common],
        "one letter": ["a", "e", "o"],
        "two rare letters": ["zq", "xj", "qk"],
    }


async def run(url: str, rounds: int) -> int:
    connection = await asyncpg.connect(url)
    try:
        has_index = await connection.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE indexname = $1", INDEX
        )
        if not has_index:
            print(f"no {INDEX} here: is the database migrated?", file=sys.stderr)
            return 2
        listed = await connection.fetchval(
            "SELECT count(*) FROM pets WHERE listing_id IS NOT NULL"
        )
        if not listed:
            print("no pet is listed here: seed the database first", file=sys.stderr)
            return 2
        total = await connection.fetchval("SELECT count(*) FROM pets")
        print(
            f"adoption search benchmark: {listed:,} of {total:,} pets listed; "
            f"first page ({PAGE} rows); the least of {rounds} runs per place"
        )
        print(
            f"{'places':<22}{'count':>6}{'index ms':>10}{'without':>9}"
            f"{'ratio':>12}  plans (index | without)"
        )
        for kind, words in (await places(connection)).items():
            if not words:  # no listed pet has a place
                continue
            indexed, walked = Timings(), Timings()
            for word in words:
                sql = statement(word)
                await timed(connection, sql, rounds, indexed)
                transaction = connection.transaction()
                await transaction.start()
                try:
                    await connection.execute(f"DROP INDEX {INDEX}")
                    await timed(connection, sql, rounds, walked)
                finally:
                    await transaction.rollback()
            ratio = walked.median / indexed.median
            plans = " | ".join(", ".join(sorted(t.scans)) for t in (indexed, walked))
            print(
                f"{kind:<22}{len(words):>6}{indexed.median:>10.2f}"
                f"{walked.median:>9.2f}{ratio:>11.1f}×  {plans}"
            )
        print("(medians over the places of each kind; PostgreSQL's own timing)")
    finally:
        await connection.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--database-url", help="instead of the --users data set")
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    admin = os.environ.get("PETPAL_TEST_DATABASE_URL", DEFAULT_ADMIN_URL)
    try:
        if options.database_url:
            url = make_url(options.database_url)
        else:
            # benchmarks.report.dataset_name
            url = make_url(admin).set(database=f"petpal_bench_u{options.users}")
    except ArgumentError as exc:
        parser.error(f"not a database URL: {exc}")
    if url.get_backend_name() != "postgresql":
        parser.error("the trigram index is PostgreSQL's: give a postgresql:// URL")
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        code = asyncio.run(run(dsn, options.rounds))
    except (OSError, asyncpg.PostgresError) as exc:
        shown = url.render_as_string(hide_password=True)
        print(f"{shown}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if code == 0:
        measured = (
            f" --database-url {shlex.quote(url.render_as_string(hide_password=True))}"
            if options.database_url
            else f" --users {options.users}"
        )
        print(f"reproduce: .venv/bin/python benchmarks/adoption_search.py{measured}")
    return code


if __name__ == "__main__":
    sys.exit(main())
