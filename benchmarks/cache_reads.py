"""How many database reads the cache removes from the hot read paths.

Seeds a data set, then runs the same mixed read workload (profiles, pets,
posts, home feeds, trending, Pet of the Day, with likes and comments mixed
in) three times in one run: with the cache switched off — the baseline —,
with the cache on starting empty, and once more with the cache as the second
run left it (warm). For each hot read it prints the SQL statements per
request in each run and the reduction, then checks that every answer served
from the cache equals the answer the database gives after all the writes.
With the cache off, home feeds are read from the database, not from the
fanned-out timelines; "cache on" starts with no timelines either.

    .venv/bin/python benchmarks/cache_reads.py [--users 200] [--requests 3000]

Runs on the embedded defaults; set PETPAL_DATABASE_URL / PETPAL_REDIS_URL to
measure another engine.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import REGISTRY

from petpal.media.models import READY, Media
from petpal.platform.app import create_app
from petpal.platform.db import utcnow
from petpal.platform.ids import new_id
from petpal.platform.migrate import upgrade
from petpal.platform.services import Services
from petpal.platform.settings import Settings

PASSWORD = "benchmark-password"
HOT_READS = {
    "profile": "/api/v1/accounts/{username}",
    "pet": "/api/v1/pets/{pet_id}",
    "post": "/api/v1/posts/{post_id}",
    "home feed": "/api/v1/feed/home",
    "trending": "/api/v1/feed/trending",
    "pet of the day": "/api/v1/pets/of-the-day",
}


def route_totals(route: str) -> tuple[float, float]:
    labels = {"route": route}
    total = REGISTRY.get_sample_value("petpal_http_request_db_queries_sum", labels)
    count = REGISTRY.get_sample_value("petpal_http_request_db_queries_count", labels)
    return total or 0.0, count or 0.0


async def ready_media(services: Services, owner_id: str) -> str:
    # Made in the database: this benchmark is about reads, not image work.
    media_id = new_id()
    async with services.db.write_session() as session:
        session.add(
            Media(
                id=media_id,
                owner_id=owner_id,
                status=READY,
                source_format="jpeg",
                byte_size=1,
                width=720,
                height=480,
                variants=[
                    {
                        "name": "medium",
                        "key": f"media/{media_id}/medium.jpg",
                        "width": 720,
                        "height": 480,
                        "content_type": "image/jpeg",
                    }
                ],
                created_at=utcnow(),
            )
        )
    return media_id


async def seed(
    client: httpx.AsyncClient, services: Services, users: int
) -> dict[str, Any]:
    rng = random.Random(7)
    accounts: list[dict[str, str]] = []
    for n in range(users):
        name = f"bench_{n}"
        await client.post(
            "/api/v1/accounts",
            json={
                "username": name,
                "email": f"{name}@example.org",
                "password": PASSWORD,
                "display_name": f"Bench {n}",
            },
        )
        token = (
            await client.post(
                "/api/v1/auth/token", json={"login": name, "password": PASSWORD}
            )
        ).json()
        me = (
            await client.get(
                "/api/v1/accounts/me",
                headers={"Authorization": f"Bearer {token['access_token']}"},
            )
        ).json()
        accounts.append(
            {
                "id": me["id"],
                "username": name,
                "auth": f"Bearer {token['access_token']}",
            }
        )
    pets: list[str] = []
    posts: list[str] = []
    for account in accounts:
        headers = {"Authorization": account["auth"]}
        media_id = await ready_media(services, account["id"])
        pet = (
            await client.post(
                "/api/v1/pets",
                headers=headers,
                json={
                    "name": "Rex",
                    "species": rng.choice(["dog", "cat"]),
                    "photo_media_id": media_id,
                },
            )
        ).json()
        pets.append(pet["id"])
        for i in range(3):
            post = (
                await client.post(
                    "/api/v1/posts",
                    headers=headers,
                    json={
                        "caption": f"post {i} #bench",
                        "media_ids": [media_id],
                        "pet_ids": [pet["id"]],
                    },
                )
            ).json()
            posts.append(post["id"])
    for account in accounts:
        # A skewed graph: low-numbered accounts are followed by many.
        for target in {
            min(int(rng.paretovariate(1.2)) - 1, users - 1) for _ in range(15)
        }:
            if accounts[target]["id"] != account["id"]:
                await client.post(
                    f"/api/v1/accounts/{accounts[target]['username']}/follow",
                    headers={"Authorization": account["auth"]},
                )
    if services.relay is not None:
        await services.relay.drain(within_seconds=300)  # the posts' fan-out
    return {"accounts": accounts, "pets": pets, "posts": posts}


async def workload(
    client: httpx.AsyncClient, data: dict[str, Any], requests: int, seed_value: int
) -> None:
    rng = random.Random(seed_value)
    accounts, pets, posts = data["accounts"], data["pets"], data["posts"]

    def skewed(items: list[Any]) -> Any:
        return items[min(int(rng.paretovariate(1.1)) - 1, len(items) - 1)]

    for _ in range(requests):
        viewer = rng.choice(accounts)
        headers = {"Authorization": viewer["auth"]}
        roll = rng.random()
        if roll < 0.20:
            await client.get(
                f"/api/v1/accounts/{skewed(accounts)['username']}", headers=headers
            )
        elif roll < 0.35:
            await client.get(f"/api/v1/pets/{skewed(pets)}", headers=headers)
        elif roll < 0.60:
            await client.get(f"/api/v1/posts/{skewed(posts)}", headers=headers)
        elif roll < 0.80:
            await client.get("/api/v1/feed/home", headers=headers)
        elif roll < 0.88:
            await client.get("/api/v1/feed/trending", headers=headers)
        elif roll < 0.93:
            await client.get("/api/v1/pets/of-the-day", headers=headers)
        elif roll < 0.98:
            await client.post(f"/api/v1/posts/{skewed(posts)}/like", headers=headers)
        else:
            await client.post(
                f"/api/v1/posts/{skewed(posts)}/comments",
                headers=headers,
                json={"body": "nice"},
            )


async def measure(
    services: Services,
    client: httpx.AsyncClient,
    data: dict[str, Any],
    requests: int,
    cache_on: bool,
    *,
    warm: bool = False,
) -> tuple[dict[str, float], float]:
    services.cache.enabled = cache_on
    if not warm:
        await services.cache.clear()
        await services.timelines.clear()
        await services.rankings.clear()
    before = {name: route_totals(route) for name, route in HOT_READS.items()}
    started = time.perf_counter()
    await workload(client, data, requests, seed_value=11)
    elapsed = time.perf_counter() - started
    per_request = {}
    for name, route in HOT_READS.items():
        total, count = route_totals(route)
        queries, calls = total - before[name][0], count - before[name][1]
        per_request[name] = queries / calls if calls else float("nan")
    return per_request, elapsed


async def check_answers(
    services: Services, client: httpx.AsyncClient, data: dict[str, Any]
) -> int:
    """Compare cached answers with uncached ones after all the writes."""
    mismatches = 0
    viewer = {"Authorization": data["accounts"][0]["auth"]}
    paths = [f"/api/v1/posts/{p}" for p in data["posts"][:60]]
    paths += [f"/api/v1/accounts/{a['username']}" for a in data["accounts"][:40]]
    paths += [f"/api/v1/pets/{p}" for p in data["pets"][:40]]
    paths += ["/api/v1/feed/home", "/api/v1/pets/of-the-day"]
    services.cache.enabled = True
    cached = [(await client.get(p, headers=viewer)).json() for p in paths]
    services.cache.enabled = False
    fresh = [(await client.get(p, headers=viewer)).json() for p in paths]
    services.cache.enabled = True
    for path, a, b in zip(paths, cached, fresh, strict=True):
        if a != b:
            mismatches += 1
            print(f"  stale answer for {path}", file=sys.stderr)
    return mismatches


async def run(settings: Settings, users: int, requests: int) -> int:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench"
        ) as client:
            data = await seed(client, services, users)
            off, t_off = await measure(services, client, data, requests, cache_on=False)
            on, t_on = await measure(services, client, data, requests, cache_on=True)
            warm, t_warm = await measure(
                services, client, data, requests, cache_on=True, warm=True
            )
            mismatches = await check_answers(services, client, data)
    print(
        f"cache read benchmark: {users} accounts, {len(data['posts'])} posts, "
        f"{requests} requests per run (mixed reads with ~7% writes)"
    )
    header = ("hot read", "queries/req, no cache", "with cache", "reduction", "warm")
    print(f"{header[0]:<16}{header[1]:>24}{header[2]:>12}{header[3]:>11}{header[4]:>8}")
    for name in HOT_READS:
        reduction = 1 - on[name] / off[name] if off[name] else float("nan")
        print(
            f"{name:<16}{off[name]:>24.2f}{on[name]:>12.2f}{reduction:>10.0%}"
            f"{warm[name]:>8.2f}"
        )
    print(
        f"wall time: {t_off:.1f} s without cache, {t_on:.1f} s with "
        f"(ratio {t_off / t_on:.2f}x), {t_warm:.1f} s warm "
        f"(ratio {t_off / t_warm:.2f}x)"
    )
    print(f"answers checked after writes: {mismatches} stale")
    print(
        "reproduce: .venv/bin/python benchmarks/cache_reads.py "
        f"--users {users} --requests {requests}"
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            secret_key="benchmark-secret-key-0123456789abcdef",
            log_level="WARNING",
            # One client seeds every account: the sign-up limit per IP would
            # stop it; limits are not what this benchmark measures.
            rate_limits_enabled=False,
        )
        upgrade(settings)  # Alembic runs its own event loop: before ours starts
        sys.exit(asyncio.run(run(settings, args.users, args.requests)))
