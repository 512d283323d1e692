"""What people do on PetPal, as Locust users: the scenarios of the load test.

Each simulated person opens the app once — logs in, loads their own profile
and the first page of their home feed — then takes one action after another
with a pause between, each picked by its weight in the mix (``mix.toml``,
read by ``mix.py``). They act only on what they have seen on screen: the
posts, authors, pets and hashtags of the pages they have read.

Every request is named by its route template (``/api/v1/posts/{post_id}``),
so Locust's statistics group an action over every id; pages after the first
carry ``?cursor={cursor}``. The access token is reused and refreshed shortly
before it expires, as the app does.

One ``Baseline`` client beside them asks for ``/healthz``, which measures
what the machine itself adds to every request.

``python3 dev.py loadtest`` (``run.py``) starts a server, seeds it, and names
the accounts to use through the environment (see ``mix.py``). By hand, from
the repository root, against a server that runs with
``PETPAL_RATE_LIMITS_ENABLED=false``, it uses the demo accounts::

    PYTHONPATH=. .venv/bin/locust -f loadtest/locustfile.py \
        --host http://127.0.0.1:8000 --web-host 127.0.0.1

Never import this module from the test suite: Locust patches the whole
process with gevent.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import mimetypes
import os
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlencode

from locust import FastHttpUser, TaskSet, between, constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.stats import StatsEntry, StatsError, bucket_response_time

from loadtest.mix import (
    ACCOUNT_COUNT_ENV,
    ACCOUNTS_ENV,
    ACTIONS,
    BASELINE_NAME,
    BASELINE_PAUSE_SECONDS,
    COMMENTS,
    DEMO_ACCOUNTS,
    DEMO_PASSWORD,
    PASSWORD_ENV,
    SEED_ENV,
    load_mix,
)
from loadtest.stats import FINAL_RESULTS_ENV, within_slowest

API = "/api/v1"
MIX = load_mix()
PHOTOS = [
    (path.name, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "image/jpeg")
    for path in MIX.photos
]
# How often post_photo asks whether its upload is processed.
PHOTO_POLL_SECONDS = 0.25
# Refresh this long before the access token expires, as the app does: a tenth
# of its lifetime, and at least a few seconds for a slow request to land.
REFRESH_AHEAD_FRACTION = 0.1
REFRESH_AHEAD_SECONDS = 5.0
# Enough to act on, few enough that old pages are forgotten.
SEEN_POSTS = 200

CAPTIONS = (
    "Morning walk done #dogs #morningwalk 🐕",
    "Caught napping again #cats #naptime",
    "New toy, old tricks #play #petsofpetpal",
    "Sunday on the sofa #lazysunday 🐾",
)


class AccountPool:
    """Hands each simulated person an account of their own while any are left.

    ``PETPAL_LOADTEST_ACCOUNTS`` is a username template with ``{i}``
    (``user_{i}``, with ``PETPAL_LOADTEST_ACCOUNT_COUNT`` accounts) or a
    comma-separated list of usernames; the default is the demo's owners.
    """

    def __init__(self, accounts: str, count: int, seed: str) -> None:
        if "{i}" in accounts:
            # Shuffled, so that a short run does not only draw the accounts
            # a generator made first (in the scale seed, the most followed).
            order = random.Random(seed).sample(range(count), min(count, 100_000))
            self._names = [accounts.format(i=i) for i in order]
        else:
            names = (name.strip() for name in accounts.split(","))
            self._names = [name for name in names if name]
        if not self._names:
            raise ValueError(f"{ACCOUNTS_ENV} names no account")
        self._next = itertools.count()

    def claim(self) -> str:
        return self._names[next(self._next) % len(self._names)]


ACCOUNTS = AccountPool(
    os.environ.get(ACCOUNTS_ENV, DEMO_ACCOUNTS),
    int(os.environ.get(ACCOUNT_COUNT_ENV, "0")),
    os.environ.get(SEED_ENV, "petpal"),
)
PASSWORD = os.environ.get(PASSWORD_ENV, DEMO_PASSWORD)


class Seen:
    """What one person has seen on screen so far, and so can tap on."""

    def __init__(self) -> None:
        self.posts: deque[str] = deque(maxlen=SEEN_POSTS)
        self.authors: deque[str] = deque(maxlen=SEEN_POSTS)
        self.pets: deque[str] = deque(maxlen=SEEN_POSTS)
        self.hashtags: deque[str] = deque(maxlen=SEEN_POSTS)
        self.liked: dict[str, bool] = {}

    def add_posts(self, posts: Iterable[dict[str, Any]]) -> None:
        for post in posts:
            self.posts.append(post["id"])
            self.liked[post["id"]] = bool(post["liked_by_me"])
            self.authors.append(post["author"]["username"])
            self.pets.extend(pet["id"] for pet in post["pets"])
            self.hashtags.extend(post["hashtags"])
        if len(self.liked) > 2 * SEEN_POSTS:
            self.liked = {post_id: self.liked[post_id] for post_id in self.posts}


# A check of a 2xx answer's body: the reason it is a failure, or None.
BodyCheck = Callable[[dict[str, Any]], str | None]


class Expired:
    """What PetOwner.send returns when the server saw the token expired."""


# How many times each action of the mix was picked, for the final results:
# an action with a weight that a run never took measured nothing.
TAKEN: Counter[str] = Counter()


def weighted_actions(namespace: dict[str, Any]) -> list[TaskSet | Callable[..., Any]]:
    """The actions defined in ``namespace``, each repeated as often as its
    weight, and each counted in ``TAKEN`` when picked."""
    missing = [action for action in ACTIONS if action not in namespace]
    if missing:
        raise RuntimeError(f"PetOwner does not implement the actions {missing}")
    counted = {action: _counted(action, namespace[action]) for action in ACTIONS}
    return [counted[a] for a in ACTIONS for _ in range(MIX.weights[a])]


def _counted(action: str, run: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(run)
    def taken(user: Any) -> None:
        TAKEN[action] += 1
        run(user)

    return taken


class PetOwner(FastHttpUser):
    wait_time = between(MIX.pause_min_seconds, MIX.pause_max_seconds)
    # Well below the runner's own time limit, so a hung request is reported
    # as a failure instead of stalling the run.
    network_timeout = 30.0
    connection_timeout = 10.0

    username = ""
    access_token = ""
    refresh_token = ""
    refresh_at = 0.0
    expires_at = 0.0
    home_cursor: str | None = None
    my_pets: list[str] | None = None

    def on_start(self) -> None:
        """Opens the app: logs in once, then loads the profile and home feed."""
        self.rng = random.Random()
        self.seen = Seen()
        self.username = ACCOUNTS.claim()
        if not self.log_in():
            raise StopUser()
        self.call("GET", "/accounts/me")
        self.read_home_feed()

    # --- the actions of the mix, each named as in mix.toml --------------------

    def read_home_feed(self) -> None:
        """Opens the app or pulls to refresh: the home feed's first page."""
        self.read_page("/feed/home", self.page_query(), home=True)

    def scroll_home_feed(self) -> None:
        """Scrolls down: the home feed's next page, or the first at the end."""
        if self.home_cursor is None:
            self.read_home_feed()
            return
        self.read_page("/feed/home", self.page_query(self.home_cursor), home=True)

    def open_post(self) -> None:
        post_id = self.pick(self.seen.posts)
        if post_id is None:
            self.read_public_feed()
            return
        post = self.call("GET", "/posts/{post_id}", ids={"post_id": post_id})
        if post is not None:
            self.seen.add_posts([post])
            self.call(
                "GET",
                "/posts/{post_id}/comments",
                query=self.page_query(),
                ids={"post_id": post_id},
            )

    def open_profile(self) -> None:
        username = self.pick(self.seen.authors)
        if username is None:
            self.read_public_feed()
            return
        if self.call("GET", "/accounts/{username}", ids={"username": username}) is None:
            return
        self.read_page(
            "/accounts/{username}/posts", self.page_query(), ids={"username": username}
        )
        pets = self.call(
            "GET",
            "/accounts/{username}/pets",
            query=self.page_query(),
            ids={"username": username},
        )
        if pets is not None:
            self.seen.pets.extend(pet["id"] for pet in pets["items"])

    def open_pet(self) -> None:
        pet_id = self.pick(self.seen.pets)
        if pet_id is None:
            self.read_pet_of_the_day()
            return
        self.call("GET", "/pets/{pet_id}", ids={"pet_id": pet_id})

    def read_trending(self) -> None:
        self.read_page("/feed/trending", self.page_query())

    def read_public_feed(self) -> None:
        self.read_page("/feed/public", self.page_query())

    def browse_hashtag(self) -> None:
        tag = self.pick(self.seen.hashtags)
        if tag is None:
            self.read_trending()
            return
        self.read_page("/tags/{tag}", self.page_query(), ids={"tag": tag})

    def read_pet_of_the_day(self) -> None:
        today = self.call("GET", "/pets/of-the-day")
        if today is not None:
            self.seen.pets.append(today["pet"]["id"])

    def like_or_unlike(self) -> None:
        """Taps the heart of a post seen: likes it, or unlikes a liked one."""
        post_id = self.pick(self.seen.posts)
        if post_id is None:
            self.read_home_feed()
            return
        method = "DELETE" if self.seen.liked.get(post_id) else "POST"
        state = self.call(method, "/posts/{post_id}/like", ids={"post_id": post_id})
        if state is not None:
            self.seen.liked[post_id] = bool(state["liked"])

    def comment(self) -> None:
        post_id = self.pick(self.seen.posts)
        if post_id is None:
            self.read_home_feed()
            return
        self.call(
            "POST",
            "/posts/{post_id}/comments",
            body={"body": self.rng.choice(COMMENTS)},
            expect=201,
            ids={"post_id": post_id},
        )

    def follow_or_unfollow(self) -> None:
        """Opens an author's profile and taps Follow, or Unfollow if following."""
        others = [name for name in self.seen.authors if name != self.username]
        username = self.pick(others)
        if username is None:
            self.read_public_feed()
            return
        profile = self.call("GET", "/accounts/{username}", ids={"username": username})
        if profile is None:
            return
        method = "DELETE" if profile["followed_by_me"] else "POST"
        self.call(
            method,
            "/accounts/{username}/follow",
            expect=204,
            ids={"username": username},
        )

    def post_photo(self) -> None:
        """Uploads a photo, waits until it is processed, and posts it."""
        name, data, content_type = self.rng.choice(PHOTOS)
        media = self.call(
            "POST", "/media", files={"file": (name, data, content_type)}, expect=202
        )
        if media is None or not self.wait_until_ready(media["id"]):
            return
        pet_ids = self.rng.sample(self.own_pets(), min(1, len(self.own_pets())))
        post = self.call(
            "POST",
            "/posts",
            body={
                "caption": self.rng.choice(CAPTIONS),
                "media_ids": [media["id"]],
                "pet_ids": pet_ids,
            },
            expect=201,
        )
        if post is not None:
            self.seen.add_posts([post])

    # Every action of the mix, as often as its weight: Locust picks one of
    # this list at random each time. The names are checked against mix.py.
    tasks = weighted_actions(vars())

    # --- what the actions are made of -----------------------------------------

    def read_page(
        self,
        route: str,
        query: dict[str, str],
        *,
        home: bool = False,
        ids: dict[str, str] | None = None,
    ) -> None:
        page = self.call("GET", route, query=query, ids=ids)
        if page is None:
            return
        self.seen.add_posts(page["items"])
        if home:
            self.home_cursor = page["next_cursor"]

    def wait_until_ready(self, media_id: str) -> bool:
        deadline = time.monotonic() + MIX.photo_ready_timeout_seconds

        def processed(media: dict[str, Any]) -> str | None:
            if media["status"] == "failed":
                return f"processing failed: {media['failure_reason']}"
            if media["status"] != "ready" and time.monotonic() > deadline:
                return f"not processed after {MIX.photo_ready_timeout_seconds:g} s"
            return None

        while True:
            # Locust has made time.sleep cooperative: other users run meanwhile.
            time.sleep(PHOTO_POLL_SECONDS)
            media = self.call(
                "GET", "/media/{media_id}", check=processed, ids={"media_id": media_id}
            )
            if media is None:
                return False
            if media["status"] == "ready":
                return True

    def own_pets(self) -> list[str]:
        if self.my_pets is None:
            pets = self.call(
                "GET",
                "/accounts/{username}/pets",
                query=self.page_query(),
                ids={"username": self.username},
            )
            self.my_pets = [pet["id"] for pet in pets["items"]] if pets else []
        return self.my_pets

    def page_query(self, cursor: str | None = None) -> dict[str, str]:
        query = {"limit": str(MIX.page_size)}
        if cursor is not None:
            query["cursor"] = cursor
        return query

    def pick(self, seen: Iterable[str]) -> str | None:
        choices = list(seen)
        return self.rng.choice(choices) if choices else None

    # --- HTTP and tokens ------------------------------------------------------

    def log_in(self) -> bool:
        tokens = self.call(
            "POST",
            "/auth/token",
            body={"login": self.username, "password": PASSWORD},
            authenticated=False,
        )
        if tokens is not None:
            self.take_tokens(tokens)
        return tokens is not None

    def take_tokens(self, tokens: dict[str, Any]) -> None:
        self.access_token = tokens["access_token"]
        self.refresh_token = tokens["refresh_token"]
        lifetime = float(tokens["expires_in"])
        ahead = max(lifetime * REFRESH_AHEAD_FRACTION, REFRESH_AHEAD_SECONDS)
        # The server's own expiry time, from the token: the answer that brought
        # it may have taken seconds, and the client and server share a clock.
        self.expires_at = _expiry(self.access_token)
        self.refresh_at = self.expires_at - min(ahead, lifetime / 2)

    def keep_token_fresh(self, *, now: bool = False) -> None:
        if time.time() < self.refresh_at and not now:
            return
        tokens = self.call(
            "POST",
            "/auth/refresh",
            body={"refresh_token": self.refresh_token},
            authenticated=False,
        )
        if tokens is not None:
            self.take_tokens(tokens)
        elif not self.log_in():  # the app falls back to its log-in screen
            raise StopUser()

    def call(
        self,
        method: str,
        route: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        expect: int = 200,
        authenticated: bool = True,
        check: BodyCheck | None = None,
        ids: dict[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """One request named by ``route``; its JSON body, or None if it failed.

        ``ids`` fill the route's placeholders; an answer other than
        ``expect`` is a failure, and so is one ``check`` finds wrong. A
        request that waited at the server until its access token expired is
        sent again with a fresh one, as the app does.
        """
        path = API + route.format_map(
            {key: quote(value, safe="") for key, value in (ids or {}).items()}
        )
        name = API + route
        if query:
            path += "?" + urlencode(query)
            if "cursor" in query:
                name += "?cursor={cursor}"
        for attempt in (1, 2):
            headers = {}
            if authenticated:
                self.keep_token_fresh(now=attempt == 2)
                headers["Authorization"] = f"Bearer {self.access_token}"
            answer = self.send(method, path, headers, expect, name, body, files, check)
            if not isinstance(answer, Expired):
                return answer
        return None

    def send(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        expect: int,
        name: str,
        body: Any,
        files: dict[str, tuple[str, bytes, str]] | None,
        check: BodyCheck | None,
    ) -> dict[str, Any] | Expired | None:
        """The JSON answer; None on failure; Expired if the token ran out."""
        with self.client.request(
            method,
            path,
            name=name,
            headers=headers,
            json=body,
            files=files,
            catch_response=True,
        ) as response:
            status = response.status_code
            if status == 401 and headers and time.time() >= self.expires_at:
                # Sent in time, answered after the token expired: the
                # protocol working, not a failure; call() tries again.
                response.success()
                return Expired()
            if status != expect:
                response.failure(_describe_failure(status, response))
                return None
            if status == 204:
                return {}
            try:
                answer: dict[str, Any] = response.json()
            except ValueError:
                response.failure("the answer is not JSON")
                return None
            problem = check(answer) if check else None
            if problem is not None:
                response.failure(problem)
                return None
            return answer


def _expiry(access_token: str) -> float:
    """The ``exp`` claim (Unix time) of a JWT, read without checking it."""
    payload = access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return float(claims["exp"])


def _describe_failure(status: int, response: Any) -> str:
    """``HTTP 404 not_found``: the status and the problem's code, which group."""
    if status == 0:
        return f"no answer: {type(response.error).__name__}"
    try:
        code = response.json().get("code", "")
    except (ValueError, AttributeError):
        code = ""
    return f"HTTP {status} {code}".strip()


class Baseline(FastHttpUser):
    """The same server answering a constant: what the machine alone costs.

    One of these runs beside the people (the runner adds it to --users); its
    latency is the floor under every action's on this machine at this moment.
    """

    fixed_count = 1
    wait_time = constant(BASELINE_PAUSE_SECONDS)

    @task
    def health(self) -> None:
        self.client.get("/healthz", name=BASELINE_NAME)


# --- the final results -------------------------------------------------------------
#
# Locust rewrites its CSV files once a second while it runs and not again at
# the end, so they miss the last second, the grace for actions under way
# included (found by a trial: 317 requests in the CSV of a run of 320, and a
# run of only post_photo said no request was made). At quit, its statistics
# are final: the runner reads them from this file (loadtest/stats.py).

# The Environment Locust made, kept as it starts: the quit event is given
# only the exit status, and the statistics live on the Environment.
_ENVIRONMENT: list[Environment] = []


def _keep_environment(environment: Environment, **_: Any) -> None:
    _ENVIRONMENT.append(environment)


def _write_final_results(exit_code: int, **_: Any) -> None:
    path = os.environ.get(FINAL_RESULTS_ENV)
    if not path or not _ENVIRONMENT:
        return
    environment = _ENVIRONMENT[-1]
    stats = environment.stats
    runner = environment.runner
    final = {
        "exit_code": exit_code,
        "requests": [_entry(entry) for entry in stats.entries.values()],
        "aggregated": _entry(stats.total),
        "failures": [
            {
                "label": f"{error.method} {error.name}",
                "error": StatsError.parse_error(error.error),
                "occurrences": error.occurrences,
            }
            for error in stats.errors.values()
        ],
        "exceptions": [
            f"{e['count']}× {e['msg']}"
            for e in (runner.exceptions.values() if runner is not None else ())
        ],
        "actions": {action: TAKEN[action] for action in ACTIONS},
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump(final, file)


# Locust's EventHook.add_listener carries no annotations.
events.init.add_listener(_keep_environment)  # type: ignore[no-untyped-call]
events.quit.add_listener(_write_final_results)  # type: ignore[no-untyped-call]


def _entry(entry: StatsEntry) -> dict[str, Any]:
    def exact(value: float) -> float:
        slowest = entry.max_response_time
        return within_slowest(value, slowest, bucket_response_time(slowest))

    measured = entry.num_requests - entry.num_none_requests > 0
    return {
        "method": entry.method or "",
        "name": entry.name,
        "count": entry.num_requests,
        "failures": entry.num_failures,
        "median_ms": exact(entry.median_response_time) if measured else None,
        "p95_ms": exact(entry.get_response_time_percentile(0.95)) if measured else None,
        "p99_ms": exact(entry.get_response_time_percentile(0.99)) if measured else None,
        "max_ms": float(entry.max_response_time) if measured else None,
        "per_second": entry.total_rps,
    }
