"""``petpal seed --users N``: a large, realistic data set, loaded in bulk.

The rows go straight into the tables, bypassing the API, but are the rows
the app itself would have written: ULID ids whose time part is the row's
``created_at``, exact denormalised counters, a hashtag row per caption tag,
and media rows that are ``ready`` with variants pointing at real processed
photos (see :mod:`petpal.seed.library`). What the rows look like is told in
:mod:`petpal.seed.shape`; how they are loaded in :mod:`petpal.seed.bulk`.

Accounts are ``user_0`` … ``user_<N-1>`` (``user_0`` is the most followed),
e-mail ``user_<i>@example.org``, all with one password, hashed once with
argon2 and shared: hashing millions of passwords would take days.

A database that already has accounts is refused unless ``append`` is set;
then the new accounts only follow, like and comment among themselves, and
the load stops (changing nothing) if one of their names is taken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import numpy as np
from numpy.typing import NDArray
from pydantic import TypeAdapter, ValidationError

from petpal.identity.schemas import Password
from petpal.media.imaging import ImageLimits
from petpal.platform.cache import CacheBackendError
from petpal.platform.redis_cache import RedisBackend
from petpal.platform.redis_rankings import RedisRankingBackend
from petpal.platform.redis_timelines import RedisTimelineBackend
from petpal.platform.security import hash_password, password_weakness
from petpal.platform.settings import Settings
from petpal.platform.storage import Storage
from petpal.seed import DEMO_PASSWORD
from petpal.seed.bulk import (
    Loader,
    PostgresLoader,
    SeedConflictError,
    SqliteLoader,
)
from petpal.seed.columns import Batch
from petpal.seed.library import SEED_PHOTOS, prepare_library
from petpal.seed.shape import DAY, DataSet

DEFAULT_PASSWORD = DEMO_PASSWORD


def password_problem(password: str, minimum_strength: int) -> str | None:
    """Why a sign-up would refuse ``password``, or None: the generated
    accounts' password is one people log in with (found by a trial: an
    empty one was taken, and no account could log in)."""
    try:
        TypeAdapter(Password).validate_python(password)
    except ValidationError as exc:
        return "; ".join(
            error["msg"].removeprefix("Value error, ") for error in exc.errors()
        )
    return password_weakness(
        password, ("user_0", "user_0@example.org"), minimum_strength
    )


class SeedRefusedError(Exception):
    """The seed will not run here; the message says why and what to do."""


@dataclass(frozen=True)
class ScaleReport:
    users: int
    seed: int
    engine: str
    rows: dict[str, int]
    followers: tuple[float, float, int]  # median, p99, max
    following: tuple[float, float, int]
    top_percent_share: float
    top_account_share: float
    active_share: float
    generate_seconds: float
    load_seconds: float
    index_seconds: float
    total_seconds: float
    # Said in the last line when it is the published demo password; a
    # password given with --password is not printed back.
    default_password: bool = True

    def render(self) -> str:
        lines = [
            f"seeded {self.users:,} accounts (seed {self.seed}) into {self.engine}",
            "",
            "follow graph        median      p99      max",
            "  followers     {:>10.0f} {:>8.0f} {:>8,}".format(*self.followers),
            "  following     {:>10.0f} {:>8.0f} {:>8,}".format(*self.following),
            f"  top 1% of accounts hold {self.top_percent_share:.1%} of all follows",
            f"  user_0 (the most followed) is followed by "
            f"{self.top_account_share:.2%} of everyone",
            f"  active in the last 7 days: {self.active_share:.1%} of accounts",
            "",
            "rows",
        ]
        lines += [f"  {table:<14} {count:>13,}" for table, count in self.rows.items()]
        lines += [
            f"  {'total':<14} {sum(self.rows.values()):>13,}",
            "",
            f"elapsed {self.total_seconds:.1f} s: prepare"
            f" {self.generate_seconds:.1f} s, rows {self.load_seconds:.1f} s,"
            f" indexes and commit {self.index_seconds:.1f} s",
            "",
            f"log in as any of user_0 … user_{self.users - 1} with the password "
            + (DEFAULT_PASSWORD if self.default_password else "given with --password"),
        ]
        return "\n".join(lines)


async def seed_scale(
    settings: Settings,
    users: int,
    *,
    seed: int = 0,
    password: str = DEFAULT_PASSWORD,
    append: bool = False,
    now_us: int | None = None,
    photos: Sequence[Path] = SEED_PHOTOS,
    progress: Callable[[str], None] | None = None,
) -> ScaleReport:
    """Generate and load ``users`` accounts and everything around them."""
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    loader = await _open_loader(settings)
    try:
        existing = await loader.begin()
        try:
            await _check_target(loader, users, existing, append)
            say("processing the library photos")
            limits = ImageLimits(
                max_bytes=settings.max_upload_bytes,
                max_pixels=settings.max_upload_pixels,
            )
            library = await prepare_library(Storage(settings), limits, photos=photos)
            password_hash = await asyncio.to_thread(hash_password, password)
            say("drawing the accounts and the follow graph")
            now = now_us if now_us is not None else time.time_ns() // 1000
            data = await asyncio.to_thread(
                DataSet, users, seed, now, password_hash, library
            )
            generated = time.perf_counter()
            say("loading the rows")
            if existing == 0:
                await loader.defer_indexes()
            await _load(loader, data.batches())
            loaded = time.perf_counter()
            say("building indexes and committing")
            await loader.commit()
        except BaseException:
            await loader.rollback()
            raise
    except SeedConflictError as exc:
        raise SeedRefusedError(
            f"nothing was written: a generated row clashes with the database ({exc})"
        ) from exc
    finally:
        await loader.close()
    await _forget_cached_names(settings, users)
    await _forget_derived(settings)
    finished = time.perf_counter()
    return _report(
        settings,
        data,
        generated - started,
        loaded - generated,
        finished - loaded,
        finished - started,
        default_password=password == DEFAULT_PASSWORD,
    )


async def _check_target(
    loader: Loader, users: int, existing: int, append: bool
) -> None:
    if existing and not append:
        raise SeedRefusedError(
            f"the database already has {existing:,} accounts; seed a large"
            " data set into an empty database, or pass --append to add"
            " user_0 … user_N-1 next to accounts of other names"
        )
    if existing:
        # A cheap early answer; the unique constraints catch any other clash.
        edges = sorted({f"user_{i}" for i in (0, users // 2, users - 1)})
        taken = await loader.taken_usernames(edges)
        if taken:
            raise SeedRefusedError(
                f"the database already has an account named {taken[0]};"
                " --append only adds accounts whose names are all free"
            )


async def _open_loader(settings: Settings) -> Loader:
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteLoader(settings.sqlite_path)
    return await PostgresLoader.connect(settings.effective_database_url)


async def _load(loader: Loader, batches: Iterator[Batch]) -> None:
    """Write every batch; the next one is made in a thread meanwhile.

    Making a batch (numpy, mostly without the GIL) and writing one (the
    database's work, or sqlite3's) overlap, so both cores stay busy.
    """

    def make() -> tuple[Batch, bytes | None] | None:
        batch = next(batches, None)
        if batch is None:
            return None
        return batch, batch.pg_copy_data() if loader.wants_copy_data else None

    pending = asyncio.ensure_future(asyncio.to_thread(make))
    try:
        while (item := await pending) is not None:
            pending = asyncio.ensure_future(asyncio.to_thread(make))
            try:
                await loader.write(*item)
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise SeedConflictError(str(exc)) from exc
    finally:
        if not pending.done():
            pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)


async def _forget_cached_names(settings: Settings, users: int) -> None:
    """Drop cached look-ups of the new names, as a sign-up does.

    A Redis shared with an earlier data set may still map ``user_5`` to an
    account id that no longer exists, or remember that it did not exist.
    """
    if not settings.redis_url:
        return
    backend = RedisBackend.from_settings(settings)
    try:
        for start in range(0, users, 10_000):
            stop = min(start + 10_000, users)
            await backend.delete(*(f"username:user_{i}" for i in range(start, stop)))
    except CacheBackendError:
        pass  # the keys expire on their own within ten minutes
    finally:
        await backend.close()


async def _forget_derived(settings: Settings) -> None:
    """Delete trending's rankings and the timelines from a Redis kept across
    data sets, or shared with servers that are running.

    The bulk load bypasses the writes that keep them up to date, so what was
    kept would miss every post loaded here (found by a trial: the public
    feed and #cats, read once before a seed, stayed empty after it, for as
    long as they were read); deleted, each is rebuilt from the rows at its
    next read. (In process, they live and die with the server, and a seed
    beside a server is refused.)
    """
    if not settings.redis_url:
        return
    backends: list[RedisRankingBackend | RedisTimelineBackend] = [
        RedisRankingBackend.from_settings(settings),
        RedisTimelineBackend.from_settings(settings),
    ]
    for backend in backends:
        try:
            await backend.clear()
        except CacheBackendError:
            pass  # they miss the new posts until they expire
        finally:
            await backend.close()


def _report(
    settings: Settings,
    data: DataSet,
    generate: float,
    load: float,
    index: float,
    total: float,
    *,
    default_password: bool,
) -> ScaleReport:
    followers, following = data.follower_count, data.following_count
    top = max(data.n // 100, 1)
    held = np.sort(followers)[::-1][:top].sum()

    def spread(values: NDArray[np.int64]) -> tuple[float, float, int]:
        return (
            float(np.median(values)),
            float(np.percentile(values, 99)),
            int(values.max()),
        )

    return ScaleReport(
        users=data.n,
        seed=data.seed,
        engine="SQLite" if settings.is_sqlite else "PostgreSQL",
        rows=dict(data.counts.rows),
        followers=spread(followers),
        following=spread(following),
        top_percent_share=float(held / max(followers.sum(), 1)),
        top_account_share=float(followers[0] / data.n),
        active_share=float((data.last_action >= data.now - 7 * DAY).mean()),
        generate_seconds=generate,
        load_seconds=load,
        index_seconds=index,
        total_seconds=total,
        default_password=default_password,
    )
