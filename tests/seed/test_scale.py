"""``petpal seed --users N``: the generated rows are the rows the app would make.

A small data set goes into the test database (SQLite, or PostgreSQL in the
distributed run) through the real bulk path, and is then checked from the
tables and through the API: counters, id times, hashtags, the graph's shape,
the schema after the index rebuild, and a log-in, home feed, profile and post
of a generated account.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner
from ulid import ULID

from petpal.cli import app as cli
from petpal.platform.services import Services
from petpal.platform.settings import Settings
from petpal.platform.text import extract_hashtags
from petpal.seed.library import SEED_PHOTOS, LibraryPhoto
from petpal.seed.scale import (
    DEFAULT_PASSWORD,
    ScaleReport,
    SeedRefusedError,
    seed_scale,
)
from petpal.seed.shape import DAY, DataSet
from tests.factories import a_user

USERS = 2000
# Two small photos, one of each species, keep processing well under a second.
PHOTOS = [
    next(p for p in SEED_PHOTOS if p.name == "skimage_chelsea_cat.png"),
    next(p for p in SEED_PHOTOS if p.name == "darknet_dog_horse_person.jpg"),
]
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW_US = int(NOW.timestamp() * 1_000_000)


async def _rows(services: Services, sql: str, **params: Any) -> list[Any]:
    async with services.db.read_session() as session:
        return list((await session.execute(text(sql), params)).all())


async def _scalar(services: Services, sql: str) -> Any:
    return (await _rows(services, sql))[0][0]


async def _schema(services: Services) -> list[tuple[str, str]]:
    """Every constraint and index, as the database itself describes them."""
    if services.db.is_sqlite:
        sql = "SELECT name, coalesce(sql, '') FROM sqlite_master WHERE type != 'table'"
    else:
        sql = """
            SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE connamespace = current_schema()::regnamespace
            UNION ALL
            SELECT indexname, indexdef FROM pg_indexes
            WHERE schemaname = current_schema()
        """
    return sorted((str(a), str(b)) for a, b in await _rows(services, sql))


async def _seed(settings: Settings, **options: Any) -> ScaleReport:
    return await seed_scale(
        settings, USERS, seed=7, now_us=NOW_US, photos=PHOTOS, **options
    )


def _time_of(ulid: str) -> int:
    return int(ULID.from_str(ulid).milliseconds)


def _ms(value: Any) -> int:
    if isinstance(value, str):  # SQLite hands back the stored text
        value = datetime.fromisoformat(value).replace(tzinfo=UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1_000_000) // 1000


async def test_a_generated_data_set_is_what_the_app_would_have_written(
    settings: Settings, services: Services, client: httpx.AsyncClient
) -> None:
    schema_before = await _schema(services)
    report = await _seed(settings)

    # The load rebuilt every index and constraint it dropped, identically.
    assert await _schema(services) == schema_before
    if services.db.is_sqlite:
        assert await _rows(services, "PRAGMA foreign_key_check") == []

    counts = {
        table: await _scalar(services, f"SELECT count(*) FROM {table}")  # noqa: S608
        for table in report.rows
    }
    assert counts == report.rows
    assert counts["accounts"] == USERS
    assert counts["posts"] > 3 * USERS
    assert counts["likes"] > counts["posts"]
    assert counts["comments"] > 0
    assert counts["post_tags"] > 0

    # Counters are exact.
    wrong_stats = await _scalar(
        services,
        """
        SELECT count(*) FROM accounts a
        LEFT JOIN account_stats s ON s.account_id = a.id
        WHERE coalesce(s.follower_count, 0)
                != (SELECT count(*) FROM follows f WHERE f.followee_id = a.id)
           OR coalesce(s.following_count, 0)
                != (SELECT count(*) FROM follows f WHERE f.follower_id = a.id)
           OR coalesce(s.post_count, 0)
                != (SELECT count(*) FROM posts p WHERE p.author_id = a.id)
        """,
    )
    assert wrong_stats == 0
    wrong_posts = await _scalar(
        services,
        """
        SELECT count(*) FROM posts p
        WHERE p.like_count != (SELECT count(*) FROM likes l WHERE l.post_id = p.id)
           OR p.comment_count
                != (SELECT count(*) FROM comments c WHERE c.post_id = p.id)
        """,
    )
    assert wrong_posts == 0

    # Every id's time part is its row's created_at, to the millisecond.
    for table in ("accounts", "pets", "media", "posts", "comments", "follows"):
        rows = await _rows(services, f"SELECT id, created_at FROM {table}")  # noqa: S608
        assert all(_time_of(i) == _ms(at) for i, at in rows), table
    for post_id, media_at, post_at in await _rows(
        services,
        "SELECT p.id, m.created_at, p.created_at FROM posts p"
        " JOIN post_media pm ON pm.post_id = p.id JOIN media m ON m.id = pm.media_id",
    ):
        assert _ms(media_at) <= _ms(post_at), post_id

    # Hashtag rows are the caption's hashtags, in order.
    tags: dict[str, list[str]] = {}
    for post_id, tag in await _rows(
        services, "SELECT post_id, tag FROM post_tags ORDER BY post_id, position"
    ):
        tags.setdefault(post_id, []).append(tag)
    for post_id, caption in await _rows(services, "SELECT id, caption FROM posts"):
        assert tags.get(post_id, []) == extract_hashtags(caption)

    # The graph has the promised shape, roughly.
    median_following, _, max_following = report.following
    assert 15 <= median_following <= 45
    assert max_following < USERS
    top = await _rows(
        services,
        "SELECT a.username FROM account_stats s JOIN accounts a ON a.id = s.account_id"
        " ORDER BY s.follower_count DESC, a.username LIMIT 1",
    )
    assert top[0][0] == "user_0"
    # user_0 is active and posts: a load test's celebrity has something to show.
    star = (await client.get("/api/v1/accounts/user_0")).json()
    assert star["post_count"] > 0
    assert report.top_account_share == pytest.approx(
        await _scalar(
            services,
            "SELECT follower_count FROM account_stats s JOIN accounts a"
            " ON a.id = s.account_id WHERE a.username = 'user_0'",
        )
        / USERS
    )
    assert 0.25 <= report.active_share <= 0.35
    assert "median" in report.render()
    # It says how to log in (found by a trial: "with the seed's password").
    assert report.render().endswith("with the password pawprints-on-the-porch")
    custom = dataclasses.replace(report, default_password=False)
    assert custom.render().endswith("with the password given with --password")

    # A generated account logs in with the password and reads like anyone.
    reader = (
        await _rows(
            services,
            "SELECT a.username FROM accounts a JOIN account_stats s"
            " ON s.account_id = a.id WHERE s.following_count > 20"
            " ORDER BY a.username LIMIT 1",
        )
    )[0][0]
    tokens = await client.post(
        "/api/v1/auth/token", json={"login": reader, "password": DEFAULT_PASSWORD}
    )
    assert tokens.status_code == 200, tokens.text
    headers = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
    feed = await client.get("/api/v1/feed/home", headers=headers)
    assert feed.status_code == 200, feed.text
    items = feed.json()["items"]
    assert items
    post = items[0]
    assert post["media"][0]["status"] == "ready"
    one = await client.get(f"/api/v1/posts/{post['id']}", headers=headers)
    assert one.status_code == 200
    assert one.json()["like_count"] == post["like_count"]
    profile = await client.get(f"/api/v1/accounts/{post['author']['username']}")
    assert profile.status_code == 200
    body = profile.json()
    assert body["post_count"] >= 1
    assert body["follower_count"] >= 1
    pets = await client.get(f"/api/v1/accounts/{reader}/pets")
    assert pets.status_code == 200
    for pet in pets.json()["items"]:
        assert pet["species"] in ("dog", "cat")
        assert pet["birth_date"] < pet["created_at"][:10]
        assert pet["photo"]["status"] == "ready"
    # The photo is a real processed file the app serves.
    variant = post["media"][0]["variants"][0]
    served = await client.get(variant["url"])
    assert served.status_code == 200
    assert served.headers["content-type"] == variant["content_type"]

    # A second run refuses, cleanly, and changes nothing.
    with pytest.raises(SeedRefusedError, match="already has 2,000 accounts"):
        await _seed(settings)
    with pytest.raises(SeedRefusedError, match="named user_0"):
        await _seed(settings, append=True)
    assert await _scalar(services, "SELECT count(*) FROM accounts") == USERS


async def test_append_adds_next_to_existing_accounts(
    settings: Settings, services: Services, client: httpx.AsyncClient
) -> None:
    alice = await a_user(client, "alice")
    # Read once before: the public feed's timeline and trending's ranking
    # made, empty (on Redis; in process, a seed beside a server is refused).
    for feed in ("public", "trending"):
        answer = await client.get(f"/api/v1/feed/{feed}", headers=alice.headers)
        assert answer.json()["items"] == []
    schema_before = await _schema(services)
    report = await seed_scale(
        settings, 300, seed=1, now_us=NOW_US, photos=PHOTOS, append=True
    )
    assert await _schema(services) == schema_before
    assert await _scalar(services, "SELECT count(*) FROM accounts") == 301
    assert report.rows["accounts"] == 300
    profile = await client.get("/api/v1/accounts/alice")
    assert profile.json()["id"] == alice.id
    assert profile.json()["follower_count"] == 0
    user = await client.get("/api/v1/accounts/user_299")
    assert user.status_code == 200
    if settings.redis_url:  # found by a trial: it stayed empty
        answer = await client.get("/api/v1/feed/public", headers=alice.headers)
        assert answer.json()["items"] != []
        # (Trending stays empty: the posts are dated before its window.)


def _fingerprint(users: int, seed: int) -> str:
    photo = LibraryPhoto("dog", "jpeg", 1, 1, 1, "L00000fQfQfQfQfQfQfQfQfQfQfQ", [])
    data = DataSet(users, seed, NOW_US, "hash", [photo])
    digest = hashlib.sha256()
    for batch in data.batches():
        digest.update(batch.pg_copy_data())
    return digest.hexdigest()


def test_the_same_seed_makes_the_same_data_set() -> None:
    assert _fingerprint(300, 5) == _fingerprint(300, 5)
    assert _fingerprint(300, 5) != _fingerprint(300, 6)


def test_posts_keep_their_pace_until_the_last_day() -> None:
    """Found by a trial: posts thinned out towards the present (a fifth of
    the usual number the day before), since each account's end at its last
    activity and those were spread evenly over the week."""
    photo = LibraryPhoto("dog", "jpeg", 1, 1, 1, "L00000fQfQfQfQfQfQfQfQfQfQfQ", [])
    data = DataSet(5000, 3, NOW_US, "hash", [photo])
    times = [b.columns["created_at"] for b in data.batches() if b.table == "posts"]
    days = [(NOW_US - t) // DAY for column in times for t in column.us.tolist()]
    per_day = [days.count(d) for d in range(60)]
    month_ago = sum(per_day[30:60]) / 30
    assert min(per_day[1:7]) > 0.7 * month_ago, per_day[:7]


def test_seed_options_without_users_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["seed", "--data-dir", str(tmp_path), "--seed", "3"]
    )
    assert result.exit_code == 2
    assert "go with --users" in result.output
    result = CliRunner().invoke(
        cli, ["seed", "--data-dir", str(tmp_path), "--users", "1"]
    )
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        # Found by a trial: a traceback from deep in numpy, or from memory.
        (["--users", "99999999999999999999999"], "less than or equal to 5000000"),
        (["--users", "5000001"], "less than or equal to 5000000"),
        # Found by a trial: accounts nobody could log in to.
        (["--users", "5", "--password", ""], "8 to 256 characters"),
        (["--users", "5", "--password", "x"], "8 to 256 characters"),
        (["--users", "5", "--password", "password123"], "too easy to guess"),
        # Found by a trial: "at most 1024 characters", not the rule.
        (["--users", "5", "--password", "Q7#kz!" * 200], "8 to 256 characters"),
    ],
    ids=["huge", "past the bound", "empty password", "short", "weak", "long"],
)
def test_a_data_set_no_one_could_make_or_use_is_refused(
    tmp_path: Path, arguments: list[str], said: str
) -> None:
    result = CliRunner().invoke(cli, ["seed", "--data-dir", str(tmp_path), *arguments])
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "petpal.sqlite3").exists()  # nothing made
