"""The data set a load test runs on, and the private databases that hold it.

Two data sets, chosen by one switch (``--dataset``, default in ``run.py``):

- ``demo``: ``petpal seed``'s four owners, nine pets and posts, plus
  ``PREPARED_ACCOUNTS`` accounts that this module signs up through the API.
  Each follows the demo owners and a few of the accounts signed up before it
  and posts one photo, so home feeds hold more than one page.
- ``scale:N``: ``petpal seed --users N`` (issue 4's generator), whose
  accounts ``user_0`` … ``user_<N-1>`` share the demo password.

In distributed mode each run gets a PostgreSQL database and a Redis key
prefix of its own, removed afterwards; the names carry the process id so
concurrent runs on one server never meet.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis
from sqlalchemy.engine import make_url

from loadtest.mix import DEMO_ACCOUNTS, DEMO_PASSWORD

# Accounts the runner signs up on the demo data set. More simulated people
# than this share accounts, like one person on two phones.
PREPARED_ACCOUNTS = 20
PREPARED_NAME = "loadtest_{i}"
# Earlier prepared accounts each one follows, besides the demo owners.
PREPARED_FOLLOWS = 3
PREPARED_PHOTO = "src/petpal/seed/photos/unsplash_cat_under_blanket.jpg"
PROCESSING_TIMEOUT_SECONDS = 120
# For all of the preparation: a few seconds when all is well.
PREPARE_TIMEOUT_SECONDS = 300


class RunError(Exception):
    """The load test could not be made (not: it was made and failed the gate)."""


@dataclass(frozen=True)
class Dataset:
    spec: str
    seed_args: tuple[str, ...]
    # Read by the locustfile: a username template with {i}, or a list.
    accounts: str
    account_count: int
    password: str
    prepared_accounts: int


# What `petpal seed --users` takes (petpal.seed.MAX_USERS and the option's
# minimum; the load test drives the server from outside and imports none of
# it, and a test holds the two equal).
SEED_MIN_USERS, SEED_MAX_USERS = 2, 5_000_000


def parse_dataset(spec: str) -> Dataset:
    """``demo`` or ``scale:N`` as a Dataset; ValueError for anything else."""
    if spec == "demo":
        return Dataset(
            spec=spec,
            seed_args=("seed",),
            accounts=PREPARED_NAME,
            account_count=PREPARED_ACCOUNTS,
            password=DEMO_PASSWORD,
            prepared_accounts=PREPARED_ACCOUNTS,
        )
    kind, _, size = spec.partition(":")
    # ASCII digits only (found by a trial: "scale:²" passed isdigit() and
    # failed in int()).
    if kind == "scale" and size.isascii() and size.isdigit():
        if not SEED_MIN_USERS <= int(size) <= SEED_MAX_USERS:
            # Said before the run, not by the seed after a migration.
            raise ValueError(
                f"a scale data set has {SEED_MIN_USERS} to {SEED_MAX_USERS:,} "
                f"accounts, not {int(size):,}"
            )
        return Dataset(
            spec=spec,
            seed_args=("seed", "--users", size),
            accounts="user_{i}",
            account_count=int(size),
            password=DEMO_PASSWORD,
            prepared_accounts=0,
        )
    raise ValueError(
        f"a data set is 'demo' or 'scale:N' (e.g. scale:20000), not {spec!r}"
    )


def prepare_accounts(base_url: str, dataset: Dataset, root: Path) -> str:
    """Sign up the data set's own accounts, follow, and post; a summary."""
    if not dataset.prepared_accounts:
        return "no accounts to prepare"
    names = [PREPARED_NAME.format(i=i) for i in range(dataset.prepared_accounts)]
    photo = (root / PREPARED_PHOTO).read_bytes()
    rng = random.Random(4)
    deadline = time.monotonic() + PREPARE_TIMEOUT_SECONDS

    def within_deadline(_request: httpx.Request) -> None:
        if time.monotonic() > deadline:
            raise RunError(
                f"preparing the accounts took over {PREPARE_TIMEOUT_SECONDS} s"
            )

    with httpx.Client(
        base_url=f"{base_url}/api/v1",
        timeout=60,
        event_hooks={"request": [within_deadline]},
    ) as client:
        # The earlier accounts are followed more: the first by most.
        for index, name in enumerate(names):
            account = _Account(client, name, dataset.password)
            earlier = rng.sample(names[:index], min(index, PREPARED_FOLLOWS))
            for followee in [*DEMO_ACCOUNTS.split(","), *earlier]:
                account.follow(followee)
            account.post_photo(photo)
    return (
        f"signed up {len(names)} accounts ({names[0]} … {names[-1]}); each follows "
        f"the demo owners and up to {PREPARED_FOLLOWS} of the accounts before it, "
        "and posted a photo"
    )


class _Account:
    """One prepared account, signed up and logged in, with a fresh token."""

    def __init__(self, client: httpx.Client, name: str, password: str) -> None:
        self.client, self.name = client, name
        account = {
            "username": name,
            "email": f"{name}@example.org",
            "password": password,
            "display_name": name.replace("_", " ").title(),
        }
        # 409: a database kept from an earlier run already has it.
        _expect(client.post("/accounts", json=account), 201, 409)
        login = {"login": name, "password": password}
        self._take(_expect(client.post("/auth/token", json=login), 200))

    def _take(self, tokens: dict[str, Any]) -> None:
        self._access, self._refresh = tokens["access_token"], tokens["refresh_token"]
        # Half way through its life: a run may make tokens last seconds.
        self._refresh_at = time.monotonic() + tokens["expires_in"] / 2

    def auth(self) -> dict[str, str]:
        if time.monotonic() > self._refresh_at:
            body = {"refresh_token": self._refresh}
            self._take(_expect(self.client.post("/auth/refresh", json=body), 200))
        return {"Authorization": f"Bearer {self._access}"}

    def follow(self, username: str) -> None:
        follow = self.client.post(f"/accounts/{username}/follow", headers=self.auth())
        _expect(follow, 204)

    def post_photo(self, photo: bytes) -> None:
        files = {"file": ("cat.jpg", photo, "image/jpeg")}
        upload = self.client.post("/media", headers=self.auth(), files=files)
        media_id = _expect(upload, 202)["id"]
        self._wait_until_processed(media_id)
        caption = f"Hello from {self.name} #loadtest #cats"
        body = {"caption": caption, "media_ids": [media_id]}
        _expect(self.client.post("/posts", headers=self.auth(), json=body), 201)

    def _wait_until_processed(self, media_id: str) -> None:
        deadline = time.monotonic() + PROCESSING_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            answer = self.client.get(f"/media/{media_id}", headers=self.auth())
            media = _expect(answer, 200)
            if media["status"] == "ready":
                return
            if media["status"] == "failed":
                reason = media["failure_reason"]
                raise RunError(f"photo {media_id} failed: {reason}")
            time.sleep(0.2)
        raise RunError(
            f"photo {media_id} not processed in {PROCESSING_TIMEOUT_SECONDS} s"
        )


def _expect(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    if response.status_code not in statuses:
        raise RunError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:300]}"
        )
    return response.json() if response.content else {}


# --- distributed mode: a database and a key prefix of our own -------------------


def run_tag() -> str:
    return f"{os.getpid()}_{secrets.token_hex(3)}"


@contextmanager
def private_database(admin_url: str, tag: str) -> Iterator[str]:
    """A new database on the server ``admin_url`` names, dropped on exit.

    Yields its SQLAlchemy URL. ``admin_url`` must be allowed to create
    databases; nothing else on the server is touched.
    """
    name = f"petpal_loadtest_{tag}"
    try:
        asyncio.run(sql_value(admin_url, f'CREATE DATABASE "{name}"'))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        shown = make_url(admin_url).render_as_string()  # password hidden
        raise RunError(f"cannot create a database on {shown}: {exc!r}") from exc
    try:
        url = make_url(admin_url).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        try:
            # FORCE: a connection the server left behind must not keep it.
            drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            asyncio.run(sql_value(admin_url, drop))
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            # Said loudly, without hiding how the run itself went.
            print(f"WARNING: the database {name} is left behind: {exc!r}")


async def sql_value(url: str, statement: str) -> Any:
    """Run one statement on the server ``url`` names; its first value, if any."""
    dsn = make_url(url).set(drivername="postgresql")
    connection = await asyncpg.connect(
        dsn.render_as_string(hide_password=False), timeout=10
    )
    try:
        return await connection.fetchval(statement)
    finally:
        await connection.close()


@contextmanager
def private_key_prefix(redis_url: str, tag: str) -> Iterator[str]:
    """A Redis key prefix for this run; its keys are deleted on exit."""
    prefix = f"petpal-loadtest:{tag}:"
    try:
        yield prefix
    finally:
        try:
            delete_keys_under(redis_url, prefix)
        except redis.RedisError as exc:
            print(f"WARNING: Redis keys under {prefix} are left behind: {exc!r}")


def delete_keys_under(redis_url: str, prefix: str) -> None:
    """Delete every key that starts with ``prefix``, a page at a time."""
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start : start + 1000])
    finally:
        client.close()
