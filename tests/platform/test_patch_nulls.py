"""A PATCH body's schema says which fields may be null, as the server does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from petpal.platform.services import Services
from tests.factories import a_user, assert_problem
from tests.social.builders import a_photo, a_post


def _nullable(schema: dict[str, Any]) -> bool:
    return any(branch.get("type") == "null" for branch in schema.get("anyOf", ()))


async def test_each_patch_field_takes_null_exactly_when_its_schema_says(
    client: httpx.AsyncClient, services: Services, photos: Path
) -> None:
    """Found by a trial: ``species``, a pet's name and an account's display
    name were nullable in the schema, and the server refused the null."""
    owner = await a_user(client)
    pet = await client.post(
        "/api/v1/pets",
        json={"name": "Rex", "species": "dog"},
        headers=owner.headers,
    )
    assert pet.status_code == 201, pet.text
    post = await a_post(client, owner, await a_photo(client, owner, services, photos))
    ids = {"{pet_id}": pet.json()["id"], "{post_id}": post["id"]}
    schema = (await client.get("/openapi.json")).json()
    models = schema["components"]["schemas"]
    checked = []
    for path, operations in schema["paths"].items():
        if "patch" not in operations:
            continue
        url = path
        for name, value in ids.items():
            url = url.replace(name, value)
        assert "{" not in url, f"no object made for {path}"
        body = operations["patch"]["requestBody"]["content"]["application/json"]
        model = models[body["schema"]["$ref"].rsplit("/", 1)[-1]]
        for field, field_schema in model["properties"].items():
            response = await client.patch(
                url, json={field: None}, headers=owner.headers
            )
            if _nullable(field_schema):
                assert response.status_code == 200, (path, field, response.text)
            else:
                assert "default" not in field_schema, (path, field)
                problem = assert_problem(response, 422, "validation_failed")
                assert field in problem["detail"], (path, field, problem)
            checked.append((path, field, _nullable(field_schema)))
    assert {(p, f) for p, f, nullable in checked if not nullable} >= {
        ("/api/v1/accounts/me", "display_name"),
        ("/api/v1/pets/{pet_id}", "name"),
        ("/api/v1/pets/{pet_id}", "species"),
        ("/api/v1/pets/{pet_id}", "available_for_adoption"),
        ("/api/v1/posts/{post_id}", "caption"),
    }
    assert ("/api/v1/pets/{pet_id}", "bio", True) in checked


async def test_a_bad_value_of_a_field_that_is_never_null_is_told_plainly(
    client: httpx.AsyncClient,
) -> None:
    """Found by a trial: such a field's error named pydantic's branches
    ("display_name.function-after[check_name(), ...]") and came with a
    second, wrong one ("Input should be None")."""
    owner = await a_user(client)
    pet = await client.post(
        "/api/v1/pets", json={"name": "Rex", "species": "dog"}, headers=owner.headers
    )
    for url, body, field in [
        ("/api/v1/accounts/me", {"display_name": ""}, "display_name"),
        (f"/api/v1/pets/{pet.json()['id']}", {"name": ""}, "name"),
        (f"/api/v1/pets/{pet.json()['id']}", {"species": "cow"}, "species"),
        (f"/api/v1/pets/{pet.json()['id']}", {"available_for_adoption": 2}, None),
    ]:
        response = await client.patch(url, json=body, headers=owner.headers)
        problem = assert_problem(response, 422, "validation_failed")
        field = field or next(iter(body))
        assert len(problem["errors"]) == 1, problem
        assert problem["errors"][0]["location"] == ["body", field], problem
        assert problem["detail"].startswith(f"{field}: "), problem
