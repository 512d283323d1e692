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

The existing timelines hold 200 ids and are complete, or with --full are
as an active reader's timeline mostly is: past the cap and incomplete, each
somewhere within the cap's slack, so that trims come at their steady rate.

What limits each figure is printed beside it: the Redis calls each made
(script calls, pipelines), the CPU time of this process, and that of the
Redis server when it runs on this machine (read from /proc; on a shared
server it includes other clients' work), and the load average.

    .venv/bin/python benchmarks/fanout_writes.py [--followers 20000]
        [--active 0.3] [--posts 20] [--full]

Runs on the in-process store; with PETPAL_REDIS_URL set it measures Redis,
under a key prefix of its own that it deletes at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import math
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

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
    trim_slack,
)
from petpal.social.home import FANOUT_CHUNK, home_key

CAP = 800
ALREADY_HELD = 200
# Commands per pipeline of the baseline, as in every report before the
# fan-out's chunk grew: the baseline stays the same measure across reports.
BASELINE_PIPELINE = 1000
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class ServerCpu:
    """CPU seconds the Redis server has used, if it runs on this machine."""

    def __init__(self, stat: Path | None) -> None:
        self._stat = stat

    @classmethod
    async def of(cls, client: Redis | None) -> ServerCpu:
        if client is None:
            return cls(None)
        host = client.connection_pool.connection_kwargs.get("host")
        pid = (await client.info("server")).get("process_id")
        proc = Path(f"/proc/{pid}")
        try:
            local = host in LOOPBACK and (proc / "comm").read_text().startswith("redis")
        except OSError:
            local = False
        return cls(proc / "stat" if local else None)

    def seconds(self) -> float | None:
        if self._stat is None:
            return None
        # Fields 14 and 15 (utime, stime), counted after the command name.
        fields = self._stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    inserts: int
    calls: int  # round trips to the store: script calls or pipelines
    seconds: float
    own_cpu: float
    server_cpu: float | None

    @property
    def rate(self) -> float:
        return self.inserts / self.seconds

    def row(self, name: str) -> str:
        server = "n/a" if self.server_cpu is None else f"{self.server_cpu:.2f}"
        return (
            f"{name:<34}{self.inserts:>9}{self.seconds:>9.2f}{self.rate:>12,.0f}"
            f"{self.calls:>8}{self.own_cpu:>10.2f}{server:>10}"
        )

    def per_insert(self) -> str:
        own = self.own_cpu / self.inserts * 1e6
        if self.server_cpu is None:
            return f"this process {own:.1f} us"
        server = self.server_cpu / self.inserts * 1e6
        return f"this process {own:.1f} us + Redis {server:.1f} us"


async def timed(
    work: Callable[[], Awaitable[tuple[int, int]]], server: ServerCpu
) -> Phase:
    server_before = server.seconds()
    own_before = time.process_time()
    started = time.perf_counter()
    inserts, calls = await work()
    seconds = time.perf_counter() - started
    own = time.process_time() - own_before
    server_after = server.seconds()
    server_cpu = (
        None
        if server_before is None or server_after is None
        else server_after - server_before
    )
    return Phase(inserts, calls, seconds, own, server_cpu)


async def run(followers: int, active: float, posts: int, full: bool) -> int:
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
        return await measure(
            timelines, redis_client, prefix, followers, active, posts, full
        )
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
    full: bool,
) -> int:
    rng = random.Random(5)
    accounts = [new_id() for _ in range(followers)]
    warm = rng.sample(accounts, round(followers * active))
    slack = trim_slack(CAP)
    pool = sorted((new_id() for _ in range(CAP + slack)), reverse=True)
    # Full: built at the cap, then written to somewhere into the slack, as
    # trims leave them; the newest ``extra[account]`` ids of the pool came
    # after the build.
    extra = {account: rng.randint(0, slack) if full else 0 for account in warm}
    held = {
        account: pool[: CAP + extra[account]] if full else pool[:ALREADY_HELD]
        for account in warm
    }
    for account in warm:

        async def content(
            ids: list[str] = held[account][extra[account] :],
        ) -> TimelineContent:
            return TimelineContent(ids, complete=not full)

        await timelines.build(home_key(account), content, budget=60)
    for count in range(1, slack + 1):
        later = [home_key(a) for a in warm if extra[a] == count]
        await timelines.add(later, ids=pool[:count])
    # Baseline timelines: the same ids, in keys of their own.
    base_keys = {f"{KEY_PREFIX}base:{account}": account for account in warm}
    plain = {key: sorted(held[account]) for key, account in base_keys.items()}
    if redis_client is not None:
        for part in chunks(list(base_keys), BASELINE_PIPELINE):
            async with redis_client.pipeline(transaction=False) as pipe:
                for key in part:
                    pipe.zadd(prefix + key, dict.fromkeys(plain[key], 0))
                await pipe.execute()

    new_posts = [new_id() for _ in range(posts)]
    keys = [home_key(account) for account in accounts]

    batch = timelines.backend.add_batch or FANOUT_CHUNK

    async def fan_out() -> tuple[int, int]:
        written = calls = 0
        for post in new_posts:
            for part in chunks(keys, FANOUT_CHUNK):
                written += len(await timelines.add(part, ids=[post]))
                calls += math.ceil(len(part) / batch)  # as Timelines.add splits
        return written, calls

    async def baseline() -> tuple[int, int]:
        written = calls = 0
        for post in new_posts:
            for part in chunks(list(base_keys), BASELINE_PIPELINE):
                if redis_client is not None:
                    async with redis_client.pipeline(transaction=False) as pipe:
                        for key in part:
                            pipe.zadd(prefix + key, {post: 0})
                        await pipe.execute()
                else:
                    for key in part:
                        bisect.insort(plain[key], post)
                written += len(part)
                calls += 1
        return written, calls

    server = await ServerCpu.of(redis_client)
    load_before = os.getloadavg()[0]
    base = await timed(baseline, server)
    fanned = await timed(fan_out, server)
    load_after = os.getloadavg()[0]
    (sample,) = await timelines.read([home_key(warm[0])], None, CAP + slack + posts)
    correct = sample is not None and sample.ids[:posts] == new_posts[::-1]
    capped = sample is not None and len(sample.ids) <= CAP + slack

    store = "Redis" if redis_client is not None else "in-process store"
    shape = (
        f"{CAP} to {CAP + slack} ids each, incomplete"
        if full
        else f"{ALREADY_HELD} ids each, complete"
    )
    print(
        f"fan-out benchmark on the {store}: {followers} followers, "
        f"{len(warm)} with a timeline ({shape}), {posts} posts"
    )
    print(
        f"{'':<34}{'inserts':>9}{'seconds':>9}{'inserts/s':>12}{'calls':>8}"
        f"{'CPU here':>10}{'Redis CPU':>10}"
    )
    print(fanned.row("fan-out (Timelines.add)"))
    print(base.row("baseline (plain writes)"))
    print(f"fan-out / baseline: {fanned.rate / base.rate:.2f}")
    print(f"followers examined per second: {followers * posts / fanned.seconds:,.0f}")
    print(
        f"CPU per insert: fan-out {fanned.per_insert()}; baseline {base.per_insert()}"
    )
    print(
        f"load average: {load_before:.1f} before, {load_after:.1f} after, "
        f"on {os.cpu_count()} cores"
    )
    print(f"newest ids of a timeline as posted: {correct}")
    print(f"cap held ({CAP} + {slack} slack): {capped}")
    print(
        "reproduce: .venv/bin/python benchmarks/fanout_writes.py "
        f"--followers {followers} --active {active} --posts {posts}"
        + (" --full" if full else "")
    )
    return 0 if correct and capped and fanned.inserts == base.inserts else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--followers", type=int, default=20_000)
    parser.add_argument("--active", type=float, default=0.3)
    parser.add_argument("--posts", type=int, default=20)
    parser.add_argument(
        "--full",
        action="store_true",
        help="timelines past the cap and incomplete, as active readers' are",
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.followers, args.active, args.posts, args.full)))
