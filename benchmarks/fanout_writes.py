"""How fast fan-out writes post ids into home timelines.

Makes --followers timelines of which a share (--active) exist, each holding
some ids already, then fans --posts posts out to every follower the way the
``social.fanout`` job does after its database reads: ``Timelines.add`` over
chunks of ``FANOUT_CHUNK`` keys, which skips the timelines that do not
exist, keeps each one's floor and cap, and says which it wrote. The
baseline, measured in the same run on the same store, is the plainest write
of the same ids into the existing timelines only: pipelined ZADDs in Redis,
a sorted insert per list in process. It prints timeline inserts per second
for both and their ratio.

    .venv/bin/python benchmarks/fanout_writes.py [--followers 20000]
        [--active 0.3] [--posts 20]

Runs on the in-process store; with PETPAL_REDIS_URL set it measures Redis,
under a key prefix of its own that it deletes at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from petpal.platform.cache import Cache, InProcessBackend
from petpal.platform.ids import new_id
from petpal.platform.redis_cache import connect
from petpal.platform.redis_timelines import RedisTimelineBackend
from petpal.platform.settings import Settings
from petpal.platform.timelines import (
    KEY_PREFIX,
    InProcessTimelineBackend,
    TimelineBackend,
    TimelineContent,
    Timelines,
)
from petpal.social.home import FANOUT_CHUNK, home_key

CAP = 800
ALREADY_HELD = 200


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def timed(work: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    started = time.perf_counter()
    inserts = await work()
    return inserts, time.perf_counter() - started


async def run(followers: int, active: float, posts: int) -> int:
    # A throughput measurement, not a fault test: the cache's 0.25 s socket
    # timeout would only make a loaded machine's runs fail.
    settings = Settings(cache_socket_timeout_seconds=10)
    redis_client = connect(settings) if settings.redis_url else None
    prefix = f"petpal-bench-fanout-{os.getpid()}:"
    backend: TimelineBackend = (
        RedisTimelineBackend(redis_client, prefix)
        if redis_client is not None
        else InProcessTimelineBackend(max_timelines=2 * followers)
    )
    timelines = Timelines(
        backend, cap=CAP, ttl_seconds=3600, cache=Cache(InProcessBackend())
    )
    try:
        return await measure(timelines, redis_client, prefix, followers, active, posts)
    finally:
        await timelines.clear()
        await timelines.close()


async def measure(
    timelines: Timelines,
    redis_client: Redis | None,
    prefix: str,
    followers: int,
    active: float,
    posts: int,
) -> int:
    rng = random.Random(5)
    accounts = [new_id() for _ in range(followers)]
    warm = rng.sample(accounts, round(followers * active))
    held = sorted((new_id() for _ in range(ALREADY_HELD)), reverse=True)

    async def content() -> TimelineContent:
        return TimelineContent(held, complete=True)

    for account in warm:
        await timelines.build(home_key(account), content, budget=60)
    # Baseline timelines: the same ids, in keys of their own.
    base_keys = [f"{KEY_PREFIX}base:{account}" for account in warm]
    plain: dict[str, list[str]] = {key: sorted(held) for key in base_keys}
    if redis_client is not None:
        for part in chunks(base_keys, FANOUT_CHUNK):
            async with redis_client.pipeline(transaction=False) as pipe:
                for key in part:
                    pipe.zadd(prefix + key, dict.fromkeys(held, 0))
                await pipe.execute()

    new_posts = [new_id() for _ in range(posts)]
    keys = [home_key(account) for account in accounts]

    async def fan_out() -> int:
        written = 0
        for post in new_posts:
            for part in chunks(keys, FANOUT_CHUNK):
                written += len(await timelines.add(part, ids=[post]))
        return written

    async def baseline() -> int:
        written = 0
        for post in new_posts:
            for part in chunks(base_keys, FANOUT_CHUNK):
                if redis_client is not None:
                    async with redis_client.pipeline(transaction=False) as pipe:
                        for key in part:
                            pipe.zadd(prefix + key, {post: 0})
                        await pipe.execute()
                else:
                    for key in part:
                        bisect.insort(plain[key], post)
                written += len(part)
        return written

    base_inserts, base_seconds = await timed(baseline)
    inserts, seconds = await timed(fan_out)
    (sample,) = await timelines.read([home_key(warm[0])], None, posts)
    correct = sample is not None and sample.ids == new_posts[::-1]

    store = "Redis" if redis_client is not None else "in-process store"
    print(
        f"fan-out benchmark on the {store}: {followers} followers, "
        f"{len(warm)} with a timeline ({ALREADY_HELD} ids each), {posts} posts"
    )
    rate, base_rate = inserts / seconds, base_inserts / base_seconds
    print(f"{'':<34}{'inserts':>9}{'seconds':>9}{'inserts/s':>12}")
    print(f"{'fan-out (Timelines.add)':<34}{inserts:>9}{seconds:>9.2f}{rate:>12,.0f}")
    print(
        f"{'baseline (plain writes)':<34}{base_inserts:>9}{base_seconds:>9.2f}"
        f"{base_rate:>12,.0f}"
    )
    print(f"fan-out / baseline: {rate / base_rate:.2f}")
    print(f"followers examined per second: {followers * posts / seconds:,.0f}")
    print(f"newest ids of a timeline as posted: {correct}")
    print(
        "reproduce: .venv/bin/python benchmarks/fanout_writes.py "
        f"--followers {followers} --active {active} --posts {posts}"
    )
    return 0 if correct and inserts == base_inserts else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--followers", type=int, default=20_000)
    parser.add_argument("--active", type=float, default=0.3)
    parser.add_argument("--posts", type=int, default=20)
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.followers, args.active, args.posts)))
