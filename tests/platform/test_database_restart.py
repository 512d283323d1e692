"""Restarting PostgreSQL under load costs a few 503s, never a 500 or a write.

Writers and readers keep hitting the app, and jobs run, while the database
is stopped with ``pg_ctl stop`` (in-flight transactions are terminated, every
pooled connection dies), kept down a moment and started again. Restarting
the shared server would break everyone else's tests, so the test initdbs a
private cluster of its own in a temp dir, on its own loopback port and socket
dir, and stops it (by pg_ctl, else by its postmaster's pid) and deletes it
afterwards, pass or fail.

It runs in the distributed mode. Without the PostgreSQL server binaries it is
skipped, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from petpal.platform.app import create_app
from petpal.platform.errors import RETRY_AFTER_SECONDS
from petpal.platform.jobs import DONE, JobContext, OutboxJob, enqueue, job
from petpal.platform.migrate import upgrade
from petpal.platform.services import Services
from petpal.platform.settings import Settings
from tests.conftest import (
    REDIS_PREFIX,
    TEST_REDIS_URL,
    delete_redis_keys,
    make_settings,
    requires_postgresql,
    run_async,
)
from tests.factories import User, assert_problem
from tests.social.builders import a_photo, many_users

pytestmark = requires_postgresql

# Debian and Ubuntu keep each major version's server binaries here; elsewhere
# they are on the PATH.
DEBIAN_BINARIES = Path("/usr/lib/postgresql")
CLIENTS = 30
RESTART_AFTER_SECONDS = 1.2
DOWN_SECONDS = 1.0
# The load goes on this long after the clients told to retry have retried.
LOAD_AFTER_RETRY_SECONDS = 1.0
# Each request is bounded: longer than the pool and connect timeouts together
# (5 s each by default), so that reaching it means the app hung.
REQUEST_BOUND_SECONDS = 12.0
# Requests sent this long after the database answers again must succeed:
# time for the pool to find its dead connections and replace them.
RECOVERY_SECONDS = 0.5
SUCCESS = {"post": 201, "comment": 201, "like": 200, "unlike": 200, "follow": 204}
SUCCESS |= {"unfollow": 204, "read post": 200, "home feed": 200, "profile": 200}
UNAVAILABLE_CODES = {"database_unavailable", "database_busy", "backend_unavailable"}
# Jobs through the real outbox and relay; those running when the database
# stops finish while it is away.
JOBS = 4
job_runs: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)


@dataclass
class JobGate:
    """Holds the jobs until the database has stopped."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def reset(self) -> None:
        self.started, self.release = asyncio.Event(), asyncio.Event()


gate = JobGate()


@job("test.across_a_restart")
async def across_a_restart(context: JobContext, payload: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    gate.started.set()
    await asyncio.wait_for(gate.release.wait(), 30)
    job_runs[context.job_id].append((started, loop.time()))


def _unavailable(reason: str) -> NoReturn:
    """Skip for want of a server binary, or fail under CI=true, which needs it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true needs it)")
    pytest.skip(reason)


def _server_binaries() -> Path | None:
    """The directory of initdb and pg_ctl, the newest version installed."""
    on_path = shutil.which("initdb")
    if on_path is not None and shutil.which("pg_ctl") is not None:
        return Path(on_path).parent

    def version(directory: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", directory.name))

    versions = sorted(
        DEBIAN_BINARIES.glob("*/bin/initdb"), key=lambda p: version(p.parent.parent)
    )
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster this test made, and only this test stops."""

    binaries: Path
    root: Path  # the cluster's directory, its socket and its log
    port: int
    run_as: list[str]  # runuser … when we are root: initdb refuses root

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, program: str, *args: str | Path, timeout: float = 60) -> None:
        # Output to a file, never a pipe: the postmaster inherits pg_ctl's
        # descriptors and would keep a pipe open after pg_ctl returns.
        output = self.root / "pg_ctl.out"
        with output.open("ab") as out:
            finished = subprocess.run(
                [*self.run_as, str(self.binaries / program), *map(str, args)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                check=False,
                timeout=timeout,
            )
        if finished.returncode != 0:
            said = [output, self.root / "server.log"]
            tail = "\n".join(
                p.read_text(errors="replace")[-2000:] for p in said if p.exists()
            )
            raise RuntimeError(f"{program} {args[0]} failed:\n{tail}")

    def init(self) -> None:
        self.run(
            "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )

    def start(self) -> None:
        # fsync off: a restart of the server process loses nothing the OS
        # already holds, and this test is about the app, not the disk.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
            " -c fsync=off -c full_page_writes=off"
        )
        self.run(
            "pg_ctl", "start", "-D", self.data, "-w", "-t", "30",
            "-l", self.root / "server.log", "-o", options,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "stop", "-D", self.data, "-m", mode, "-w", "-t", "30")

    def postmaster_pid(self) -> int | None:
        try:
            first_line = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        return int(first_line) if first_line.strip().isdigit() else None

    def destroy(self) -> None:
        """Stop the server however it can be stopped, then delete its files."""
        pid = self.postmaster_pid()
        if pid is not None:
            try:
                self.stop("immediate")
            except (subprocess.SubprocessError, OSError, RuntimeError):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # its children exit with it
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """One cluster for this module's tests, each on a database of its own."""
    binaries = _server_binaries()
    if binaries is None:
        _unavailable(
            "the PostgreSQL server binaries (initdb, pg_ctl) are not installed"
        )
    run_as: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = None
        if runuser is None or owner is None:
            _unavailable("running as root, without runuser and a postgres user")
        run_as = [str(runuser), "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="petpal-pg-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    cluster = PrivatePostgres(binaries, root, _free_port(), run_as)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


async def _connect(
    cluster: PrivatePostgres, database: str = "postgres"
) -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1", port=cluster.port, user="postgres", database=database
    )


async def _create_database(cluster: PrivatePostgres, name: str) -> None:
    connection = await _connect(cluster)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


_databases = itertools.count()


@pytest.fixture
def restart_settings(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> Iterator[Settings]:
    """The app on the private cluster; on the shared Redis when there is one."""
    database = f"petpal_{next(_databases)}"
    run_async(_create_database(private_postgres, database))
    overrides: dict[str, object] = {"database_url": private_postgres.url(database)}
    prefix = f"{REDIS_PREFIX}restart-{os.urandom(4).hex()}:"
    if TEST_REDIS_URL:
        overrides.update(redis_url=TEST_REDIS_URL, cache_key_prefix=prefix)
    settings = make_settings(tmp_path, **overrides)
    upgrade(settings)
    try:
        yield settings
    finally:
        if TEST_REDIS_URL:
            delete_redis_keys(TEST_REDIS_URL, prefix)


@pytest.fixture
async def restart_app(restart_settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(restart_settings)
    async with application.router.lifespan_context(application):
        yield application


@dataclass
class Attempt:
    client: int
    action: str
    target: tuple[str, str] | None  # (account, post or account) it turns on or off
    started: float
    ended: float
    status: int | None  # None: no answer at all
    problem: str = ""  # what is wrong with the answer, if anything
    retry_after: float = 0.0
    created: str | None = None  # the id of the post or comment it made

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS[self.action]


@dataclass
class Load:
    """What the clients did, for the checks after the restart."""

    users: list[User]
    photos: dict[str, str]  # a ready photo of each user, to post
    posts: list[str]  # acknowledged, in the order they were made
    attempts: list[Attempt] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    jobs: list[str] = field(default_factory=list)


async def _prepare(client: httpx.AsyncClient, services: Services) -> Load:
    users = await many_users(services, CLIENTS)
    photos = {user.id: await a_photo(client, user, services, Path()) for user in users}
    load = Load(users, photos, [])
    for user in users[:5]:
        response = await client.post(
            "/api/v1/posts",
            headers=user.headers,
            json={"caption": "before", "media_ids": [photos[user.id]]},
        )
        assert response.status_code == 201, response.text
        load.posts.append(response.json()["id"])
    return load


def _a_request(
    client: httpx.AsyncClient, load: Load, user: User, rng: random.Random
) -> tuple[str, tuple[str, str] | None, Awaitable[httpx.Response]]:
    """A random request of ``user``: its action, what it turns on or off, itself."""
    other = rng.choice([u for u in load.users if u is not user])
    post = rng.choice(load.posts)
    action = rng.choice(list(SUCCESS))
    headers = user.headers
    match action:
        case "post":
            body = {"caption": "restart 🐾", "media_ids": [load.photos[user.id]]}
            return (
                action,
                None,
                client.post("/api/v1/posts", headers=headers, json=body),
            )
        case "comment":
            url = f"/api/v1/posts/{post}/comments"
            return action, None, client.post(url, headers=headers, json={"body": "🐾"})
        case "like" | "unlike":
            send = client.post if action == "like" else client.delete
            url = f"/api/v1/posts/{post}/like"
            return action, (user.id, post), send(url, headers=headers)
        case "follow" | "unfollow":
            send = client.post if action == "follow" else client.delete
            url = f"/api/v1/accounts/{other.username}/follow"
            return action, (user.id, other.id), send(url, headers=headers)
        case "read post":
            return action, None, client.get(f"/api/v1/posts/{post}", headers=headers)
        case "home feed":
            return action, None, client.get("/api/v1/feed/home", headers=headers)
        case _:
            return action, None, client.get(f"/api/v1/accounts/{other.username}")


async def _attempt(
    client: httpx.AsyncClient, load: Load, index: int, rng: random.Random
) -> Attempt:
    """One request of client ``index``, bounded in time, recorded in ``load``."""
    action, target, request = _a_request(client, load, load.users[index], rng)
    loop = asyncio.get_running_loop()
    attempt = Attempt(index, action, target, loop.time(), 0.0, None)
    load.attempts.append(attempt)
    try:
        response = await asyncio.wait_for(request, REQUEST_BOUND_SECONDS)
    except TimeoutError:
        attempt.problem = f"no answer within {REQUEST_BOUND_SECONDS} s"
        return attempt
    except Exception as exc:  # recorded: the checks report it as a failure
        attempt.problem = repr(exc)
        return attempt
    finally:
        attempt.ended = loop.time()
    attempt.status = response.status_code
    if attempt.succeeded and action in ("post", "comment"):
        attempt.created = response.json()["id"]
        if action == "post":
            load.posts.append(response.json()["id"])
    elif not attempt.succeeded:
        attempt.problem = _unless_a_proper_503(response)
        attempt.retry_after = float(response.headers.get("retry-after", 0))
    return attempt


def _unless_a_proper_503(response: httpx.Response) -> str:
    """'' for a 503 problem with Retry-After, else what is wrong with it."""
    try:
        body = assert_problem(response, 503)
        assert body["code"] in UNAVAILABLE_CODES, body
        assert int(response.headers["retry-after"]) > 0
    except (AssertionError, KeyError, ValueError) as failed:
        return f"{response.status_code} {response.text[:300]} ({failed!r})"
    return ""


async def _client(client: httpx.AsyncClient, load: Load, index: int) -> None:
    rng = random.Random(index)
    while not load.done.is_set():
        attempt = await _attempt(client, load, index, rng)
        # A client told to retry later waits as long as Retry-After says.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(load.done.wait(), attempt.retry_after or 0.001)


async def _restart(
    cluster: PrivatePostgres, mode: str, services: Services, load: Load
) -> tuple[float, float]:
    """Stop the database in the middle of the load and start it again.

    Jobs are queued just before; those running when it stops finish while it
    is away. Returns when it went down and when it answered again; the load
    goes on until every client told to retry later has done so.
    """
    loop = asyncio.get_running_loop()
    try:
        await asyncio.sleep(RESTART_AFTER_SECONDS)
        async with services.db.write_session() as session:
            load.jobs = [
                enqueue(session, "test.across_a_restart", {}) for _ in range(JOBS)
            ]
        await asyncio.wait_for(gate.started.wait(), 15)
        went_down = loop.time()
        await asyncio.to_thread(cluster.stop, mode)
        gate.release.set()
        await asyncio.sleep(DOWN_SECONDS)
        await asyncio.to_thread(cluster.start)
        came_back = loop.time()
        await asyncio.sleep(RETRY_AFTER_SECONDS + LOAD_AFTER_RETRY_SECONDS)
    finally:
        load.done.set()
    return went_down, came_back


# fast: what an operator's restart does (sessions are told and closed);
# immediate: a crash, recovered from the WAL when the server starts again.
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_restart_under_load_costs_a_few_503s_and_no_write(
    restart_app: FastAPI, private_postgres: PrivatePostgres, mode: str
) -> None:
    gate.reset()  # its events belong to the event loop of the test that used them
    services: Services = restart_app.state.services
    transport = httpx.ASGITransport(app=restart_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        load = await _prepare(client, services)
        restart = asyncio.create_task(_restart(private_postgres, mode, services, load))
        await asyncio.gather(*(_client(client, load, i) for i in range(CLIENTS)))
        went_down, came_back = await restart

        # Every answer is the normal one or a 503 problem with Retry-After; no
        # 500, no exception, nothing left unanswered.
        wrong = [a for a in load.attempts if a.problem]
        assert not wrong, [(a.action, a.status, a.problem) for a in wrong[:5]]

        # Failures only while the database was away: requests in flight when
        # it stopped, or sent before it answered again (the pool then finds
        # its dead connections by pre-ping, unseen).
        failed = [a for a in load.attempts if not a.succeeded]
        assert failed, "the restart hit no request: the test tested nothing"
        outside = [
            a
            for a in failed
            if a.ended < went_down or a.started > came_back + RECOVERY_SECONDS
        ]
        assert not outside, outside[:5]
        # And few: a client that honours Retry-After loses one request per
        # Retry-After interval the database is away.
        allowed = 1 + int((came_back - went_down) // RETRY_AFTER_SECONDS)
        per_client = Counter(a.client for a in failed)
        assert max(per_client.values()) <= allowed, per_client

        # The app recovered by itself: every client's requests succeed again.
        recovered = [
            a for a in load.attempts if a.started > came_back + RECOVERY_SECONDS
        ]
        assert {a.client for a in recovered} == set(range(CLIENTS))
        assert all(a.succeeded for a in recovered)
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text

        database = services.db.engine.url.database
        assert database is not None
        await _check_acknowledged_writes_are_there(
            client, load, private_postgres, database
        )
        await _check_jobs_ran_once(services, load.jobs, went_down)

    latency = max(a.ended - a.started for a in load.attempts)
    print(
        f"\n{len(load.attempts)} requests by {CLIENTS} clients, {len(failed)} "
        f"answered 503; the database was away {came_back - went_down:.2f} s; "
        f"slowest answer {latency:.2f} s"
    )


async def _check_jobs_ran_once(
    services: Services, job_ids: list[str], went_down: float
) -> None:
    """Each job ran once and is recorded done, even one that was running
    when the database stopped and finished while it was away."""
    running_then = [
        job_id
        for job_id in job_ids
        if any(start < went_down < end for start, end in job_runs[job_id])
    ]
    assert running_then, "no job was running when the database stopped"
    assert services.relay is not None
    await services.relay.drain(within_seconds=15)
    async with services.db.read_session() as session:
        rows = await session.scalars(select(OutboxJob).where(OutboxJob.id.in_(job_ids)))
        statuses = {row.id: row.status for row in rows}
    assert statuses == dict.fromkeys(job_ids, DONE)
    assert {job_id: len(job_runs[job_id]) for job_id in job_ids} == dict.fromkeys(
        job_ids, 1
    )


def _last_acknowledged_states(
    attempts: list[Attempt], on: str, off: str
) -> dict[tuple[str, str], bool]:
    """Per (account, object): on or off, as its last attempt left it.

    Pairs whose last attempt failed are in doubt and left out: a 503 can come
    after the commit reached the server. Each client sends one request at a
    time, so a pair's attempts never overlap.
    """
    last: dict[tuple[str, str], Attempt] = {}
    for attempt in sorted(attempts, key=lambda a: a.started):
        if attempt.action in (on, off) and attempt.target is not None:
            last[attempt.target] = attempt
    return {
        target: attempt.action == on
        for target, attempt in last.items()
        if attempt.succeeded
    }


async def _check_acknowledged_writes_are_there(
    client: httpx.AsyncClient, load: Load, cluster: PrivatePostgres, database: str
) -> None:
    connection = await _connect(cluster, database)
    try:
        rows = await _read_rows(connection)
    finally:
        await connection.close()
    acknowledged = [a for a in load.attempts if a.succeeded]
    posts = {a.created for a in acknowledged if a.action == "post"}
    assert posts <= rows.posts, posts - rows.posts
    comments = {a.created for a in acknowledged if a.action == "comment"}
    assert comments <= rows.comments, comments - rows.comments
    likes = _last_acknowledged_states(load.attempts, "like", "unlike")
    assert likes, "no like or unlike was acknowledged"
    for pair, liked in likes.items():
        assert (pair in rows.likes) == liked, pair
    follows = _last_acknowledged_states(load.attempts, "follow", "unfollow")
    for pair, follows_now in follows.items():
        assert (pair in rows.follows) == follows_now, pair

    # Every counter equals its rows in the database, and the API (through its
    # cache) serves the same now that the database is back.
    assert not rows.wrong_counters, rows.wrong_counters
    served_posts = await asyncio.gather(
        *(client.get(f"/api/v1/posts/{post_id}") for post_id in load.posts)
    )
    likes_of = Counter(post for _, post in rows.likes)
    for response in served_posts:
        assert response.status_code == 200, response.text
        served = response.json()
        assert served["like_count"] == likes_of[served["id"]], served
    served_profiles = await asyncio.gather(
        *(client.get(f"/api/v1/accounts/{user.username}") for user in load.users)
    )
    followers = Counter(followee for _, followee in rows.follows)
    following = Counter(follower for follower, _ in rows.follows)
    for user, response in zip(load.users, served_profiles, strict=True):
        profile = response.json()
        assert profile["follower_count"] == followers[user.id], profile
        assert profile["following_count"] == following[user.id], profile


@dataclass
class Rows:
    posts: set[str]
    comments: set[str]
    likes: set[tuple[str, str]]  # (account, post)
    follows: set[tuple[str, str]]  # (follower, followee)
    wrong_counters: list[tuple[Any, ...]]


# Each denormalized counter next to the count of the rows it counts.
_COUNTERS = """
SELECT 'likes of', id, like_count,
       (SELECT count(*) FROM likes WHERE post_id = posts.id) FROM posts
UNION ALL
SELECT 'comments on', id, comment_count,
       (SELECT count(*) FROM comments WHERE post_id = posts.id) FROM posts
UNION ALL
SELECT 'followers of', account_id, follower_count,
       (SELECT count(*) FROM follows WHERE followee_id = account_id)
FROM account_stats
UNION ALL
SELECT 'followed by', account_id, following_count,
       (SELECT count(*) FROM follows WHERE follower_id = account_id)
FROM account_stats
UNION ALL
SELECT 'posts of', account_id, post_count,
       (SELECT count(*) FROM posts WHERE author_id = account_id) FROM account_stats
"""


async def _read_rows(connection: asyncpg.Connection) -> Rows:
    async def pairs(query: str) -> set[tuple[str, str]]:
        return {(row[0], row[1]) for row in await connection.fetch(query)}

    async def ids(query: str) -> set[str]:
        return {row[0] for row in await connection.fetch(query)}

    counters = await connection.fetch(_COUNTERS)
    return Rows(
        posts=await ids("SELECT id FROM posts"),
        comments=await ids("SELECT id FROM comments"),
        likes=await pairs("SELECT account_id, post_id FROM likes"),
        follows=await pairs("SELECT follower_id, followee_id FROM follows"),
        wrong_counters=[tuple(row) for row in counters if row[2] != row[3]],
    )
