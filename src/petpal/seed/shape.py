"""The large data set: who follows whom, who posts, likes and comments, when.

Everything is drawn with numpy, whole columns at a time, from generators
seeded by ``(seed, stream, chunk)``: the same seed gives the same data set,
shifted to the time it is made (``now``). The accounts and the follow graph
are held in memory (about 2 GB for two million accounts); posts, likes and
comments are made and handed out one chunk of authors at a time.

The shape (numbers in :class:`Shape`):

- **Activity.** Each account has a last-active instant. About 30% were active
  in the last week; the others stopped at some point after signing up. The
  schema has no "last active" column, so activity is what the rows say: an
  account's newest follow, post, like or comment is its last activity, and
  every row of an account is dated at or before that instant. Each account's
  newest follow is placed exactly on it.
- **Following** is log-normal (median about 30), at least one, at most 5,000.
- **Followers** follow a power law: followees are drawn with a weight
  ``(rank + k0) ** -alpha``, ``alpha`` and ``k0`` fitted so that the top
  account is followed by about 2% of everyone and the top 1% of accounts hold
  a third of all follows. Below some 100,000 accounts both cannot hold at
  once (the top 1% would need more followers each than the top account has);
  the fit then meets them halfway, in log terms. Popularity falls with the
  account number: ``user_0`` is the most followed account (see
  ``_crown_user_0``), and the most followed 1% are nearly all active.
- **Posts** (about five per account) fall in the last 90 days, within each
  author's active span, more of them from active and popular accounts.
- **Likes and comments** come mostly from the author's active followers, so
  popular authors get more; recent posts get more too, and each lands after
  its post, soon after as a rule.

Counters (followers, following, posts per account; likes and comments per
post) are counted from the generated rows themselves, so they are exact.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from petpal.media.models import READY
from petpal.platform.text import extract_hashtags, fold_location
from petpal.seed import vocabulary as words
from petpal.seed.columns import (
    I64,
    Batch,
    Bool,
    Bytes,
    Date,
    Int,
    Text,
    Timestamp,
    ascii_numbers,
    choice,
    constant,
    encoded_table,
    ulids,
)
from petpal.seed.library import LibraryPhoto

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
I32 = NDArray[np.int32]
F64 = NDArray[np.float64]
Mask = NDArray[np.bool_]

# Random streams, one per purpose, so that changing one part of the shape
# leaves the others as they were.
_POPULATION, _FOLLOWS, _PETS, _POSTS, _FOLLOW_IDS, _ACCOUNTS, _POST_COUNTS = range(7)

# Rows per COPY or executemany call, and authors per chunk of posts.
FOLLOW_CHUNK_ACCOUNTS = 100_000
ROWS_PER_BATCH = 250_000
AUTHORS_PER_CHUNK = 40_000


@dataclass(frozen=True)
class Shape:
    """The figures the generator draws with.

    Some draws cannot happen (a follow of an account that signed up after the
    follower's last activity, a like by an account inactive since before the
    post) and are dropped, so a few figures are set above what the rows show:
    following median 36 gives 30, 4.3 likes per post give about 3, 0.65
    comments about 0.5.
    """

    following_median: float = 36.0
    following_sigma: float = 0.6
    following_max: int = 5000
    top_follower_share: float = 0.02
    top_percent_share: float = 1 / 3
    active_share: float = 0.30
    active_days: int = 7
    signup_days: int = 3 * 365
    post_days: int = 90
    posts_per_account: float = 5.0
    likes_per_post: float = 4.3
    comments_per_post: float = 0.65
    no_pet_share: float = 0.1
    extra_pets: float = 0.44  # Poisson mean of pets beyond the first
    adoption_share: float = 0.03
    dog_share: float = 0.55


@dataclass
class Counts:
    """Rows generated per table, in the order they are written."""

    rows: dict[str, int] = field(default_factory=dict)

    def add(self, batch: Batch) -> None:
        self.rows[batch.table] = self.rows.get(batch.table, 0) + len(batch)


class DataSet:
    """The accounts and their follow graph, and the batches of every row.

    ``batches()`` yields every table's rows in an order that satisfies the
    foreign keys: accounts, pet photos, pets, then per chunk of authors their
    media, posts and what hangs off them, then follows and account stats.
    """

    def __init__(
        self,
        users: int,
        seed: int,
        now_us: int,
        password_hash: str,
        library: list[LibraryPhoto],
        shape: Shape | None = None,
    ) -> None:
        if users < 2:
            raise ValueError("a data set needs at least two accounts")
        self.n = users
        self.seed = seed
        self.now = now_us
        self.password_hash = password_hash
        self.library = library
        self.shape = shape or Shape()
        self.counts = Counts()
        self._population()
        self._follow_graph()
        self._posts_per_account()
        self._pets()
        # The newest row of each account, for the activity statistic.
        self.last_action = np.full(self.n, -1, dtype=np.int64)
        np.maximum.at(self.last_action, self.follower, self.follow_us)

    def _rng(self, stream: int, chunk: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream, chunk])

    # --- accounts and the follow graph -------------------------------------

    def _population(self) -> None:
        s, n, now = self.shape, self.n, self.now
        rng = self._rng(_POPULATION)
        # Ranks follow the account number (user_0 is the most followed). The
        # most followed 1% are nearly all active, user_0 always; the others
        # make up the rest of the active share.
        top = max(n // 100, 1)
        rest = max(s.active_share * n - 0.9 * top, 0) / max(n - top, 1)
        self.active = rng.random(n) < np.where(np.arange(n) < top, 0.9, rest)
        self.active[0] = True
        # Sign-ups grow over time: more of them recently (u ** 1.5).
        u = rng.random(n) ** 1.5
        age_days = np.where(
            self.active,
            np.maximum(s.signup_days * u, 2 / 24),
            s.active_days + 1 + (s.signup_days - s.active_days - 1) * u,
        )
        self.created = now - (age_days * DAY).astype(np.int64)
        v = rng.random(n)
        recent = now - s.active_days * DAY
        lo = np.where(
            self.active, np.maximum(self.created + MINUTE, recent), self.created + HOUR
        )
        hi = np.where(self.active, now - MINUTE, recent - SECOND)
        # Inactive accounts lean towards having stopped recently (v ** 0.5);
        # active ones were last active lately, most of them within the last
        # day (v ** 0.125), as people who use an app week after week do. An
        # account's posts end at its last activity: spread evenly over the
        # week, the day before the data set had a fifth of the posts of a
        # day a month before (found by a trial, which saw trending's window
        # hold 0.6% of all posts). The last day still has about half a
        # day's, and its last hours fewer.
        self.last_active = lo + (
            (hi - lo) * np.where(self.active, v**0.125, v**0.5)
        ).astype(np.int64)
        degree = np.exp(
            rng.normal(math.log(s.following_median), s.following_sigma, n)
        ).round()
        self.following_target = np.clip(degree, 1, min(s.following_max, n - 1)).astype(
            np.int64
        )

    def _follow_graph(self) -> None:
        n = self.n
        self.alpha, self.k0 = fit_power_law(
            n,
            float(self.following_target.mean()),
            self.shape.top_follower_share,
            self.shape.top_percent_share,
        )
        followers: list[I32] = []
        followees: list[I32] = []
        times: list[I64] = []
        for chunk, start in enumerate(range(0, n, FOLLOW_CHUNK_ACCOUNTS)):
            rng = self._rng(_FOLLOWS, chunk)
            stop = min(start + FOLLOW_CHUNK_ACCOUNTS, n)
            src = np.repeat(
                np.arange(start, stop, dtype=np.int64),
                self.following_target[start:stop],
            )
            dst = zipf_ranks(rng.random(len(src)), n, self.alpha, self.k0)
            own = dst == src
            dst[own] = (src[own] + 1 + rng.integers(0, n - 1, int(own.sum()))) % n
            # Sorted by follower, then followee; a second draw of a pair is one.
            key = np.sort(src * n + dst)
            key = key[_run_starts(key)]
            src, dst = key // n, key % n
            # A follow needs both accounts, and the follower still active.
            lo = np.maximum(self.created[src], self.created[dst]) + 1000
            hi = self.last_active[src]
            ok = lo <= hi
            src, dst, lo, hi = src[ok], dst[ok], lo[ok], hi[ok]
            t = lo + (rng.random(len(src)) * (hi - lo)).astype(np.int64)
            first = _run_starts(src)
            t[first] = hi[first]  # each account's newest follow: its last activity
            followers.append(src.astype(np.int32))
            followees.append(dst.astype(np.int32))
            times.append(t)
        self.follower = np.concatenate(followers)
        self.followee = np.concatenate(followees)
        self.follow_us = np.concatenate(times)
        self._crown_user_0()
        self.follower_count = np.bincount(self.followee, minlength=n)
        self.following_count = np.bincount(self.follower, minlength=n)

    def _crown_user_0(self) -> None:
        """Make user_0 strictly the most followed account.

        Rank 0 has the largest weight, but where the head of the power law is
        flat (small data sets) chance can put another account ahead. Some of
        that account's followers then follow user_0 instead, at the same
        moment: followers who do not follow user_0 yet, at a time user_0
        already existed.
        """
        count = np.bincount(self.followee, minlength=self.n)
        following_0 = np.zeros(self.n, dtype=np.bool_)
        following_0[self.follower[self.followee == 0]] = True
        while True:
            best = 1 + int(count[1:].argmax())
            if count[0] > count[best]:
                return
            edges = np.flatnonzero(self.followee == best)
            movable = edges[
                ~following_0[self.follower[edges]]
                & (self.follower[edges] != 0)
                & (self.follow_us[edges] > self.created[0])
            ]
            moved = movable[: (count[best] - count[0]) // 2 + 1]
            if len(moved) == 0:
                return  # nothing can move: a data set of a handful of accounts
            self.followee[moved] = 0
            following_0[self.follower[moved]] = True
            count[best] -= len(moved)
            count[0] += len(moved)

    def _posts_per_account(self) -> None:
        s, n = self.shape, self.n
        rng = self._rng(_POST_COUNTS)
        self.post_lo = np.maximum(self.created + HOUR, self.now - s.post_days * DAY)
        window = np.maximum(self.last_active - self.post_lo, 0) / DAY
        relative = (self.follower_count + 1) / (self.follower_count.mean() + 1)
        popularity = relative**0.2
        rate = (
            np.where(self.active, 3.0, 1.0)
            * rng.lognormal(0.0, 0.8, n)
            * popularity
            * window
        )
        rate *= s.posts_per_account * n / max(float(rate.sum()), 1e-9)
        self.post_count = rng.poisson(rate)
        self.post_count[window <= 0] = 0
        # Likes and comments per post grow with the author's followers; the
        # factor is normalised so the averages stay at the shape's figures.
        pull = relative**0.6
        weight = float((pull * self.post_count).sum())
        self.pull = pull * (self.post_count.sum() / weight if weight else 1.0)
        # Followers by followee, all of them and the active ones: likers.
        order = np.argsort(self.followee, kind="stable")
        self.fans = self.follower[order]
        self.fans_start = np.r_[0, np.cumsum(self.follower_count)[:-1]]
        active_edges = self.active[self.fans]
        self.active_fans = self.fans[active_edges]
        active_count = np.bincount(self.followee[order][active_edges], minlength=n)
        self.active_fans_count = active_count
        self.active_fans_start = np.r_[0, np.cumsum(active_count)[:-1]]
        self.active_ids = np.flatnonzero(self.active)

    # --- pets ----------------------------------------------------------------

    def _pets(self) -> None:
        s, n = self.shape, self.n
        rng = self._rng(_PETS)
        count = np.where(
            rng.random(n) < s.no_pet_share, 0, 1 + rng.poisson(s.extra_pets, n)
        )
        self.pet_count = count
        self.pet_start = np.r_[0, np.cumsum(count)[:-1]]
        owner = np.repeat(np.arange(n), count)
        m = len(owner)
        self.pet_owner = owner
        # Pets are added in the first hour after signing up (while active).
        self.pet_us = np.minimum(
            self.created[owner] + MINUTE + (rng.random(m) * HOUR).astype(np.int64),
            self.last_active[owner],
        )
        self.pet_media_us = self.pet_us - ((5 + rng.random(m) * 50) * SECOND).astype(
            np.int64
        )
        self.pet_species = (rng.random(m) >= s.dog_share).astype(np.int64)  # 0 dog
        self.pet_photo = self._photos_for(self.pet_species, rng)
        self.pet_ids = ulids(self.pet_us // 1000, rng)
        self.pet_media_ids = ulids(self.pet_media_us // 1000, rng)
        self._pet_rng = rng

    def _photos_for(self, species: I64, rng: np.random.Generator) -> I64:
        """A library photo showing ``species`` (0 dog, 1 cat, -1 any)."""
        kinds = [words.SPECIES.index(p.species) for p in self.library]
        out = rng.integers(0, len(self.library), len(species))
        for kind in (0, 1):
            pool = np.array([i for i, k in enumerate(kinds) if k == kind])
            wanted = species == kind
            if len(pool):
                out[wanted] = pool[rng.integers(0, len(pool), int(wanted.sum()))]
        return out

    # --- batches -------------------------------------------------------------

    def batches(self) -> Iterator[Batch]:
        for batch in self._all_batches():
            self.counts.add(batch)
            yield batch

    def _all_batches(self) -> Iterator[Batch]:
        rng = self._rng(_ACCOUNTS)
        self.account_ids = ulids(self.created // 1000, rng)
        yield from self._accounts(rng)
        yield from self._pet_rows()
        for chunk, start in enumerate(range(0, self.n, AUTHORS_PER_CHUNK)):
            stop = min(start + AUTHORS_PER_CHUNK, self.n)
            yield from self._posts(chunk, start, stop)
        yield from self._follows()
        yield from self._stats()

    def _accounts(self, rng: np.random.Generator) -> Iterator[Batch]:
        n = self.n
        names = encoded_table(
            [f"{a} {b}" for a in words.FIRST_NAMES for b in words.LAST_NAMES]
        )
        display = rng.integers(0, len(names), n)
        bios = rng.integers(0, len(words.BIOS), n)
        # The first pet's photo is the avatar, as in the demo.
        has_pet = self.pet_count > 0
        avatar = np.zeros(n, dtype="S26")
        avatar[has_pet] = self.pet_media_ids[self.pet_start[has_pet]]
        bio_table = encoded_table(words.BIOS)
        for start in range(0, n, ROWS_PER_BATCH):
            part = slice(start, min(start + ROWS_PER_BATCH, n))
            numbers = np.arange(part.start, part.stop, dtype=np.int64)
            username = ascii_numbers("user_", numbers)
            email = ascii_numbers("user_", numbers, "@example.org")
            yield Batch(
                "accounts",
                {
                    "id": Text(self.account_ids[part]),
                    "username": Text(username),
                    "username_canonical": Text(username),
                    "email": Text(email),
                    "email_canonical": Text(email),
                    "password_hash": constant(self.password_hash, len(numbers)),
                    "display_name": choice(names, display[part]),
                    "bio": choice(bio_table, bios[part]),
                    "avatar_media_id": Text(avatar[part], null=~has_pet[part]),
                    "created_at": Timestamp(self.created[part]),
                },
            )

    def _media(
        self,
        ids: Bytes,
        owners: NDArray[np.integer[Any]],
        photo: I64,
        created: I64,
        rng: np.random.Generator,
    ) -> Batch:
        lib = self.library
        processed = created + ((0.5 + rng.random(len(ids)) * 3) * SECOND).astype(
            np.int64
        )
        none = np.ones(len(ids), dtype=np.bool_)

        def of_photo(values: list[Any]) -> Text:
            return choice(encoded_table([str(v) for v in values]), photo)

        return Batch(
            "media",
            {
                "id": Text(ids),
                "owner_id": Text(self.account_ids[owners]),
                "status": constant(READY, len(ids)),
                "failure_reason": Text(np.zeros(len(ids), dtype="S1"), null=none),
                "source_format": of_photo([p.source_format for p in lib]),
                "byte_size": Int(
                    np.array([p.byte_size for p in lib], dtype=np.int64)[photo], 8
                ),
                "incoming_key": Text(np.zeros(len(ids), dtype="S1"), null=none),
                "width": Int(np.array([p.width for p in lib])[photo]),
                "height": Int(np.array([p.height for p in lib])[photo]),
                "animated": Bool(np.zeros(len(ids), dtype=np.bool_)),
                "blurhash": of_photo([p.blurhash for p in lib]),
                # As SQLAlchemy's JSON type writes it: json.dumps.
                "variants": of_photo([json.dumps(p.variants) for p in lib]),
                "created_at": Timestamp(created),
                "processed_at": Timestamp(processed),
            },
        )

    def _pet_rows(self) -> Iterator[Batch]:
        s, rng = self.shape, self._pet_rng
        m = len(self.pet_owner)
        for start in range(0, m, ROWS_PER_BATCH):
            part = slice(start, min(start + ROWS_PER_BATCH, m))
            yield self._media(
                self.pet_media_ids[part],
                self.pet_owner[part],
                self.pet_photo[part],
                self.pet_media_us[part],
                rng,
            )
        breeds = [words.BREEDS[kind] for kind in words.SPECIES]
        breed_table = encoded_table([b for group in breeds for b in group])
        breed_start = np.array([0, len(breeds[0])])
        breed_count = np.array([len(group) for group in breeds])
        species = self.pet_species
        breed = breed_start[species] + (rng.random(m) * breed_count[species]).astype(
            np.int64
        )
        listed = rng.random(m) < s.adoption_share
        # Listed pets say where they are; a few others do too.
        places = ("", *words.LOCATIONS)
        place = np.where(
            listed | (rng.random(m) < 0.2),
            1 + rng.integers(0, len(words.LOCATIONS), m),
            0,
        )
        listing_ids = ulids(self.pet_us // 1000, rng)
        pet_day = self.pet_us // DAY
        birth = pet_day - rng.integers(60, 15 * 365, m)
        names = rng.integers(0, len(words.PET_NAMES), m)
        bios = rng.integers(0, len(words.PET_BIOS), m)
        for start in range(0, m, ROWS_PER_BATCH):
            part = slice(start, min(start + ROWS_PER_BATCH, m))
            yield Batch(
                "pets",
                {
                    "id": Text(self.pet_ids[part]),
                    "owner_id": Text(self.account_ids[self.pet_owner[part]]),
                    "name": choice(encoded_table(words.PET_NAMES), names[part]),
                    "species": choice(encoded_table(words.SPECIES), species[part]),
                    "breed": choice(breed_table, breed[part]),
                    "birth_date": Date(birth[part]),
                    "bio": choice(encoded_table(words.PET_BIOS), bios[part]),
                    "photo_media_id": Text(self.pet_media_ids[part]),
                    "location": choice(encoded_table(places), place[part]),
                    "location_folded": choice(
                        encoded_table([fold_location(p) for p in places]), place[part]
                    ),
                    "listing_id": Text(listing_ids[part], null=~listed[part]),
                    "created_at": Timestamp(self.pet_us[part]),
                },
            )

    def _posts(self, chunk: int, start: int, stop: int) -> Iterator[Batch]:
        s, rng = self.shape, self._rng(_POSTS, chunk)
        author = np.repeat(
            np.arange(start, stop, dtype=np.int64), self.post_count[start:stop]
        )
        p = len(author)
        if p == 0:
            return
        lo, hi = self.post_lo[author], self.last_active[author]
        t = lo + (rng.random(p) * (hi - lo)).astype(np.int64)
        np.maximum.at(self.last_action, author, t)
        media_t = t - ((5 + rng.random(p) * 115) * SECOND).astype(np.int64)
        post_ids = ulids(t // 1000, rng)
        media_ids = ulids(media_t // 1000, rng)

        # The post shows one of the author's pets, if the author has any.
        pet = _pick(
            np.arange(len(self.pet_ids)),
            self.pet_start[author],
            self.pet_count[author],
            rng.random(p),
        )
        has_pet = pet >= 0
        shown = np.where(has_pet, self.pet_species[np.maximum(pet, 0)], -1)
        photo = self._photos_for(shown, rng)
        # Most posts of a pet are captioned for its species, some generically.
        captions = _Captions()
        caption = captions.pick(np.where(rng.random(p) < 0.15, -1, shown), rng)

        likes = self._reactions(author, t, s.likes_per_post, rng)
        liked_post, liker, like_t = likes
        # One like per account and post (the primary key): keep the first.
        key = liked_post * self.n + liker
        order = np.argsort(key, kind="stable")
        keep = order[_run_starts(key[order])]
        liked_post, liker, like_t = liked_post[keep], liker[keep], like_t[keep]
        commented, commenter, comment_t = self._reactions(
            author, t, s.comments_per_post, rng
        )
        for who, when in ((liker, like_t), (commenter, comment_t)):
            np.maximum.at(self.last_action, who, when)
        like_count = np.bincount(liked_post, minlength=p)
        comment_count = np.bincount(commented, minlength=p)

        yield self._media(media_ids, author, photo, media_t, rng)
        yield Batch(
            "posts",
            {
                "id": Text(post_ids),
                "author_id": Text(self.account_ids[author]),
                "caption": choice(captions.table, caption),
                "like_count": Int(like_count),
                "comment_count": Int(comment_count),
                "created_at": Timestamp(t),
            },
        )
        zeros = np.zeros(p, dtype=np.int64)
        yield Batch(
            "post_media",
            {
                "post_id": Text(post_ids),
                "position": Int(zeros),
                "media_id": Text(media_ids),
            },
        )
        yield Batch(
            "post_pets",
            {
                "post_id": Text(post_ids[has_pet]),
                "position": Int(zeros[has_pet]),
                "pet_id": Text(self.pet_ids[pet[has_pet]]),
            },
        )
        tagged, tag, position = captions.tags_of(caption)
        yield Batch(
            "post_tags",
            {
                "tag": choice(captions.tag_table, tag),
                "post_id": Text(post_ids[tagged]),
                "position": Int(position),
            },
        )
        yield Batch(
            "likes",
            {
                "post_id": Text(post_ids[liked_post]),
                "account_id": Text(self.account_ids[liker]),
                "created_at": Timestamp(like_t),
            },
        )
        bodies = rng.integers(0, len(words.COMMENTS), len(commented))
        yield Batch(
            "comments",
            {
                "id": Text(ulids(comment_t // 1000, rng)),
                "post_id": Text(post_ids[commented]),
                "author_id": Text(self.account_ids[commenter]),
                "body": choice(encoded_table(words.COMMENTS), bodies),
                "created_at": Timestamp(comment_t),
            },
        )

    def _reactions(
        self, author: I64, posted: I64, per_post: float, rng: np.random.Generator
    ) -> tuple[I64, I64, I64]:
        """Likes or comments on these posts: (post index, account, time).

        Most come from the author's active followers, some from any follower,
        a few from active accounts that do not follow the author. A reaction
        lands after both the post and its maker's sign-up and no later than
        the maker's last activity; a draw that cannot is dropped.
        """
        age_days = (self.now - posted) / DAY
        recency = 0.4 + 1.6 * np.exp(-age_days / 30)
        wanted = rng.poisson(per_post * self.pull[author] * recency)
        post = np.repeat(np.arange(len(author), dtype=np.int64), wanted)
        by = author[post]
        r = rng.random(len(post))
        pick = rng.random(len(post))
        who = _pick(self.active_ids, np.zeros_like(by), len(self.active_ids), pick)
        fan = _pick(self.fans, self.fans_start[by], self.follower_count[by], pick)
        who = np.where((r < 0.92) & (fan >= 0), fan, who)
        active_fan = _pick(
            self.active_fans,
            self.active_fans_start[by],
            self.active_fans_count[by],
            pick,
        )
        who = np.where((r < 0.75) & (active_fan >= 0), active_fan, who)
        safe = np.maximum(who, 0)
        lo = np.maximum(posted[post], self.created[safe]) + 1000
        hi = np.minimum(self.last_active[safe], self.now - SECOND)
        ok = (who >= 0) & (who != by) & (lo <= hi)
        post, who, lo, hi = post[ok], who[ok], lo[ok], hi[ok]
        # Most reactions come soon after the post (u ** 3).
        t = lo + ((hi - lo) * rng.random(len(post)) ** 3).astype(np.int64)
        return post, who, t

    def _follows(self) -> Iterator[Batch]:
        # Oldest first, as they were made: the id index (a ULID is its time)
        # then grows at its end, which SQLite inserts into much faster.
        order = np.argsort(self.follow_us, kind="stable")
        m = len(order)
        for chunk, start in enumerate(range(0, m, ROWS_PER_BATCH)):
            part = order[start : start + ROWS_PER_BATCH]
            t = self.follow_us[part]
            yield Batch(
                "follows",
                {
                    "id": Text(ulids(t // 1000, self._rng(_FOLLOW_IDS, chunk))),
                    "follower_id": Text(self.account_ids[self.follower[part]]),
                    "followee_id": Text(self.account_ids[self.followee[part]]),
                    "created_at": Timestamp(t),
                },
            )

    def _stats(self) -> Iterator[Batch]:
        followers, following = self.follower_count, self.following_count
        posts = self.post_count
        # The app makes the row on an account's first follow or post.
        has_row = np.flatnonzero((followers > 0) | (following > 0) | (posts > 0))
        for start in range(0, len(has_row), ROWS_PER_BATCH):
            part = has_row[start : start + ROWS_PER_BATCH]
            yield Batch(
                "account_stats",
                {
                    "account_id": Text(self.account_ids[part]),
                    "follower_count": Int(followers[part]),
                    "following_count": Int(following[part]),
                    "post_count": Int(posts[part]),
                },
            )


class _Captions:
    """Caption choices by species, with each caption's hashtags worked out."""

    def __init__(self) -> None:
        groups = [words.CAPTIONS[k] for k in (*words.SPECIES, "any")]
        flat = [c for group in groups for c in group]
        self.table = encoded_table(flat)
        self.group_start = np.cumsum([0] + [len(g) for g in groups])[:-1]
        self.group_size = np.array([len(g) for g in groups])
        tags = [extract_hashtags(c) for c in flat]
        distinct = sorted({t for ts in tags for t in ts})
        self.tag_table = encoded_table(distinct)
        self.tag_count = np.array([len(ts) for ts in tags])
        self.tag_start = np.r_[0, np.cumsum(self.tag_count)[:-1]]
        self.tag_flat = np.array(
            [distinct.index(t) for ts in tags for t in ts], dtype=np.int64
        )

    def pick(self, species: I64, rng: np.random.Generator) -> I64:
        group = np.where(species < 0, len(words.SPECIES), species)
        offset = (rng.random(len(species)) * self.group_size[group]).astype(np.int64)
        picked: I64 = self.group_start[group] + offset
        return picked

    def tags_of(self, caption: I64) -> tuple[I64, I64, I64]:
        """(post index, tag index, position) for every hashtag of every post."""
        count = self.tag_count[caption]
        post = np.repeat(np.arange(len(caption), dtype=np.int64), count)
        first = np.repeat(np.cumsum(count) - count, count)
        position = np.arange(len(post), dtype=np.int64) - first
        tag = self.tag_flat[self.tag_start[caption[post]] + position]
        return post, tag, position


def _run_starts(values: NDArray[np.integer[Any]]) -> Mask:
    """Where each run of equal values in ``values`` begins."""
    starts = np.ones(len(values), dtype=np.bool_)
    starts[1:] = values[1:] != values[:-1]
    return starts


def _pick(
    pool: NDArray[np.integer[Any]],
    start: NDArray[np.integer[Any]],
    count: NDArray[np.integer[Any]] | int,
    u: F64,
) -> I64:
    """``pool[start + floor(u * count)]`` per row; -1 where ``count`` is 0."""
    count = np.broadcast_to(np.asarray(count, dtype=np.int64), u.shape)
    if len(pool) == 0:
        return np.full(u.shape, -1, dtype=np.int64)
    index = np.minimum(start + (u * count).astype(np.int64), len(pool) - 1)
    picked: I64 = np.where(count > 0, pool[index], -1).astype(np.int64)
    return picked


def zipf_ranks(u: F64, n: int, alpha: float, k0: float) -> I64:
    """Ranks in [0, n) drawn with weight ``(rank + k0) ** -alpha``.

    The inverse of the continuous distribution's CDF, floored: exact enough
    for a data set, and a handful of array operations for millions of draws.
    """
    b = 1.0 - alpha
    low = k0**b
    high = (n + k0) ** b
    x = (low + u * (high - low)) ** (1.0 / b) - k0
    ranks: I64 = np.clip(x.astype(np.int64), 0, n - 1)
    return ranks


def fit_power_law(
    n: int, mean_following: float, top_share: float, top_percent_share: float
) -> tuple[float, float]:
    """``alpha`` and ``k0`` for the follower targets, as near as ``n`` allows.

    Minimises the squared log-ratios of both figures to their targets over a
    grid: where both can hold (large ``n``) the error is near zero.
    """
    alpha = np.arange(0.05, 2.5, 0.01)
    alpha = alpha[np.abs(alpha - 1.0) > 1e-6][:, None]
    k0 = (10 ** np.arange(-4.0, 8.0, 0.02))[None, :]
    b = 1.0 - alpha
    whole = (n + k0) ** b - k0**b

    def below(rank: float) -> F64:
        share: F64 = ((rank + k0) ** b - k0**b) / whole
        return share

    top = np.minimum(below(1.0) * mean_following, 1.0)
    held = below(max(0.01 * n, 1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = np.log(top / top_share) ** 2 + np.log(held / top_percent_share) ** 2
    loss = np.where(np.isfinite(loss), loss, np.inf)
    i, j = np.unravel_index(int(np.argmin(loss)), loss.shape)
    return float(alpha[i, 0]), float(k0[0, j])
