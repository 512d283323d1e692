"""How fresh a running stack is: photos accepted and processed, posts in feeds.

Measures issue 4's freshness targets against a stack that is already running
(``petpal serve``, ``petpal relay`` and ``petpal worker`` on PostgreSQL,
Redis and RabbitMQ, with ``PETPAL_RATE_LIMITS_ENABLED=false``) on a data set
of ``petpal seed --users N``, whose accounts ``user_0`` … share one password:

* **Uploads** (``measure_uploads``): an open loop of uploads of a 12 MP
  iPhone-shaped JPEG by a few accounts at a fixed rate. Every send time is
  computed before the first, and each accept latency runs from the send time
  scheduled, so a client that falls behind counts against the server rather
  than hiding it. Beside it, the server's own time for ``POST
  /api/v1/media`` from its ``petpal_http_request_duration_seconds``
  histogram (``/metrics`` before and after; percentiles as bucket bounds),
  and the time from the 202 until ``GET /api/v1/media/{id}``, polled, says
  the photo is ready. Targets: accepted within 50 ms (p99, server time),
  thumbnails ready within 1 s (p99). Against a server started with
  ``PETPAL_MEDIA_PROCESS_INLINE=true`` (the photo processed inside the
  request, the naive baseline) the same run shows what the queue saves.
* **Fan-out** (``measure_fanout``): an author with many followers, under
  ``fanout_max_followers``, whose followers' home timelines all exist (each
  follower reads the home feed once, through the API, which is what makes a
  timeline exist), posts a few times. For each post and follower it measures
  the time from the post's 201 until the post id is in that follower's
  timeline, seen by polling the timelines' sorted sets in Redis directly.
  Target: within 1 s (p99).

    .venv/bin/python benchmarks/freshness.py --url http://127.0.0.1:8000 \\
        [--redis-url redis://… --key-prefix petpal:] [--only uploads|fanout] …

From Python (the benchmark report), ``await measure_uploads(url, …)``
returns an ``UploadResult`` and ``await measure_fanout(url, redis_url=…,
key_prefix=…)`` a ``FanoutResult``: numbers in plain fields, ``describe()``
(what was measured and how, a paragraph) and ``markdown()`` (a table with
the targets).

The Redis URL, key prefix and secret key default to ``PETPAL_REDIS_URL``,
``PETPAL_CACHE_KEY_PREFIX`` and ``PETPAL_SECRET_KEY``, so the stack's own
environment is enough. With the secret key, followers' access tokens are
signed here with the server's own code instead of logging each follower in
(a log-in costs the server an Argon2 hash); their feeds are read through the
API either way.

Exit status: 0 measured; 1 measured, but an upload failed or a follower never
saw a post; 2 not measured. The targets are reported, not gated.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shlex
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from petpal.platform.security import AccessClaims, issue_access_token
from petpal.platform.timelines import KEY_PREFIX
from petpal.seed.scale import DEFAULT_PASSWORD
from petpal.social.home import home_key

try:  # imported as benchmarks.freshness (the report runs from the root)
    from benchmarks.image_processing import iphone_shaped_jpeg
except ModuleNotFoundError:  # run as a script: benchmarks/ is on the path
    from image_processing import iphone_shaped_jpeg

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
API = "/api/v1"
# A small real photo for the fan-out author's posts: posts need a photo, and
# this part measures the feed, not image work.
POST_PHOTO = (
    ROOT / "src" / "petpal" / "seed" / "photos" / "unsplash_cat_under_blanket.jpg"
)

# Issue 4's targets.
ACCEPT_TARGET_MS = 50.0  # p99 of the server's time for POST /api/v1/media
READY_TARGET_MS = 1000.0  # p99 from the 202 to the photo ready
VISIBLE_TARGET_MS = 1000.0  # p99 from a post's 201 to a follower's timeline

UPLOAD_ROUTE = {"method": "POST", "route": f"{API}/media"}
REQUEST_SECONDS = "petpal_http_request_duration_seconds"
JOB_SECONDS = "petpal_job_duration_seconds"
MEDIA_JOB = "media.process"
FANOUT_JOB = "social.fanout"

# Uploaders and fan-out candidates in a `petpal seed --users N` data set:
# user_0 is the most followed account, popularity falls with the number.
DEFAULT_UPLOADERS = ("user_1", "user_2", "user_3", "user_4")
DEFAULT_CANDIDATES = tuple(f"user_{i}" for i in range(50))
# The fan-out threshold's default is 10,000 followers; the author stays
# clearly under it so that every post is fanned out.
DEFAULT_MAX_FOLLOWERS = 9000

# The first send waits this long, so that setting up the tasks is not
# mistaken for the server's time.
START_DELAY_SECONDS = 0.5
# Log-ins, feed reads and follows while preparing the fan-out, at a time.
PREPARE_CONCURRENCY = 4
# Of the access tokens signed here: the server's default lifetime.
TOKEN_TTL_SECONDS = 15 * 60
# After the followers' reads, how long their timelines may take to appear
# (a read over the rebuild budget stores the timeline when the build ends).
TIMELINES_APPEAR_SECONDS = 60.0


class FreshnessError(Exception):
    """The measurement could not be made (the stack refused or is missing)."""


# --- pure helpers ------------------------------------------------------------


def schedule(rate: float, duration: float) -> list[float]:
    """Send times in seconds from the start: ``rate`` a second for ``duration``."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    count = math.floor(rate * duration + 1e-9)
    return [i / rate for i in range(count)]


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile: the least value with ``share`` of all at or
    below it. NaN without values; an infinite value (never seen) counts as
    the largest."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered) - 1e-9))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Latency:
    """Latencies in milliseconds: how many, median, 99th percentile, most."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        ms = [s * 1000 for s in seconds]
        return cls(
            len(ms),
            percentile(ms, 0.5),
            percentile(ms, 0.99),
            max(ms, default=math.nan),
        )


@dataclass(frozen=True)
class Buckets:
    """One Prometheus histogram, summed over the series that match: cumulative
    counts by upper bound in seconds (the last bound is infinity)."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    total_seconds: float

    def minus(self, earlier: Buckets) -> Buckets:
        """What was observed since ``earlier`` (the same histogram, scraped before)."""
        before = dict(earlier.buckets)
        return Buckets(
            tuple((bound, n - before.get(bound, 0.0)) for bound, n in self.buckets),
            self.count - earlier.count,
            self.total_seconds - earlier.total_seconds,
        )

    def quantile(self, share: float) -> float:
        """The upper bound of the bucket that holds the ``share`` quantile:
        the quantile is at most this. NaN when nothing was observed."""
        if self.count <= 0:
            return math.nan
        for bound, cumulative in self.buckets:
            if cumulative >= share * self.count - 1e-9:
                return bound
        return math.inf

    def share_within(self, seconds: float) -> float:
        """The share of observations of at most ``seconds``, which must be a
        bucket bound."""
        for bound, cumulative in self.buckets:
            if math.isclose(bound, seconds):
                return cumulative / self.count if self.count > 0 else math.nan
        raise ValueError(f"{seconds} s is not a bucket bound of this histogram")


def read_histogram(text: str, name: str, labels: Mapping[str, str]) -> Buckets:
    """The histogram ``name`` in Prometheus's text format, summed over every
    series whose labels include ``labels`` (e.g. all statuses of one route)."""
    buckets: dict[float, float] = {}
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            if sample.name == f"{name}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name == f"{name}_count":
                count += sample.value
            elif sample.name == f"{name}_sum":
                total += sample.value
    return Buckets(tuple(sorted(buckets.items())), count, total)


def _ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "never"
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _share(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1%}"


def _bucket_ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "—"
    return "over the top bucket" if math.isinf(seconds) else f"≤ {seconds * 1000:g} ms"


def _row(what: str, latency: Latency, target_ms: float | None) -> str:
    target, met = "", ""
    if target_ms is not None:
        target = f"p99 ≤ {target_ms:g} ms"
        met = "yes" if latency.p99_ms <= target_ms else "no"
    return (
        f"| {what} | {latency.count:,} | {_ms(latency.p50_ms)} | "
        f"{_ms(latency.p99_ms)} | {_ms(latency.max_ms)} | {target} | {met} |"
    )


TABLE_HEAD = (
    "| measured | count | p50 | p99 | max | target | met |\n"
    "| --- | ---: | ---: | ---: | ---: | --- | --- |"
)


# --- results -----------------------------------------------------------------


@dataclass(frozen=True)
class ServerTime:
    """The server's own time for the uploads, from its latency histogram."""

    count: int
    mean_ms: float
    p50_at_most_ms: float  # bucket bounds: the percentile is at most this
    p99_at_most_ms: float
    share_within_target: float  # of requests answered within ACCEPT_TARGET_MS

    @classmethod
    def of(cls, histogram: Buckets) -> ServerTime:
        count = histogram.count
        try:
            within = histogram.share_within(ACCEPT_TARGET_MS / 1000)
        except ValueError:
            within = math.nan  # the server's buckets changed: say nothing
        return cls(
            count=round(count),
            mean_ms=histogram.total_seconds / count * 1000 if count else math.nan,
            p50_at_most_ms=histogram.quantile(0.5) * 1000,
            p99_at_most_ms=histogram.quantile(0.99) * 1000,
            share_within_target=within,
        )

    @property
    def target_met(self) -> bool:
        return self.p99_at_most_ms <= ACCEPT_TARGET_MS


@dataclass(frozen=True)
class UploadResult:
    """Open-loop photo uploads: accepted, then ready."""

    rate_per_second: float
    duration_seconds: float
    uploads: int
    accounts: int
    photo: str  # what was uploaded, e.g. "4032x3024 JPEG, 2.5 MB"
    accepted: Latency  # client: from the scheduled send time to the answer
    send_lag: Latency  # client: from the scheduled send time to the send
    server: ServerTime  # the server's histogram for POST /api/v1/media
    ready: Latency  # from the answer until GET /media/{id} said ready
    ready_from_send: Latency  # from the scheduled send time until then
    answered_ready: int  # answers that were ready already (processed inline)
    polls: int  # GET /api/v1/media/{id} requests made
    poll_interval_seconds: float
    warmup: int  # uploads before the measured ones, one at a time
    job_mean_ms: float | None  # the media job's own time (worker metrics)
    load_average: float  # of the machine, over the last minute of the run
    failures: int
    failure_examples: list[str] = field(default_factory=list)

    @property
    def inline(self) -> bool:
        """Whether the server processed the photos inside the request."""
        return self.uploads > 0 and self.answered_ready == self.uploads - self.failures

    def describe(self) -> str:
        text = (
            f"{self.uploads} uploads of a {self.photo} photo by {self.accounts} "
            f"accounts, open loop at {self.rate_per_second:g} a second for "
            f"{self.duration_seconds:g} s (after {self.warmup} unmeasured ones). "
            "Accept latency on the client runs from the scheduled send time to "
            "the answer, so client lag counts (its p99: "
            f"{_ms(self.send_lag.p99_ms)}); the server's time is "
            f"{REQUEST_SECONDS} for POST {API}/media, whose percentiles are "
            f"bucket bounds ({_share(self.server.share_within_target)} within "
            f"{ACCEPT_TARGET_MS:g} ms, mean {_ms(self.server.mean_ms)}). "
        )
        if self.inline:
            text += (
                "The server processed each photo inside the upload request "
                "(PETPAL_MEDIA_PROCESS_INLINE, the naive baseline): every answer "
                "said ready."
            )
        else:
            text += (
                "The media job processed them after the answer; ready runs from "
                f"the answer until GET {API}/media/{{id}}, polled every "
                f"{self.poll_interval_seconds * 1000:g} ms "
                f"({self.polls:,} polls), said ready"
            )
            if self.job_mean_ms is not None and not math.isnan(self.job_mean_ms):
                text += (
                    f"; the job itself took {_ms(self.job_mean_ms)} on average "
                    "(the worker's histogram)"
                )
            text += "."
        text += (
            f" {self.failures} failed. Load average at the end: "
            f"{self.load_average:.1f} on {os.cpu_count()} cores."
        )
        if self.failure_examples:
            text += " For example: " + "; ".join(self.failure_examples[:3])
        return text

    def markdown(self) -> str:
        server = self.server
        met = "yes" if server.target_met else "no"
        server_row = (
            f"| accepted, server time | {server.count:,} | "
            f"{_bucket_ms(server.p50_at_most_ms / 1000)} | "
            f"{_bucket_ms(server.p99_at_most_ms / 1000)} | — | "
            f"p99 ≤ {ACCEPT_TARGET_MS:g} ms | {met} |"
        )
        return "\n".join(
            [
                TABLE_HEAD,
                _row("accepted, client (from the scheduled time)", self.accepted, None),
                server_row,
                _row("thumbnails ready, after the answer", self.ready, READY_TARGET_MS),
                _row(
                    "thumbnails ready, from the scheduled time",
                    self.ready_from_send,
                    None,
                ),
            ]
        )


@dataclass(frozen=True)
class FanoutResult:
    """Posts delivered into the home timelines of their author's followers."""

    author: str
    followers: int  # the author's, when the posts were made
    recruited: int  # of them made to follow by this run (--min-followers)
    active: int  # followers whose timeline existed when the posts were made
    posts: int
    interval_seconds: float
    pairs: int  # (post, active follower)
    visible: Latency  # from the 201 until the id was in the timeline
    last_follower: Latency  # per post: from the 201 until every timeline had it
    unseen: int  # pairs not seen within the time allowed (infinite above)
    inserts_per_second: float  # pairs seen / the time from each 201 to its last
    poll_round: Latency  # one pipelined ZSCORE round over the timelines
    job_mean_ms: float | None  # the fan-out job's own time (worker metrics)
    load_average: float  # of the machine, over the last minute of the run
    failures: int
    failure_examples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        recruited = (
            f" ({self.recruited} of them made to follow by this run)"
            if self.recruited
            else ""
        )
        job = ""
        if self.job_mean_ms is not None and not math.isnan(self.job_mean_ms):
            job = (
                f"; the fan-out job itself took {_ms(self.job_mean_ms)} on "
                "average (the worker's histogram)"
            )
        text = (
            f"{self.author}, followed by {self.followers:,} accounts{recruited}, "
            f"posted {self.posts} times {self.interval_seconds:g} s apart while "
            f"{self.active:,} followers had a home timeline (each had read its "
            "feed through the API). For each post and follower: the time from "
            "the 201 until the post id was in that follower's timeline, seen by "
            "pipelined ZSCOREs over the timelines in Redis (a round took "
            f"{_ms(self.poll_round.p50_ms)}, at most {_ms(self.poll_round.max_ms)}; "
            f"a pair counts when its round ended). {self.unseen} pairs never "
            f"seen; {self.inserts_per_second:,.0f} timeline inserts a second "
            f"from the 201 to the last follower{job}. {self.failures} failed. "
            f"Load average at the end: {self.load_average:.1f} on "
            f"{os.cpu_count()} cores."
        )
        if self.failure_examples:
            text += " For example: " + "; ".join(self.failure_examples[:3])
        return text

    def markdown(self) -> str:
        return "\n".join(
            [
                TABLE_HEAD,
                _row(
                    "post in a follower's timeline, after the 201",
                    self.visible,
                    VISIBLE_TARGET_MS,
                ),
                _row("post in every follower's timeline", self.last_follower, None),
            ]
        )


# --- the client side -----------------------------------------------------------


@asynccontextmanager
async def _client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        yield client


def _expect(response: httpx.Response, *statuses: int) -> Any:
    if response.status_code not in statuses:
        raise FreshnessError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:300]}"
        )
    return response.json() if response.content else None


async def log_in(client: httpx.AsyncClient, login: str, password: str) -> str:
    """An access token of ``login``, through the API."""
    body = {"login": login, "password": password}
    tokens = _expect(await client.post(f"{API}/auth/token", json=body), 200)
    return str(tokens["access_token"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _bounded(
    concurrency: int, items: Sequence[T], work: Callable[[T], Awaitable[Any]]
) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(item: T) -> Any:
        async with gate:
            return await work(item)

    return await asyncio.gather(*(one(item) for item in items))


async def _sleep_until(moment: float) -> None:
    delay = moment - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def _metrics(url: str, client: httpx.AsyncClient) -> str:
    response = await client.get(url)
    if response.status_code != 200:
        raise FreshnessError(f"GET {url}: {response.status_code}")
    return response.text


async def _job_mean_ms(
    client: httpx.AsyncClient, url: str, before: str, kind: str, jobs: int
) -> float:
    """The mean time of the jobs of ``kind`` the worker recorded since
    ``before``, once ``jobs`` of them are (or after a few seconds): a job
    records its time a moment after its work is visible."""
    earlier = read_histogram(before, JOB_SECONDS, {"kind": kind})
    deadline = time.perf_counter() + 5
    while True:
        done = read_histogram(await _metrics(url, client), JOB_SECONDS, {"kind": kind})
        if done.count >= earlier.count + jobs or time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.2)
    since = done.minus(earlier)
    return since.total_seconds / since.count * 1000 if since.count else math.nan


# --- uploads -------------------------------------------------------------------


@dataclass
class _Upload:
    lag: float = math.nan
    accepted: float | None = None
    ready: float | None = None
    answered_ready: bool = False
    polls: int = 0
    failure: str | None = None


async def measure_uploads(
    url: str,
    *,
    logins: Sequence[str] = DEFAULT_UPLOADERS,
    password: str = DEFAULT_PASSWORD,
    rate: float = 4.0,
    duration: float = 30.0,
    photo: Path | None = None,
    poll_interval: float = 0.02,
    ready_timeout: float = 30.0,
    worker_metrics_url: str | None = None,
    warmup: int = 4,
) -> UploadResult:
    """Upload ``photo`` (default: a 12 MP iPhone-shaped JPEG) ``rate`` times a
    second for ``duration`` seconds, round robin over ``logins``, and wait
    for each to be processed; after ``warmup`` uploads one at a time (at
    most one per login), which are not measured."""
    with tempfile.TemporaryDirectory(prefix="petpal-freshness-") as folder:
        path = photo or iphone_shaped_jpeg(Path(folder))
        data = path.read_bytes()
        with Image.open(path) as image:
            shown = f"{image.width}x{image.height} {image.format}"
    shown += f", {len(data) / 1e6:.1f} MB"
    offsets = schedule(rate, duration)
    async with _client(url) as client:
        tokens = [await log_in(client, name, password) for name in logins]
        for token in tokens[:warmup]:
            # Not measured: the first photo a fresh process handles loads
            # codecs and opens connections, which no later one pays for.
            warm = await _upload(
                client, _bearer(token), data, time.perf_counter(), 0.1, ready_timeout
            )
            if warm.failure is not None:
                raise FreshnessError(f"a warm-up upload failed: {warm.failure}")
        before = await _metrics("/metrics", client)
        worker_before = None
        if worker_metrics_url:
            worker_before = await _metrics(worker_metrics_url, client)
        start = time.perf_counter() + START_DELAY_SECONDS
        outcomes = await asyncio.gather(
            *(
                _upload(
                    client,
                    _bearer(tokens[i % len(tokens)]),
                    data,
                    start + offset,
                    poll_interval,
                    ready_timeout,
                )
                for i, offset in enumerate(offsets)
            )
        )
        after = await _metrics("/metrics", client)
        load_average = os.getloadavg()[0]
        job_mean_ms = None
        if worker_metrics_url and worker_before is not None:
            queued = sum(
                o.accepted is not None and not o.answered_ready for o in outcomes
            )
            job_mean_ms = await _job_mean_ms(
                client, worker_metrics_url, worker_before, MEDIA_JOB, queued
            )
    server = read_histogram(after, REQUEST_SECONDS, UPLOAD_ROUTE).minus(
        read_histogram(before, REQUEST_SECONDS, UPLOAD_ROUTE)
    )
    failures = [o.failure for o in outcomes if o.failure is not None]
    return UploadResult(
        rate_per_second=rate,
        duration_seconds=duration,
        uploads=len(outcomes),
        accounts=len(logins),
        photo=shown,
        accepted=Latency.of([o.accepted for o in outcomes if o.accepted is not None]),
        send_lag=Latency.of([o.lag for o in outcomes if not math.isnan(o.lag)]),
        server=ServerTime.of(server),
        ready=Latency.of([o.ready for o in outcomes if o.ready is not None]),
        ready_from_send=Latency.of(
            [
                o.accepted + o.ready
                for o in outcomes
                if o.accepted is not None and o.ready is not None
            ]
        ),
        answered_ready=sum(o.answered_ready for o in outcomes),
        polls=sum(o.polls for o in outcomes),
        poll_interval_seconds=poll_interval,
        warmup=min(warmup, len(tokens)),
        job_mean_ms=job_mean_ms,
        load_average=load_average,
        failures=len(failures),
        failure_examples=sorted(set(failures))[:5],
    )


async def _upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    data: bytes,
    due: float,
    poll_interval: float,
    ready_timeout: float,
) -> _Upload:
    outcome = _Upload()
    await _sleep_until(due)
    outcome.lag = time.perf_counter() - due
    files = {"file": ("photo.jpg", data, "image/jpeg")}
    try:
        answer = await client.post(f"{API}/media", headers=headers, files=files)
    except httpx.HTTPError as exc:
        outcome.failure = f"POST {API}/media: {exc!r}"
        return outcome
    answered = time.perf_counter()
    if answer.status_code != 202:
        outcome.failure = f"POST {API}/media: {answer.status_code}"
        return outcome
    outcome.accepted = answered - due
    media = answer.json()
    outcome.answered_ready = media["status"] == "ready"
    deadline = answered + ready_timeout
    while media["status"] == "processing":
        if time.perf_counter() > deadline:
            outcome.failure = f"not ready within {ready_timeout:g} s"
            return outcome
        polled = time.perf_counter()
        try:
            response = await client.get(f"{API}/media/{media['id']}", headers=headers)
        except httpx.HTTPError as exc:
            outcome.failure = f"GET {API}/media/{{id}}: {exc!r}"
            return outcome
        outcome.polls += 1
        if response.status_code != 200:
            outcome.failure = f"GET {API}/media/{{id}}: {response.status_code}"
            return outcome
        media = response.json()
        if media["status"] == "processing":
            await _sleep_until(polled + poll_interval)
    if media["status"] != "ready":
        outcome.failure = f"photo {media['status']}: {media.get('failure_reason')}"
        return outcome
    outcome.ready = time.perf_counter() - answered
    return outcome


# --- fan-out -------------------------------------------------------------------


@dataclass(frozen=True)
class _Account:
    id: str
    username: str


async def choose_author(
    client: httpx.AsyncClient, candidates: Sequence[str], max_followers: int
) -> str:
    """The most followed of ``candidates`` with at most ``max_followers``."""
    best: tuple[int, str] | None = None
    for name in candidates:
        response = await client.get(f"{API}/accounts/{name}")
        if response.status_code == 404:
            continue
        followers = int(_expect(response, 200)["follower_count"])
        if followers <= max_followers and (best is None or followers > best[0]):
            best = (followers, name)
    if best is None:
        raise FreshnessError(
            f"none of {candidates[0]} … {candidates[-1]} exists with at most "
            f"{max_followers} followers"
        )
    return best[1]


async def followers_of(client: httpx.AsyncClient, username: str) -> list[_Account]:
    """Every follower of ``username``, through the API's pages."""
    found: list[_Account] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = _expect(
            await client.get(f"{API}/accounts/{username}/followers", params=params),
            200,
        )
        found += [_Account(a["id"], a["username"]) for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            return found


class _Tokens:
    """Access tokens for many accounts: signed here with the server's secret,
    by the server's own code, or without it through the API's log-in."""

    def __init__(
        self, client: httpx.AsyncClient, password: str, secret_key: str | None
    ) -> None:
        self._client, self._password, self._secret = client, password, secret_key

    async def account(self, username: str) -> _Account:
        profile = _expect(await self._client.get(f"{API}/accounts/{username}"), 200)
        return _Account(profile["id"], profile["username"])

    async def headers(self, account: _Account) -> dict[str, str]:
        if self._secret:
            claims = AccessClaims(account.id, account.username)
            return _bearer(issue_access_token(self._secret, claims, TOKEN_TTL_SECONDS))
        return _bearer(await log_in(self._client, account.username, self._password))


async def measure_fanout(
    url: str,
    *,
    redis_url: str,
    key_prefix: str,
    author: str | None = None,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    max_followers: int = DEFAULT_MAX_FOLLOWERS,
    min_followers: int = 0,
    recruits: Sequence[str] = (),
    password: str = DEFAULT_PASSWORD,
    secret_key: str | None = None,
    posts: int = 10,
    interval: float = 3.0,
    poll_interval: float = 0.01,
    visible_timeout: float = 10.0,
    worker_metrics_url: str | None = None,
) -> FanoutResult:
    """Post ``posts`` times as ``author`` (default: the most followed of
    ``candidates`` under ``max_followers``) once every follower's timeline
    exists, and time each post's arrival in each timeline.

    With fewer than ``min_followers``, accounts of ``recruits`` that do not
    follow the author yet follow it first, through the API (this changes the
    data set). ``key_prefix`` is the server's ``PETPAL_CACHE_KEY_PREFIX``.
    """
    async with _client(url) as client:
        author = author or await choose_author(client, candidates, max_followers)
        tokens = _Tokens(client, password, secret_key)
        poster_headers = await tokens.headers(await tokens.account(author))
        followers = await followers_of(client, author)
        recruited = await _recruit(
            client, tokens, author, followers, min_followers, recruits
        )
        if recruited:
            followers = await followers_of(client, author)
        if len(followers) > max_followers:
            raise FreshnessError(
                f"{author} has {len(followers)} followers, over {max_followers}"
            )
        media_id = await _a_ready_photo(client, poster_headers)

        async def read_home(account: _Account) -> None:
            headers = await tokens.headers(account)
            _expect(await client.get(f"{API}/feed/home", headers=headers), 200)

        await _bounded(PREPARE_CONCURRENCY, followers, read_home)
        redis = Redis.from_url(redis_url)
        try:
            keys = [key_prefix + KEY_PREFIX + home_key(f.id) for f in followers]
            active = await _existing_timelines(redis, keys)
            before = None
            if worker_metrics_url:
                before = await _metrics(worker_metrics_url, client)
            start = time.perf_counter() + START_DELAY_SECONDS
            watched = await asyncio.gather(
                *(
                    _post_and_watch(
                        client,
                        redis,
                        poster_headers,
                        media_id,
                        active,
                        start + n * interval,
                        poll_interval,
                        visible_timeout,
                    )
                    for n in range(posts)
                )
            )
            load_average = os.getloadavg()[0]
            job_mean_ms = None
            if worker_metrics_url and before is not None:
                job_mean_ms = await _job_mean_ms(
                    client, worker_metrics_url, before, FANOUT_JOB, posts
                )
        finally:
            await redis.aclose()
    seen = [d for w in watched for d in w.delays]
    spans = sum(max(w.delays, default=0.0) for w in watched if w.unseen == 0)
    delivered = sum(len(w.delays) - w.unseen for w in watched if w.unseen == 0)
    failures = [w.failure for w in watched if w.failure is not None]
    return FanoutResult(
        author=author,
        followers=len(followers),
        recruited=recruited,
        active=len(active),
        posts=posts,
        interval_seconds=interval,
        pairs=len(seen),
        visible=Latency.of(seen),
        last_follower=Latency.of(
            [max(w.delays) for w in watched if w.failure is None and w.delays]
        ),
        unseen=sum(w.unseen for w in watched),
        inserts_per_second=delivered / spans if spans > 0 else math.nan,
        poll_round=Latency.of([r for w in watched for r in w.rounds]),
        job_mean_ms=job_mean_ms,
        load_average=load_average,
        failures=len(failures),
        failure_examples=sorted(set(failures))[:5],
    )


async def _recruit(
    client: httpx.AsyncClient,
    tokens: _Tokens,
    author: str,
    followers: list[_Account],
    wanted: int,
    recruits: Sequence[str],
) -> int:
    """Make accounts of ``recruits`` follow ``author`` up to ``wanted`` followers."""
    missing = wanted - len(followers)
    if missing <= 0:
        return 0
    already = {f.username for f in followers} | {author}
    chosen = [name for name in recruits if name not in already][:missing]
    if len(chosen) < missing:
        raise FreshnessError(
            f"{author} has {len(followers)} followers and only {len(chosen)} "
            f"accounts to recruit, short of {wanted}"
        )

    async def follow(name: str) -> None:
        headers = await tokens.headers(await tokens.account(name))
        follow = await client.post(f"{API}/accounts/{author}/follow", headers=headers)
        _expect(follow, 204)

    await _bounded(PREPARE_CONCURRENCY, chosen, follow)
    return len(chosen)


async def _a_ready_photo(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    """A small photo of the author's, processed: every post carries one."""
    files = {"file": (POST_PHOTO.name, POST_PHOTO.read_bytes(), "image/jpeg")}
    media = _expect(
        await client.post(f"{API}/media", headers=headers, files=files), 202
    )
    deadline = time.perf_counter() + 120
    while media["status"] == "processing" and time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
        answer = await client.get(f"{API}/media/{media['id']}", headers=headers)
        media = _expect(answer, 200)
    if media["status"] != "ready":
        raise FreshnessError(f"the author's photo is {media['status']}, not ready")
    return str(media["id"])


async def _existing_timelines(redis: Redis, keys: list[str]) -> list[str]:
    """Those of ``keys`` that exist, once all do or the wait is over."""
    deadline = time.perf_counter() + TIMELINES_APPEAR_SECONDS
    while True:
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            found = await pipe.execute()
        existing = [key for key, n in zip(keys, found, strict=True) if n]
        if len(existing) == len(keys) or time.perf_counter() > deadline:
            return existing
        await asyncio.sleep(0.5)


@dataclass
class _Watched:
    delays: list[float] = field(default_factory=list)  # seconds; inf: unseen
    unseen: int = 0
    rounds: list[float] = field(default_factory=list)
    failure: str | None = None


async def _post_and_watch(
    client: httpx.AsyncClient,
    redis: Redis,
    headers: dict[str, str],
    media_id: str,
    keys: list[str],
    due: float,
    poll_interval: float,
    give_up_after: float,
) -> _Watched:
    """Post at ``due``, then poll ``keys`` until each holds the post."""
    watched = _Watched()
    await _sleep_until(due)
    body = {"caption": "freshness probe #freshness", "media_ids": [media_id]}
    try:
        answer = await client.post(f"{API}/posts", headers=headers, json=body)
    except httpx.HTTPError as exc:
        watched.failure = f"POST {API}/posts: {exc!r}"
        return watched
    created = time.perf_counter()
    if answer.status_code != 201:
        watched.failure = f"POST {API}/posts: {answer.status_code}"
        return watched
    post_id = answer.json()["id"]
    waiting = keys
    while waiting and time.perf_counter() - created < give_up_after:
        began = time.perf_counter()
        async with redis.pipeline(transaction=False) as pipe:
            for key in waiting:
                pipe.zscore(key, post_id)
            scores = await pipe.execute()
        ended = time.perf_counter()
        watched.rounds.append(ended - began)
        # Seen at the end of the round: an upper bound, by at most a round.
        watched.delays += [ended - created for s in scores if s is not None]
        waiting = [k for k, s in zip(waiting, scores, strict=True) if s is None]
        await _sleep_until(began + poll_interval)
    watched.unseen = len(waiting)
    watched.delays += [math.inf] * len(waiting)
    return watched


# --- the command line ------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add = parser.add_argument
    add("--url", required=True, help="the API server, e.g. http://127.0.0.1:8000")
    add("--only", choices=("uploads", "fanout"), help="measure one part only")
    add(
        "--password",
        default=DEFAULT_PASSWORD,
        help="of the seeded accounts (default %(default)s)",
    )
    add(
        "--worker-metrics",
        help="the worker's /metrics URL, to report the jobs' own time too",
    )
    uploads = parser.add_argument_group("uploads")
    uploads.add_argument(
        "--rate", type=float, default=4.0, help="uploads a second (default %(default)g)"
    )
    uploads.add_argument(
        "--duration",
        type=float,
        default=30.0,
        help="seconds of uploads (default %(default)g)",
    )
    uploads.add_argument(
        "--uploaders",
        default=",".join(DEFAULT_UPLOADERS),
        help="comma-separated accounts that upload, round robin (default %(default)s)",
    )
    uploads.add_argument("--photo", type=Path, help="instead of the 12 MP JPEG")
    uploads.add_argument(
        "--media-poll-ms",
        type=float,
        default=20.0,
        help="GET /media/{id} of each upload this often until it is ready "
        "(default %(default)g)",
    )
    uploads.add_argument(
        "--warmup",
        type=int,
        default=4,
        help="unmeasured uploads first (default %(default)s)",
    )
    fanout = parser.add_argument_group("fan-out")
    fanout.add_argument(
        "--redis-url",
        default=os.environ.get("PETPAL_REDIS_URL"),
        help="the stack's Redis (default: $PETPAL_REDIS_URL)",
    )
    fanout.add_argument(
        "--key-prefix",
        default=os.environ.get("PETPAL_CACHE_KEY_PREFIX", "petpal:"),
        help="the stack's PETPAL_CACHE_KEY_PREFIX (default: that variable, "
        "else petpal:)",
    )
    fanout.add_argument(
        "--secret-key-env",
        default="PETPAL_SECRET_KEY",
        help="the variable that holds the stack's secret key, to sign "
        "followers' tokens instead of logging each in (default "
        "%(default)s; unset: log in)",
    )
    fanout.add_argument("--author", help="default: the most followed user_0 … user_49")
    fanout.add_argument(
        "--max-followers",
        type=int,
        default=DEFAULT_MAX_FOLLOWERS,
        help="the author's most, under the fan-out threshold (default %(default)s)",
    )
    fanout.add_argument(
        "--min-followers",
        type=int,
        default=0,
        help="first make accounts user_<N-1>, user_<N-2> … follow the author "
        "until it has this many (needs --accounts; changes the data set)",
    )
    fanout.add_argument("--accounts", type=int, help="N of `petpal seed --users N`")
    fanout.add_argument(
        "--posts", type=int, default=10, help="posts made (default %(default)s)"
    )
    fanout.add_argument(
        "--interval",
        type=float,
        default=3.0,
        help="seconds between posts (default %(default)g)",
    )
    fanout.add_argument(
        "--redis-poll-ms",
        type=float,
        default=10.0,
        help="a round of ZSCOREs over the timelines starts this often "
        "(default %(default)g)",
    )
    options = parser.parse_args(argv)
    if options.only != "uploads" and not options.redis_url:
        parser.error("the fan-out part needs --redis-url (or $PETPAL_REDIS_URL)")
    if options.min_followers and not options.accounts:
        parser.error("--min-followers needs --accounts")
    return options


async def run(options: argparse.Namespace) -> int:
    status = 0
    if options.only != "fanout":
        uploads = await measure_uploads(
            options.url,
            logins=options.uploaders.split(","),
            password=options.password,
            rate=options.rate,
            duration=options.duration,
            photo=options.photo,
            poll_interval=options.media_poll_ms / 1000,
            worker_metrics_url=options.worker_metrics,
            warmup=options.warmup,
        )
        print(f"## Photo uploads\n\n{uploads.describe()}\n\n{uploads.markdown()}\n")
        status = max(status, 1 if uploads.failures else 0)
    if options.only != "uploads":
        recruits = [f"user_{i}" for i in range((options.accounts or 0) - 1, -1, -1)]
        fanout = await measure_fanout(
            options.url,
            redis_url=options.redis_url,
            key_prefix=options.key_prefix,
            author=options.author,
            max_followers=options.max_followers,
            min_followers=options.min_followers,
            recruits=recruits,
            password=options.password,
            secret_key=os.environ.get(options.secret_key_env) or None,
            posts=options.posts,
            interval=options.interval,
            poll_interval=options.redis_poll_ms / 1000,
            worker_metrics_url=options.worker_metrics,
        )
        print(f"## Fan-out\n\n{fanout.describe()}\n\n{fanout.markdown()}\n")
        status = max(status, 1 if fanout.unseen or fanout.failures else 0)
    return status


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    print("$", shlex.join([".venv/bin/python", *sys.argv]), flush=True)
    try:
        return asyncio.run(run(options))
    except (FreshnessError, httpx.HTTPError, OSError) as exc:
        print(f"not measured: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
