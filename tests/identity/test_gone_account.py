"""A valid access token whose account does not exist is a 401 everywhere.

Tokens are checked by their signature alone, so one can outlive its account
(a database restored from before the account was made, under the same key).
Found by a trial: such a token's writes were 500s (a foreign key failed), or
404s that blamed the post being liked.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from petpal.platform.ids import new_id
from petpal.platform.security import AccessClaims, issue_access_token
from petpal.platform.services import Services
from tests.factories import a_user, assert_problem
from tests.social.builders import a_photo, a_post


async def test_a_token_for_an_account_that_is_not_there_is_refused(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    author = await a_user(client)
    post = await a_post(client, author, await a_photo(client, author, services, photos))
    ghost = issue_access_token(
        services.secret, AccessClaims(new_id(), "ghost"), ttl_seconds=600
    )
    headers = {"Authorization": f"Bearer {ghost}"}
    with (photos / "edge-cases" / "jpeg_1x1_with_gps.jpg").open("rb") as photo:
        upload = await client.post(
            "/api/v1/media", files={"file": ("a.jpg", photo)}, headers=headers
        )
    attempts = {
        "create a pet": client.post(
            "/api/v1/pets", json={"name": "Rex", "species": "dog"}, headers=headers
        ),
        "like": client.post(f"/api/v1/posts/{post['id']}/like", headers=headers),
        "comment": client.post(
            f"/api/v1/posts/{post['id']}/comments",
            json={"body": "hello"},
            headers=headers,
        ),
        "follow": client.post(
            f"/api/v1/accounts/{author.username}/follow", headers=headers
        ),
        "read me": client.get("/api/v1/accounts/me", headers=headers),
        "change me": client.patch(
            "/api/v1/accounts/me", json={"bio": "hi"}, headers=headers
        ),
    }
    answers = {"upload a photo": upload}
    for what, attempt in attempts.items():
        answers[what] = await attempt
    for what, response in answers.items():
        problem = assert_problem(response, 401, "unauthorized")
        assert "does not exist" in problem["detail"], (what, problem)
        assert response.headers["www-authenticate"] == "Bearer", what
    # Nothing was written in its name, nor kept: the upload's bytes are gone
    # from storage (found by a trial: they stayed until a sweep).
    stored = [batch async for batch in services.storage.list_objects("incoming/")]
    assert stored == [], stored
    liked = await client.get(f"/api/v1/posts/{post['id']}")
    assert liked.json()["like_count"] == 0
    assert liked.json()["comment_count"] == 0
