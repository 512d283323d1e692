"""An account's owner changes its password or its e-mail address.

Found by a trial: there was no way to do either, so a password once
leaked stayed the account's, and an address given up logged in for ever.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from petpal.identity import service
from petpal.identity.models import Account
from petpal.platform.security import hash_password
from petpal.platform.services import Services
from tests.factories import PASSWORD, User, a_user, assert_problem

PASSWORD_URL = "/api/v1/accounts/me/password"
EMAIL_URL = "/api/v1/accounts/me/email"
NEW_PASSWORD = "a kettle of wet spaniels"


async def _change_password(
    client: httpx.AsyncClient,
    user: User,
    current: str = PASSWORD,
    new: str = NEW_PASSWORD,
) -> httpx.Response:
    return await client.put(
        PASSWORD_URL,
        headers=user.headers,
        json={"current_password": current, "new_password": new},
    )


async def _change_email(
    client: httpx.AsyncClient, user: User, email: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.put(
        EMAIL_URL, headers=user.headers, json={"email": email, "password": password}
    )


async def _log_in(
    client: httpx.AsyncClient, login: str, password: str
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/token", json={"login": login, "password": password}
    )


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": token})


async def test_a_new_password_logs_in_and_ends_every_other_session(
    client: httpx.AsyncClient,
) -> None:
    maya = await a_user(client)
    other_device = (await _log_in(client, maya.username, PASSWORD)).json()
    changed = await _change_password(client, maya)
    assert changed.status_code == 200, changed.text
    pair = changed.json()
    # The old password is no longer it; the new one is.
    assert_problem(
        await _log_in(client, maya.username, PASSWORD), 401, "invalid_credentials"
    )
    assert (await _log_in(client, maya.username, NEW_PASSWORD)).status_code == 200
    # Every session made before the change is over, on every device.
    for before in (maya.refresh_token, other_device["refresh_token"]):
        assert_problem(await _refresh(client, before), 401, "invalid_refresh_token")
    # The answer's pair goes on.
    renewed = await _refresh(client, pair["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    me = await client.get(
        "/api/v1/accounts/me",
        headers={"Authorization": f"Bearer {pair['access_token']}"},
    )
    assert me.json()["username"] == maya.username


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        # The current password is asked again: a token alone is not enough.
        (
            {"current_password": "not it at all", "new_password": NEW_PASSWORD},
            401,
            "invalid_credentials",
        ),
        # The new one is judged as at sign-up.
        ({"current_password": PASSWORD, "new_password": "short"}, 422, None),
        (
            {"current_password": PASSWORD, "new_password": "password123"},
            422,
            "weak_password",
        ),
        ({"current_password": PASSWORD}, 422, None),
        ({"current_password": PASSWORD, "new_password": 12345678}, 422, None),
    ],
)
async def test_a_password_change_refused_changes_nothing(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, code: str | None
) -> None:
    maya = await a_user(client)
    refused = await client.put(PASSWORD_URL, headers=maya.headers, json=body)
    assert_problem(refused, status, code)
    assert (await _log_in(client, maya.username, PASSWORD)).status_code == 200
    assert (await _refresh(client, maya.refresh_token)).status_code == 200


async def test_a_new_password_made_of_the_accounts_details_is_weak(
    client: httpx.AsyncClient,
) -> None:
    maya = await a_user(client, "lena_whitmore")
    refused = await _change_password(client, maya, new="lena_whitmore")
    problem = assert_problem(refused, 422, "weak_password")
    assert "username" in problem["detail"], problem


async def test_a_password_change_needs_a_token(client: httpx.AsyncClient) -> None:
    refused = await client.put(
        PASSWORD_URL,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert_problem(refused, 401)


async def test_a_log_in_verified_before_a_change_makes_no_session(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log-in checks the password, then makes its session; a change that
    lands between the two (which ends every session) must keep it out."""
    maya = await a_user(client)
    await _during_a_password_change(services, monkeypatch, maya)
    refused = await _log_in(client, maya.username, PASSWORD)
    assert_problem(refused, 401, "invalid_credentials")


async def test_a_new_address_logs_in_and_the_old_one_no_more(
    client: httpx.AsyncClient,
) -> None:
    maya = await a_user(client)
    old = f"{maya.username}@example.org"
    changed = await _change_email(client, maya, "Maya.New@ÉXAMPLE.org")
    assert changed.status_code == 200, changed.text
    assert changed.json()["email"] == "Maya.New@ÉXAMPLE.org"
    me = await client.get("/api/v1/accounts/me", headers=maya.headers)
    assert me.json()["email"] == "Maya.New@ÉXAMPLE.org"
    # Any spelling of the new address logs in; the old one is free again.
    assert (await _log_in(client, "maya.new@xn--xample-9ua.org", PASSWORD)).is_success
    assert_problem(await _log_in(client, old, PASSWORD), 401, "invalid_credentials")
    someone = await client.post(
        "/api/v1/accounts",
        json={
            "username": "takes_the_old",
            "email": old,
            "password": PASSWORD,
            "display_name": "Takes",
        },
    )
    assert someone.status_code == 201, someone.text


@pytest.mark.parametrize(
    ("email", "password", "status", "code"),
    [
        ("x@@example.org", PASSWORD, 422, "invalid_email"),
        ("x@demo.petpal.invalid", PASSWORD, 422, "invalid_email"),
        ("fresh@example.org", "not it at all", 401, "invalid_credentials"),
        ("TAKEN@example.org", PASSWORD, 409, "email_taken"),
    ],
)
async def test_an_address_change_refused_changes_nothing(
    client: httpx.AsyncClient, email: str, password: str, status: int, code: str
) -> None:
    await a_user(client, "taken")
    maya = await a_user(client)
    refused = await _change_email(client, maya, email, password)
    assert_problem(refused, status, code)
    me = await client.get("/api/v1/accounts/me", headers=maya.headers)
    assert me.json()["email"] == f"{maya.username}@example.org"


async def test_an_address_changed_to_its_own_other_spelling_is_kept(
    client: httpx.AsyncClient,
) -> None:
    """The account's own address in another case is not another's (409)."""
    maya = await a_user(client)
    changed = await _change_email(client, maya, f"{maya.username.upper()}@Example.ORG")
    assert changed.status_code == 200, changed.text
    assert changed.json()["email"] == f"{maya.username.upper()}@Example.ORG"


async def test_a_refresh_at_the_moment_of_a_change_makes_no_lasting_session(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh that has found its token valid when a change lands: its
    new pair must end with the others (found in review, on PostgreSQL: the
    change's revocation did not see the token inserted after it)."""
    maya = await a_user(client)
    hashed = asyncio.Event()
    hash_password_of = service.hash_password
    loop = asyncio.get_running_loop()
    get = AsyncSession.get
    pending: list[asyncio.Task[httpx.Response]] = []

    def hash_then_say(password: str) -> str:
        made = hash_password_of(password)  # in a thread of its own
        loop.call_soon_threadsafe(hashed.set)
        return made

    async def get_during_a_change(
        session: AsyncSession, entity: Any, ident: Any, **kwargs: Any
    ) -> Any:
        # The refresh reads the account once its token is found valid, the
        # last step before its new pair; the change starts there, once.
        if entity is Account and not pending:
            pending.append(asyncio.create_task(_change_password(client, maya)))
            await hashed.wait()
            # Time for the change to commit, unless the refresh holds it.
            await asyncio.sleep(0.3)
        return await get(session, entity, ident, **kwargs)

    monkeypatch.setattr(service, "hash_password", hash_then_say)
    monkeypatch.setattr(AsyncSession, "get", get_during_a_change)
    renewed = await _refresh(client, maya.refresh_token)
    assert renewed.status_code == 200, renewed.text
    changed = await pending[0]
    assert changed.status_code == 200, changed.text
    # The change ended every session, the one the refresh made included.
    later = await _refresh(client, renewed.json()["refresh_token"])
    assert_problem(later, 401, "invalid_refresh_token")


async def _during_a_password_change(
    services: Services, monkeypatch: pytest.MonkeyPatch, user: User
) -> None:
    """Make the next password check of ``user`` be followed at once by a
    change of their password, committed as another request would."""
    verify = service.verify_password
    loop = asyncio.get_running_loop()

    async def change() -> None:
        async with services.db.write_session() as session:
            await session.execute(
                update(Account)
                .where(Account.id == user.id)
                .values(password_hash=hash_password(NEW_PASSWORD))
            )

    def verify_then_change(stored: str | None, given: str) -> Any:
        verdict = verify(stored, given)
        monkeypatch.setattr(service, "verify_password", verify)
        asyncio.run_coroutine_threadsafe(change(), loop).result(timeout=30)
        return verdict

    monkeypatch.setattr(service, "verify_password", verify_then_change)


async def test_an_address_change_checked_against_a_password_changed_since_fails(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a trial: address changes sent with the old password during
    a password change all went through."""
    maya = await a_user(client)
    await _during_a_password_change(services, monkeypatch, maya)
    refused = await _change_email(client, maya, "elsewhere@example.org")
    assert_problem(refused, 401, "invalid_credentials")
    me = await client.get("/api/v1/accounts/me", headers=maya.headers)
    assert me.json()["email"] == f"{maya.username}@example.org"


async def test_a_deletion_checked_against_a_password_changed_since_fails(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    maya = await a_user(client)
    await _during_a_password_change(services, monkeypatch, maya)
    refused = await client.request(
        "DELETE",
        "/api/v1/accounts/me",
        headers=maya.headers,
        json={"password": PASSWORD},
    )
    assert_problem(refused, 401, "invalid_credentials")
    assert (await _log_in(client, maya.username, NEW_PASSWORD)).status_code == 200


@pytest.mark.parametrize("around", [" ", "\n", "\t", "\u00a0", "\u3000"])
async def test_spaces_around_a_new_address_are_trimmed(
    client: httpx.AsyncClient, around: str
) -> None:
    maya = await a_user(client)
    changed = await _change_email(client, maya, f"{around}moved@example.org{around}")
    assert changed.status_code == 200, changed.text
    assert changed.json()["email"] == "moved@example.org"


@pytest.mark.parametrize("around", ["\x1c", "\x85", "\u2028", "\u200b"])
async def test_other_characters_around_an_address_are_refused(
    client: httpx.AsyncClient, around: str
) -> None:
    """Found by a trial: these were dropped unsaid at either end, and
    refused inside."""
    maya = await a_user(client)
    refused = await _change_email(client, maya, f"{around}moved@example.org")
    assert_problem(refused, 422, "invalid_email")
