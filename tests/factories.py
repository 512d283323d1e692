"""Small builders named for what they make, used by the API tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client import REGISTRY

from petpal.platform.services import Services

_counter = itertools.count(1)
PASSWORD = "correct horse battery staple"


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    """Check that ``response`` is an RFC 9457 problem with this status (and code)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert isinstance(body["code"], str)
    if code is not None:
        assert body["code"] == code, body
    return body


@dataclass
class User:
    id: str
    username: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def a_user(client: httpx.AsyncClient, username: str | None = None) -> User:
    """Sign up and log in a fresh account."""
    name = username or f"user_{next(_counter)}"
    response = await client.post(
        "/api/v1/accounts",
        json={
            "username": name,
            "email": f"{name}@example.org",
            "password": PASSWORD,
            "display_name": name.title(),
        },
    )
    assert response.status_code == 201, response.text
    account = response.json()
    tokens = await client.post(
        "/api/v1/auth/token", json={"login": name, "password": PASSWORD}
    )
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    return User(
        account["id"], account["username"], body["access_token"], body["refresh_token"]
    )


async def drain_jobs(services: Services) -> None:
    assert services.relay is not None
    await services.relay.drain()


async def an_uploaded_photo(
    client: httpx.AsyncClient, user: User, path: Path, services: Services | None = None
) -> dict[str, Any]:
    """Upload ``path`` as ``user``; with ``services``, wait until it is processed."""
    with path.open("rb") as f:
        response = await client.post(
            "/api/v1/media",
            headers=user.headers,
            files={"file": (path.name, f, "application/octet-stream")},
        )
    assert response.status_code == 202, response.text
    media: dict[str, Any] = response.json()
    if services is not None:
        await drain_jobs(services)
        fetched = await client.get(f"/api/v1/media/{media['id']}", headers=user.headers)
        media = fetched.json()
    return media


async def a_ready_photo(
    client: httpx.AsyncClient, user: User, services: Services, path: Path
) -> str:
    media = await an_uploaded_photo(client, user, path, services)
    assert media["status"] == "ready", media
    return str(media["id"])


async def variant_paths(client: httpx.AsyncClient, media_id: str) -> list[str]:
    """The paths a ready photo's sizes are served at."""
    details = await client.get(f"/api/v1/media/{media_id}")
    assert details.status_code == 200, details.text
    return [urlsplit(v["url"]).path for v in details.json()["variants"]]


async def page_ids(
    client: httpx.AsyncClient, url: str, **params: Any
) -> tuple[list[str], str | None]:
    """The ids of one page of a list and its next cursor (the page must be 200)."""
    response = await client.get(url, params=params)
    assert response.status_code == 200, response.text
    page = response.json()
    return [item["id"] for item in page["items"]], page["next_cursor"]


def queries_on(route: str) -> float:
    """SQL statements counted so far on requests to ``route`` (its template).

    Counted per request, so the job relay's own polling does not show up;
    the metric is process-wide, so a test compares two readings.
    """
    value = REGISTRY.get_sample_value(
        "petpal_http_request_db_queries_sum", {"route": route}
    )
    return value or 0.0
