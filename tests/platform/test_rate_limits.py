"""Rate limits: 429 with its headers, per account and per IP, reset, fail-open.

Limits are off in the rest of the suite (conftest.make_settings); each test
here turns them on with small figures. In the distributed run the counters
live in the shared Redis under the test's own prefix, deleted after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from limits.errors import StorageError
from starlette.requests import HTTPConnection

from petpal.platform.app import create_app
from petpal.platform.ratelimit import (
    STORAGE_FAILURES,
    client_ip,
)
from petpal.platform.services import Services
from petpal.platform.settings import Settings
from tests.conftest import requires_redis
from tests.factories import PASSWORD, User, assert_problem
from tests.social.builders import LANDSCAPE, a_member, a_photo

# Generous defaults, so that a test meets only the limit it is about.
ROOMY = {
    "rate_limit_anonymous": "1000/minute",
    "rate_limit_sign_up": "1000/minute",
    "rate_limit_sign_up_attempt": "1000/minute",
    "rate_limit_log_in_ip": "1000/minute",
    "rate_limit_log_in_name": "1000/minute",
    "rate_limit_upload": "1000/minute",
    "rate_limit_post": "1000/minute",
    "rate_limit_like": "1000/minute",
    "rate_limit_comment": "1000/minute",
    "rate_limit_follow": "1000/minute",
    "rate_limit_pet": "1000/minute",
}


@asynccontextmanager
async def limited_app(settings: Settings, **limits: object) -> AsyncIterator[FastAPI]:
    values = {**ROOMY, **limits, "rate_limits_enabled": True}
    # No job runner: uploads are refused or accepted, never processed here.
    values["run_jobs_in_process"] = False
    app = create_app(settings.model_copy(update=values))
    async with app.router.lifespan_context(app):
        yield app


@asynccontextmanager
async def client_from(app: FastAPI, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://petpal.test"
    ) as client:
        yield client


def assert_rate_limited(response: httpx.Response, limit: int) -> None:
    assert_problem(response, 429, "rate_limited")
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit()
    assert int(retry_after) > 0
    assert response.headers["X-RateLimit-Limit"] == str(limit)
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert int(response.headers["X-RateLimit-Reset"]) >= int(time.time())


Action = Callable[[httpx.AsyncClient, User], Awaitable[httpx.Response]]


def _actions(services: Services, photos: Path) -> dict[str, Action]:
    async def post(client: httpx.AsyncClient, user: User) -> httpx.Response:
        media_id = await a_photo(client, user, services, photos)
        return await client.post(
            "/api/v1/posts", json={"media_ids": [media_id]}, headers=user.headers
        )

    async def target_post(client: httpx.AsyncClient) -> str:
        author = await a_member(services)
        media_id = await a_photo(client, author, services, photos)
        services.limiter.enabled = False  # the author's own post is not counted
        try:
            created = await client.post(
                "/api/v1/posts", json={"media_ids": [media_id]}, headers=author.headers
            )
        finally:
            services.limiter.enabled = True
        assert created.status_code == 201, created.text
        return str(created.json()["id"])

    async def like(client: httpx.AsyncClient, user: User) -> httpx.Response:
        post_id = await target_post(client)
        return await client.post(f"/api/v1/posts/{post_id}/like", headers=user.headers)

    async def comment(client: httpx.AsyncClient, user: User) -> httpx.Response:
        post_id = await target_post(client)
        return await client.post(
            f"/api/v1/posts/{post_id}/comments",
            json={"body": "good dog"},
            headers=user.headers,
        )

    async def follow(client: httpx.AsyncClient, user: User) -> httpx.Response:
        other = await a_member(services)
        return await client.post(
            f"/api/v1/accounts/{other.username}/follow", headers=user.headers
        )

    async def upload(client: httpx.AsyncClient, user: User) -> httpx.Response:
        with (photos / LANDSCAPE).open("rb") as f:
            return await client.post(
                "/api/v1/media",
                files={"file": ("photo.jpg", f, "application/octet-stream")},
                headers=user.headers,
            )

    async def pet(client: httpx.AsyncClient, user: User) -> httpx.Response:
        return await client.post(
            "/api/v1/pets",
            json={"name": "Rex", "species": "dog", "available_for_adoption": True},
            headers=user.headers,
        )

    return {
        "post": post,
        "like": like,
        "comment": comment,
        "follow": follow,
        "upload": upload,
        "pet": pet,
    }


@pytest.mark.parametrize(
    "action", ["post", "like", "comment", "follow", "upload", "pet"]
)
async def test_each_account_action_is_refused_past_its_limit(
    settings: Settings, photos: Path, action: str
) -> None:
    async with (
        limited_app(settings, **{f"rate_limit_{action}": "2/hour"}) as app,
        client_from(app, "192.0.2.10") as client,
    ):
        services: Services = app.state.services
        act = _actions(services, photos)[action]
        alice, bob = await a_member(services), await a_member(services)

        for remaining in (1, 0):
            response = await act(client, alice)
            assert response.status_code < 300, response.text
            # Whatever the handler answers: a model, or (follow's bare 204,
            # a post's pre-rendered JSON) a Response of its own.
            assert response.headers["X-RateLimit-Limit"] == "2"
            assert response.headers["X-RateLimit-Remaining"] == str(remaining)
        assert_rate_limited(await act(client, alice), 2)

        # Per account: another one, from the same address, is unaffected.
        assert (await act(client, bob)).status_code < 300


_OPERATIONS = {
    "post": ("post", "/api/v1/posts"),
    "like": ("post", "/api/v1/posts/{post_id}/like"),
    "comment": ("post", "/api/v1/posts/{post_id}/comments"),
    "follow": ("post", "/api/v1/accounts/{username}/follow"),
    "upload": ("post", "/api/v1/media"),
    "pet": ("post", "/api/v1/pets"),
}


async def test_the_schema_declares_the_headers_limited_answers_carry(
    settings: Settings, photos: Path
) -> None:
    """A client generated from the OpenAPI schema can read the quota headers
    where they come, and Retry-After on every 429 and 503."""
    async with (
        limited_app(settings, rate_limit_like="1/hour") as app,
        client_from(app, "192.0.2.11") as client,
    ):
        services: Services = app.state.services
        schema = (await client.get("/openapi.json")).json()
        alice = await a_member(services)
        acts = _actions(services, photos)
        answers: dict[tuple[str, str], list[httpx.Response]] = {}
        for action, act in acts.items():
            answers[_OPERATIONS[action]] = [await act(client, alice)]
        # The like's limit is 1: the second is a 429.
        answers[_OPERATIONS["like"]].append(await acts["like"](client, alice))
        quota = {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}
        for (method, path), responses in answers.items():
            declared = schema["paths"][path][method]["responses"]
            for response in responses:
                headers = declared[str(response.status_code)].get("headers", {})
                assert {name.lower() for name in headers} >= quota, (path, response)
                assert all(name in response.headers for name in headers), path
        assert answers[_OPERATIONS["like"]][-1].status_code == 429

        limited = set(_OPERATIONS.values()) | {
            ("post", "/api/v1/accounts"),
            ("post", "/api/v1/auth/token"),
            ("patch", "/api/v1/posts/{post_id}"),  # an edit counts as posting
            ("patch", "/api/v1/pets/{pet_id}"),  # and as making a pet
            # The password counts as a log-in.
            ("delete", "/api/v1/accounts/me"),
            ("put", "/api/v1/accounts/me/password"),
            ("put", "/api/v1/accounts/me/email"),
        }
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                responses = operation["responses"]
                for status in ("429", "503"):
                    assert "Retry-After" in responses[status]["headers"], path
                # A limited route sends the quota with every answer (a 404,
                # a 422 too), any other only with a 429.
                declaring = {
                    status
                    for status, response in responses.items()
                    if "X-RateLimit-Limit" in response.get("headers", {})
                }
                expected = set(responses) if (method, path) in limited else {"429"}
                assert declaring == expected, (method, path)


async def test_sign_up_is_limited_per_ip(settings: Settings) -> None:
    async with limited_app(settings, rate_limit_sign_up="2/hour") as app:
        async with client_from(app, "192.0.2.20") as client:
            for n in range(2):
                assert (await _sign_up(client, f"crowd_{n}")).status_code == 201
            refused = await _sign_up(client, "crowd_2")
            assert_rate_limited(refused, 2)
        async with client_from(app, "192.0.2.21") as elsewhere:
            assert (await _sign_up(elsewhere, "crowd_2")).status_code == 201


async def test_a_refused_sign_up_leaves_the_sign_up_limit_alone(
    settings: Settings,
) -> None:
    """Found by a trial: a person retyping a password refused as weak was
    locked out of signing up for an hour after five tries."""
    async with (
        limited_app(settings, rate_limit_sign_up="2/hour") as app,
        client_from(app, "192.0.2.22") as client,
    ):
        for _ in range(4):
            weak = await _sign_up(client, "retyper", password="password123")
            assert_problem(weak, 422, "weak_password")
            # What is left, as the refusal left it (found by a trial: it
            # said one fewer, as if the refusal had counted).
            assert weak.headers["X-RateLimit-Remaining"] == "2"
        made = await _sign_up(client, "retyper")
        assert made.status_code == 201, made.text
        assert made.headers["X-RateLimit-Remaining"] == "1"
        # A name or address found taken counts: it probes who is here.
        assert_problem(await _sign_up(client, "retyper"), 409, "username_taken")
        assert_rate_limited(await _sign_up(client, "another"), 2)


async def test_sign_ups_sent_together_make_no_more_accounts_than_the_limit(
    settings: Settings,
) -> None:
    """Found by a trial: 25 sign-ups sent at once all found the last slot
    of 5 free, and made 25 accounts."""
    async with (
        limited_app(settings, rate_limit_sign_up="2/hour") as app,
        client_from(app, "192.0.2.25") as client,
    ):
        answers = await asyncio.gather(
            *(_sign_up(client, f"crowd_{n}") for n in range(6))
        )
        assert sorted(a.status_code for a in answers) == [201, 201] + [429] * 4


async def test_an_address_change_counts_as_a_sign_up(settings: Settings) -> None:
    """Found by a trial: changing one's address told whether another
    account had an address (409 or 200) well past the sign-up limit."""
    async with (
        limited_app(settings, rate_limit_sign_up="2/hour") as app,
        client_from(app, "192.0.2.26") as client,
    ):
        assert (await _sign_up(client, "prober")).status_code == 201
        tokens = await _log_in(client, "prober", PASSWORD)
        headers = {"Authorization": f"Bearer {tokens.json()['access_token']}"}

        async def change(email: str) -> httpx.Response:
            return await client.put(
                "/api/v1/accounts/me/email",
                headers=headers,
                json={"email": email, "password": PASSWORD},
            )

        assert (await change("probe_1@example.org")).status_code == 200
        # The account's own address, retyped, probes nothing: not charged.
        retyped = await change("Probe_1@Example.org")
        assert retyped.status_code == 200
        assert retyped.json()["email"] == "Probe_1@Example.org"
        assert_rate_limited(await change("probe_2@example.org"), 2)
        # A refused address is no probe, and does not count.
        assert_problem(await change("x@@example.org"), 422, "invalid_email")
        # Once limited, the own address still is not charged (nor refused).
        assert (await change("probe_1@example.org")).status_code == 200


async def test_every_sign_up_attempt_counts_against_the_attempt_limit(
    settings: Settings,
) -> None:
    async with limited_app(settings, rate_limit_sign_up_attempt="3/hour") as app:
        async with client_from(app, "192.0.2.23") as client:
            for _ in range(3):
                weak = await _sign_up(client, "scripted", password="password123")
                assert_problem(weak, 422, "weak_password")
            assert_rate_limited(await _sign_up(client, "scripted"), 3)
        # Malformed bodies are attempts too.
        async with client_from(app, "192.0.2.24") as other:
            for _ in range(3):
                malformed = await other.post("/api/v1/accounts", json={"x": 1})
                assert_problem(malformed, 422)
            assert_rate_limited(await _sign_up(other, "scripted"), 3)


async def _sign_up(
    client: httpx.AsyncClient, name: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post(
        "/api/v1/accounts",
        json={
            "username": name,
            "email": f"{name}@example.org",
            "password": password,
            "display_name": name,
        },
    )


async def _log_in(
    client: httpx.AsyncClient, login: str, password: str | None = None
) -> httpx.Response:
    password = password or "not the password"
    return await client.post(
        "/api/v1/auth/token", json={"login": login, "password": password}
    )


async def test_log_in_is_limited_per_ip_whatever_the_login(settings: Settings) -> None:
    async with limited_app(settings, rate_limit_log_in_ip="3/minute") as app:
        async with client_from(app, "192.0.2.30") as client:
            for n in range(3):
                assert (await _log_in(client, f"nobody_{n}")).status_code == 401
            assert_rate_limited(await _log_in(client, "nobody_3"), 3)
        async with client_from(app, "192.0.2.31") as elsewhere:
            assert (await _log_in(elsewhere, "nobody_3")).status_code == 401


async def test_log_in_is_limited_per_login_alike_for_known_and_unknown(
    settings: Settings,
) -> None:
    async with limited_app(settings, rate_limit_log_in_name="3/minute") as app:
        async with client_from(app, "192.0.2.40") as client:
            # Signed up, never logged in: its login has no attempts yet.
            assert (await _sign_up(client, "known_owner")).status_code == 201

        async def attempts(login: str) -> list[tuple[int, str | None, set[str]]]:
            seen = []
            # From a new address each time: only the per-login limit applies.
            # In any spelling the log-in itself accepts (found by a trial:
            # full-width letters had a bucket of their own).
            wide = "".join(chr(ord(c) + 0xFEE0) for c in login)
            spellings = [login, login.upper(), f" {wide} ", login[:3] + wide[3:]]
            for n, spelled in enumerate(spellings):
                async with client_from(app, f"198.51.100.{n + 1}") as client:
                    response = await _log_in(client, spelled)
                code = response.json().get("code")
                limit_headers = {h for h in response.headers if h.startswith("x-rate")}
                seen.append((response.status_code, code, limit_headers))
            return seen

        for_known = await attempts("known_owner")
        for_unknown = await attempts("no_such_owner")

    assert for_known == for_unknown
    assert [status for status, _, _ in for_known] == [401, 401, 401, 429]
    # The right password does not get past a spent limit either.
    async with client_from(app, "198.51.100.9") as client:
        assert_rate_limited(await _log_in(client, "known_owner", PASSWORD), 3)
        wide = "ｋｎｏｗｎ_ｏｗｎｅｒ"
        assert_rate_limited(await _log_in(client, wide, PASSWORD), 3)
        # Nor its e-mail address, which names the same account (found by a
        # trial: it had a bucket of its own, twice the guesses a minute).
        email = "Known_Owner@example.org"
        assert_rate_limited(await _log_in(client, email, PASSWORD), 3)


async def test_a_password_asked_again_counts_as_a_log_in(settings: Settings) -> None:
    """Deleting an account asks its password: a stolen access token must
    guess it no faster there than at the log-in, whose per-name limit it
    shares."""
    async with limited_app(settings, rate_limit_log_in_name="3/minute") as app:
        async with client_from(app, "192.0.2.60") as client:
            assert (await _sign_up(client, "careful_owner")).status_code == 201
            token = (await _log_in(client, "careful_owner", PASSWORD)).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        statuses = []
        for n in range(3):  # each from another address: the name's limit
            async with client_from(app, f"203.0.113.{n + 1}") as client:
                answer = await client.request(
                    "DELETE",
                    "/api/v1/accounts/me",
                    headers=headers,
                    json={"password": "a wrong guess"},
                )
                statuses.append(answer.status_code)
        assert statuses == [401, 401, 429]
        async with client_from(app, "203.0.113.9") as client:
            assert_rate_limited(await _log_in(client, "careful_owner", PASSWORD), 3)


async def test_the_window_frees_as_it_moves(settings: Settings, photos: Path) -> None:
    async with (
        # Three seconds, not one: on a busy machine two comments can take
        # longer than a second, and the third would then be allowed.
        limited_app(settings, rate_limit_comment="2/3seconds") as app,
        client_from(app, "192.0.2.50") as client,
    ):
        services: Services = app.state.services
        comment = _actions(services, photos)["comment"]
        alice = await a_member(services)
        for _ in range(2):
            assert (await comment(client, alice)).status_code == 201
        assert_rate_limited(await comment(client, alice), 2)

        await asyncio.sleep(3.1)
        assert (await comment(client, alice)).status_code == 201


async def test_anonymous_requests_are_limited_per_ip(settings: Settings) -> None:
    async with limited_app(settings, rate_limit_anonymous="3/minute") as app:
        services: Services = app.state.services
        member = await a_member(services)
        async with client_from(app, "192.0.2.60") as client:
            for _ in range(3):
                response = await client.get("/api/v1/feed/public")
                assert response.status_code == 200
            assert_rate_limited(await client.get("/api/v1/feed/public"), 3)
            assert_rate_limited(await client.get("/api/v1/no/such/route"), 3)
            # Outside the API, and signed in, nothing is charged to the address.
            assert (await client.get("/healthz")).status_code == 200
            signed_in = await client.get("/api/v1/feed/public", headers=member.headers)
            assert signed_in.status_code == 200
            bogus = {"Authorization": "Bearer not-a-token"}
            assert_rate_limited(
                await client.get("/api/v1/feed/public", headers=bogus), 3
            )
        async with client_from(app, "192.0.2.61") as elsewhere:
            assert (await elsewhere.get("/api/v1/feed/public")).status_code == 200


@pytest.mark.parametrize(
    "failure",
    [StorageError(ConnectionError("redis is down")), ConnectionRefusedError()],
    ids=["wrapped", "socket"],
)
async def test_a_failing_storage_lets_requests_through(
    settings: Settings,
    photos: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:
    async with (
        # A bypass far longer than the three posts take, however busy the
        # machine: the count below must not depend on its speed.
        limited_app(
            settings, rate_limit_post="1/hour", cache_bypass_after_error_seconds=60
        ) as app,
        client_from(app, "192.0.2.70") as client,
    ):
        services: Services = app.state.services
        alice = await a_member(services)

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise failure

        for method in ("acquire_entry", "get_moving_window"):
            monkeypatch.setattr(services.limiter.storage, method, broken)
        failures_before = STORAGE_FAILURES._value.get()

        post = _actions(services, photos)["post"]
        for _ in range(3):  # past the limit of 1: nothing can count
            response = await post(client, alice)
            assert response.status_code == 201, response.text
            assert "X-RateLimit-Limit" not in response.headers
        # Counted once; the limiter then leaves the storage alone for a moment.
        assert STORAGE_FAILURES._value.get() == failures_before + 1


async def test_limits_can_be_switched_off(settings: Settings, photos: Path) -> None:
    async with limited_app(settings, rate_limit_post="1/hour") as app:
        services: Services = app.state.services
        services.limiter.enabled = False
        alice = await a_member(services)
        async with client_from(app, "192.0.2.80") as client:
            post = _actions(services, photos)["post"]
            for _ in range(2):
                assert (await post(client, alice)).status_code == 201


def _connection(peer: str, forwarded: str | None = None) -> HTTPConnection:
    headers = [] if forwarded is None else [(b"x-forwarded-for", forwarded.encode())]
    return HTTPConnection(
        {"type": "http", "client": (peer, 1234), "headers": headers, "path": "/"}
    )


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    proxies = ["10.0.0.0/8"]
    assert client_ip(_connection("203.0.113.5", "1.2.3.4"), proxies) == "203.0.113.5"
    assert client_ip(_connection("10.1.1.1", "1.2.3.4"), []) == "10.1.1.1"
    # The rightmost untrusted hop; what the client wrote to its left is ignored.
    forwarded = "6.6.6.6, 198.51.100.7, 10.2.2.2"
    assert client_ip(_connection("10.1.1.1", forwarded), proxies) == "198.51.100.7"
    assert client_ip(_connection("10.1.1.1"), proxies) == "10.1.1.1"


def test_ipv6_clients_are_counted_per_64() -> None:
    first = client_ip(_connection("2001:db8:1:2::1"), [])
    second = client_ip(_connection("2001:db8:1:2:ffff::9"), [])
    other = client_ip(_connection("2001:db8:1:3::1"), [])
    assert first == second == "2001:db8:1:2::/64"
    assert other != first


def test_a_malformed_limit_fails_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rate_limit_post"):
        Settings(data_dir=tmp_path, rate_limit_post="lots per hour")


@requires_redis
async def test_replicas_share_their_counts_through_redis(settings: Settings) -> None:
    async with (
        limited_app(settings, rate_limit_log_in_ip="2/minute") as one,
        limited_app(settings, rate_limit_log_in_ip="2/minute") as other,
    ):
        async with client_from(one, "192.0.2.90") as client:
            for _ in range(2):
                assert (await _log_in(client, "someone")).status_code == 401
        async with client_from(other, "192.0.2.90") as client:
            assert_rate_limited(await _log_in(client, "someone"), 2)


async def test_pet_edits_count_as_pets(settings: Settings) -> None:
    """Found by a trial: 150 pets made in two seconds filled the adoption
    listing, and listing one again moved it to the top, as often as asked."""
    async with (
        limited_app(settings, rate_limit_pet="3/hour") as app,
        client_from(app, "192.0.2.27") as client,
    ):
        alice = await a_member(app.state.services)
        made = await client.post(
            "/api/v1/pets",
            json={"name": "Scout", "species": "dog", "available_for_adoption": True},
            headers=alice.headers,
        )
        assert made.status_code == 201
        path = f"/api/v1/pets/{made.json()['id']}"
        for listed in (False, True):
            relisted = await client.patch(
                path, json={"available_for_adoption": listed}, headers=alice.headers
            )
            assert relisted.status_code == 200
        refused = await client.patch(
            path, json={"available_for_adoption": False}, headers=alice.headers
        )
        assert_rate_limited(refused, 3)
        # Reading and deleting are not limited.
        assert (await client.get(path)).status_code == 200
        assert (await client.delete(path, headers=alice.headers)).status_code == 204
