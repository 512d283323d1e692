from __future__ import annotations

import re

import httpx
import orjson
import pytest

from petpal.platform.cache import CacheBackendError
from petpal.platform.services import Services
from tests.factories import PASSWORD, a_user, assert_problem


async def test_liveness_readiness_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["database"] == checks["storage"] == "ok"
    assert checks.get("cache", "ok") == "ok"  # only a Redis cache is pinged
    await client.get("/api/v1/accounts/nobody")
    metrics = (await client.get("/metrics")).text
    assert "petpal_http_request_duration_seconds_bucket" in metrics
    assert 'route="/api/v1/accounts/{username}"' in metrics, [
        line for line in metrics.splitlines() if "duration_seconds_count" in line
    ]
    assert "petpal_outbox_backlog" in metrics
    assert "petpal_cache_requests_total" in metrics


async def test_unknown_routes_and_methods_are_problems(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = await client.put("/api/v1/accounts/me")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"
    # Allow names every method of the path (RFC 9110), not the first route's.
    for path, allowed in (
        ("/api/v1/accounts/me", "DELETE, GET, HEAD, PATCH"),
        ("/api/v1/posts/01JZ0000000000000000000000/like", "DELETE, POST"),
        ("/api/v1/posts/01JZ0000000000000000000000", "DELETE, GET, HEAD, PATCH"),
        ("/api/v1/pets/01JZ0000000000000000000000", "DELETE, GET, HEAD, PATCH"),
    ):
        answer = await client.request("OPTIONS", path)
        assert answer.status_code == 405, path
        assert answer.headers["allow"] == allowed, path


async def test_a_path_named_whole_is_its_own_routes_alone(
    client: httpx.AsyncClient,
) -> None:
    """Found by a trial: /pets/{pet_id} took the methods /pets/of-the-day
    does not, so a DELETE was a 404 "the pet was not found", and a PUT's
    405 named the other route's methods."""
    user = await a_user(client)
    path = "/api/v1/pets/of-the-day"
    for method in ("DELETE", "PATCH", "PUT", "POST", "OPTIONS"):
        answer = await client.request(method, path, headers=user.headers, json={})
        assert_problem(answer, 405, "method_not_allowed")
        assert answer.headers["allow"] == "GET, HEAD", method
    # The route's own methods still reach it.
    assert (await client.head(path)).status_code in (200, 404)


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "abc123"})
    assert response.headers["x-request-id"] == "abc123"
    assert len((await client.get("/healthz")).headers["x-request-id"]) == 16
    # Found by a trial: other bytes were echoed (re-encoded) into the answer
    # and the logs. Such an id is replaced by one of ours.
    for given in (b"\xff\xfe" + b"a" * 60, b"a" * 65, b"has space", b"tab\there"):
        response = await client.get("/healthz", headers=[(b"X-Request-ID", given)])
        answered = response.headers["x-request-id"]
        assert len(answered) == 16, given
        assert answered.encode() != given
    uuid = "0b7c5d1e-8f34-4e5a-9c2b-7d1f3a6e9b40"
    assert (await client.get("/healthz", headers={"X-Request-ID": uuid})).headers[
        "x-request-id"
    ] == uuid


async def test_no_cache_keeps_an_answer_of_the_api(client: httpx.AsyncClient) -> None:
    """Found by a trial: tokens, home feeds and posts with ``liked_by_me``
    carried no Cache-Control, so a shared cache could keep one person's
    answer and give it to another."""
    user = await a_user(client)
    answers = [
        await client.post(
            "/api/v1/auth/token", json={"login": user.username, "password": PASSWORD}
        ),
        await client.get("/api/v1/accounts/me", headers=user.headers),
        await client.get("/api/v1/feed/home", headers=user.headers),
        await client.get("/api/v1/feed/public"),
        await client.get("/api/v1/no/such/route"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 404]
    for answer in answers:
        assert answer.headers.get_list("cache-control") == ["no-store"], answer.url
    # Outside the API, answers keep their own rules: a photo's file is
    # immutable, and health checks say nothing.
    assert "cache-control" not in (await client.get("/healthz")).headers


async def test_openapi_documents_the_api(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in ("/api/v1/accounts", "/api/v1/auth/token", "/api/v1/media"):
        assert path in schema["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_openapi_says_which_routes_need_a_token(
    client: httpx.AsyncClient,
) -> None:
    """Found by a trial: the schema had no security scheme, so /docs had no
    Authorize button and nothing told which routes need a token."""
    schema = (await client.get("/openapi.json")).json()
    scheme = schema["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    paths = schema["paths"]
    needed, optional = [{"bearerAuth": []}], [{"bearerAuth": []}, {}]
    assert paths["/api/v1/feed/home"]["get"]["security"] == needed
    assert paths["/api/v1/posts"]["post"]["security"] == needed
    assert paths["/api/v1/feed/public"]["get"]["security"] == optional
    assert paths["/api/v1/posts/{post_id}"]["get"]["security"] == optional
    assert "security" not in paths["/api/v1/auth/token"]["post"]
    # Each route that says it needs a token answers 401 without one.
    user = await a_user(client)
    post = await client.get("/api/v1/feed/home", headers=user.headers)
    assert post.status_code == 200
    assert_problem(await client.get("/api/v1/feed/home"), 401)


async def test_openapi_401s_say_what_each_route_refuses(
    client: httpx.AsyncClient,
) -> None:
    """Found by a trial: sign-up, log-in, refresh and log-out listed a 401
    for an access-token problem, though none of them reads one. A route
    that takes no token lists a 401 only where it answers one, saying why;
    each 401 keeps the problem document's schema."""
    paths = (await client.get("/openapi.json")).json()["paths"]

    def said_401(path: str, method: str) -> str | None:
        answer = paths[f"/api/v1{path}"][method]["responses"].get("401")
        if answer is None:
            return None
        assert "application/problem+json" in answer["content"], (path, method)
        return str(answer["description"])

    assert said_401("/accounts", "post") is None
    assert said_401("/auth/logout", "post") is None
    assert "password is wrong" in (said_401("/auth/token", "post") or "")
    assert "refresh token" in (said_401("/auth/refresh", "post") or "")
    assert "access token" in (said_401("/feed/home", "get") or "")
    assert "password" in (said_401("/accounts/me", "delete") or "")
    # What the schema says is what the routes answer.
    await a_user(client, "schema401")
    wrong = {"login": "schema401", "password": "not the password at all"}
    assert_problem(await client.post("/api/v1/auth/token", json=wrong), 401)
    spent = {"refresh_token": "no-such-token"}
    assert_problem(await client.post("/api/v1/auth/refresh", json=spent), 401)
    assert (await client.post("/api/v1/auth/logout", json=spent)).status_code == 204


@pytest.mark.parametrize(
    "path",
    [
        "media//x",
        "media/01M911CEGT3NK0JZ0V2W5W54ET//small.jpg",
        "media/01M911CEGT3NK0JZ0V2W5W54ET/small.jpg/",
        "media/01M911CEGT3NK0JZ0V2W5W54ET/../../secret.key",
        "incoming/01M911CEGT3NK0JZ0V2W5W54ET",
    ],
)
async def test_odd_media_file_paths_are_404(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(f"/media-files/{path}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_openapi_declares_location_where_answers_send_it(
    client: httpx.AsyncClient,
) -> None:
    """Every answer that says where a new object lives declares its Location
    header (found missing by a schema-driven trial)."""
    schema = (await client.get("/openapi.json")).json()
    declaring = {
        (method, path, status)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        if "Location" in response.get("headers", {})
    }
    assert declaring == {
        ("post", "/api/v1/accounts", "201"),
        ("post", "/api/v1/media", "202"),
        ("post", "/api/v1/pets", "201"),
        ("post", "/api/v1/posts", "201"),
    }


async def test_file_paths_share_one_metrics_label(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await client.get(f"/media-files/media/x{n}/y{n}")
    metrics = (await client.get("/metrics")).text
    assert 'route="/media-files/{key}"' in metrics
    assert "x1/y1" not in metrics


async def test_openapi_documents_problem_responses(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "Problem" in schema["components"]["schemas"]
    create_post = schema["paths"]["/api/v1/posts"]["post"]["responses"]
    for status in ("401", "413", "422"):
        assert "application/problem+json" in create_post[status]["content"]
    assert "application/json" not in create_post["422"]["content"]


async def test_a_failing_cache_degrades_but_stays_ready(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse() -> None:
        raise CacheBackendError("redis: ConnectionError: refused")

    monkeypatch.setattr(services.cache.backend, "ping", refuse, raising=False)
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["cache"].startswith("degraded")


async def test_a_parameter_equal_to_a_literal_segment_keeps_the_route_label(
    client: httpx.AsyncClient,
) -> None:
    # The label was once rebuilt from the path, replacing the last segment
    # equal to a parameter's value: "posts" here named the wrong segment.
    answer = await client.get("/api/v1/accounts/posts/posts")
    assert answer.status_code == 404
    metrics = (await client.get("/metrics")).text
    assert 'route="/api/v1/accounts/{username}/posts",status="404"' in metrics
    assert "/api/v1/accounts/posts/{username}" not in metrics


async def json_body_routes(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """Every (method, path) whose OpenAPI request body is JSON, with an id
    that names nothing in each path parameter."""
    schema = (await client.get("/openapi.json")).json()
    routes = [
        (method, re.sub(r"\{[^}]+\}", "01M911CEGT3NK0JZ0V2W5W54ET", path))
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]
    assert len(routes) >= 9, routes  # the API's JSON routes were found
    return routes


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("text/plain", id="text"),
        pytest.param("application/x-www-form-urlencoded", id="form"),
        pytest.param(None, id="unlabelled"),
    ],
)
async def test_every_json_route_refuses_a_body_of_another_type_as_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    """A JSON body labelled as something else is 415, not a 422 that says
    "input should be an object" about a body the client sent as one."""
    user = await a_user(client)
    routes = await json_body_routes(client)
    headers = dict(user.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    for method, path in routes:
        response = await client.request(
            method, path, content=b'{"name": "Rex"}', headers=headers
        )
        assert response.status_code == 415, (method, path, response.text)
        problem = assert_problem(response, 415, "unsupported_media_type")
        assert "application/json" in problem["detail"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        pytest.param(b'{"name": "Rex', "not valid JSON", id="truncated"),
        pytest.param(b'{"name": "R\xffx"}', "not UTF-8", id="not-utf8"),
        pytest.param(b"[" * 30_000 + b"]" * 30_000, "nested too deeply", id="deep"),
        pytest.param(b"[" + b"9" * 5_000 + b"]", "4,300 digits", id="huge-int"),
        # Found by a trial: Python's parser takes these, and a NaN caption
        # was a 422 about the caption.
        pytest.param(b'{"caption": NaN}', "NaN is not a JSON value", id="nan"),
        pytest.param(b"[Infinity]", "Infinity is not a JSON value", id="inf"),
        pytest.param(b"[-Infinity]", "-Infinity is not a JSON value", id="-inf"),
        pytest.param(b"[-1e999]", "-1e999 is too large a number", id="1e999"),
        pytest.param('{"name": "Rex"}'.encode("utf-16"), "not UTF-8", id="utf-16"),
        pytest.param('{"name": "Rex"}'.encode("utf-32"), "not UTF-8", id="utf-32"),
    ],
)
async def test_every_json_route_says_an_unreadable_json_body_is_malformed(
    client: httpx.AsyncClient, body: bytes, says: str
) -> None:
    """Whatever stops a body labelled JSON from parsing is our 400
    ``malformed_json`` with the reason, never the framework's bare 400."""
    user = await a_user(client)
    routes = await json_body_routes(client)
    headers = {**user.headers, "Content-Type": "application/json"}
    for method, path in routes:
        response = await client.request(method, path, content=body, headers=headers)
        problem = assert_problem(response, 400, "malformed_json")
        assert says in problem["detail"], (method, path, problem)


async def test_a_utf8_body_may_start_with_a_byte_order_mark(
    client: httpx.AsyncClient,
) -> None:
    """RFC 8259 section 8.1 lets a reader ignore it, and some clients send it."""
    body = orjson.dumps(
        {
            "username": "bom_user",
            "email": "bom@example.org",
            "password": "a long enough password",
            "display_name": "Bom",
        }
    )
    response = await client.post(
        "/api/v1/accounts",
        content=b"\xef\xbb\xbf" + body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text


async def test_a_body_of_the_wrong_shape_is_named_body(
    client: httpx.AsyncClient,
) -> None:
    """A 422 about the body as a whole names it "body", not an internal
    "request"."""
    for content in (b"[]", b'"text"', b"null"):
        response = await client.post(
            "/api/v1/accounts",
            content=content,
            headers={"Content-Type": "application/json"},
        )
        problem = assert_problem(response, 422, "validation_failed")
        assert problem["detail"].startswith("body: "), problem


async def test_length_limits_on_text_count_characters(
    client: httpx.AsyncClient,
) -> None:
    """Every text field's length limit is worded as one on text; a limit
    placed after our text checks was worded "at most 50 items"."""
    user = await a_user(client)
    long = "x" * 3000
    for method, path, body in [
        (
            "POST",
            "/api/v1/accounts",
            {
                "username": "someone",
                "email": long,
                "password": long,
                "display_name": long,
            },
        ),
        ("POST", "/api/v1/auth/token", {"login": long, "password": long}),
        ("PATCH", "/api/v1/accounts/me", {"display_name": long, "bio": long}),
        ("POST", "/api/v1/posts", {"caption": long, "media_ids": ["x"]}),
        ("POST", "/api/v1/pets", {"name": long, "species": "dog"}),
        ("POST", "/api/v1/posts/01M911CEGT3NK0JZ0V2W5W54ET/comments", {"body": long}),
    ]:
        response = await client.request(method, path, json=body, headers=user.headers)
        problem = assert_problem(response, 422, "validation_failed")
        messages = [error["message"] for error in problem["errors"]]
        lengths = [m for m in messages if "at most" in m]
        assert lengths, (path, messages)
        assert all("characters" in m for m in lengths), (path, messages)
    response = await client.get(
        "/api/v1/adoptions", params={"location": long}, headers=user.headers
    )
    problem = assert_problem(response, 422, "validation_failed")
    assert "characters" in problem["detail"], problem
