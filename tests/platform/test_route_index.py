"""The route index chooses exactly the route the router would have chosen,
but for the differences its module names (HEAD, the 405's Allow, and a path
named whole belonging to its literal route alone)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from petpal.platform.routing import RouteIndex, index_routes


def _app(indexed: bool) -> FastAPI:
    """Routes that overlap in every way the router's order decides."""
    app = FastAPI()

    def answer(route: str, **params: str) -> dict[str, object]:
        return {"route": route, "params": params}

    @app.get("/")
    async def root() -> dict[str, object]:
        return answer("root")

    @app.get("/items/special")
    async def special() -> dict[str, object]:
        return answer("special")

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, object]:
        return answer("item", item_id=item_id)

    @app.delete("/items/{item_id}")
    async def delete_item(item_id: str) -> dict[str, object]:
        return answer("delete_item", item_id=item_id)

    @app.get("/items/{item_id}/shadowed")
    async def first(item_id: str) -> dict[str, object]:
        return answer("first", item_id=item_id)

    @app.get("/items/late/shadowed")
    async def shadowed() -> dict[str, object]:
        # Never by the router: declared after a route that matches it.
        return answer("shadowed")

    @app.post("/items/{item_id}/late")
    async def post_late(item_id: str) -> dict[str, object]:
        return answer("post_late", item_id=item_id)

    @app.get("/items/x/late")
    async def get_late() -> dict[str, object]:
        return answer("get_late")

    @app.get("/files/img-{name}")
    async def image(name: str) -> dict[str, object]:
        return answer("image", name=name)

    @app.get("/files/{key:path}")
    async def file(key: str) -> dict[str, object]:
        return answer("file", key=key)

    @app.get("/n/{number:int}")
    async def number(number: int) -> dict[str, object]:
        return answer("number", number=str(number))

    @app.get("/n/{word}")
    async def word(word: str) -> dict[str, object]:
        return answer("word", word=word)

    if indexed:
        index_routes(app.router)
    return app


REQUESTS = [
    ("GET", "/"),
    ("GET", "/items/special"),
    ("GET", "/items/42"),
    ("PUT", "/items/42"),  # 405
    ("GET", "/items/x/late"),  # a PARTIAL match first, a FULL one later
    ("GET", "/items/42/"),  # redirect to the path without the slash
    ("GET", "/items"),
    ("GET", "/items/"),
    ("GET", "/files/img-cat.jpg"),
    ("GET", "/files/a/b/c.txt"),
    ("GET", "/files/"),
    ("GET", "/n/7"),
    ("GET", "/n/seven"),
    ("GET", "/nothing/here"),
    ("GET", "/openapi.json"),
    ("HEAD", "/docs"),
    ("GET", "/docs/"),
    ("GET", "//items//42"),
]


@pytest.mark.parametrize(("method", "path"), REQUESTS)
async def test_the_index_answers_as_the_router_does(method: str, path: str) -> None:
    answers = []
    allows: list[set[str]] = []
    for indexed in (False, True):
        transport = httpx.ASGITransport(app=_app(indexed))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://petpal.test"
        ) as client:
            response = await client.request(method, path)
        status, text, headers = response.status_code, response.text, response.headers
        answers.append((status, headers.get("location"), text))
        allows.append(set((headers.get("allow") or "").split(", ")) - {""})
    assert answers[0] == answers[1]
    # A 405 names every method of the path, the router's only the first
    # route's (found by a schema-driven trial: DELETE like was left out),
    # and HEAD wherever GET.
    assert allows[1] >= allows[0]
    assert allows[1] == ALLOWED.get((method, path), set())


ALLOWED = {
    ("PUT", "/items/42"): {"GET", "HEAD", "DELETE"},
}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/items/special"),  # the router: /items/{item_id}'s DELETE
        ("POST", "/items/x/late"),  # the router: /items/{item_id}/late's POST
        ("PUT", "/items/x/late"),  # the router's Allow: GET, HEAD, POST
    ],
)
async def test_a_path_named_whole_belongs_to_its_literal_routes(
    method: str, path: str
) -> None:
    """Unlike the router, which tried a route with a parameter in its place
    for the methods the literal route does not take (found by a trial:
    DELETE /pets/of-the-day was a 404 "the pet was not found")."""
    transport = httpx.ASGITransport(app=_app(indexed=True))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://petpal.test"
    ) as client:
        response = await client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_a_literal_route_is_served_even_when_declared_late() -> None:
    """The router serves /items/late/shadowed by /items/{item_id}/shadowed,
    declared first; the index by the route that names the path whole."""
    answers = []
    for indexed in (False, True):
        transport = httpx.ASGITransport(app=_app(indexed))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://petpal.test"
        ) as client:
            answers.append((await client.get("/items/late/shadowed")).json())
    assert answers == [
        {"route": "first", "params": {"item_id": "late"}},
        {"route": "shadowed", "params": {}},
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/items/special",
        "/items/42",
        "/items/x/late",  # a POST route first, then the GET one
        "/items/late/shadowed",
        "/files/a/b/c.txt",
        "/n/7",
        "/items/42/",
        "/nothing/here",
    ],
)
async def test_a_head_is_answered_by_the_route_a_get_would_take(path: str) -> None:
    """The router answers HEAD on FastAPI's routes with 405; the index with
    the GET route's answer (the server then sends its headers alone:
    tests/platform/test_http_protocol.py)."""
    answers = []
    for method, indexed in (("GET", False), ("HEAD", True)):
        transport = httpx.ASGITransport(app=_app(indexed))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://petpal.test"
        ) as client:
            response = await client.request(method, path)
        answers.append((response.status_code, response.headers.get("location")))
    assert answers[0] == answers[1]
    transport = httpx.ASGITransport(app=_app(indexed=False))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://petpal.test"
    ) as client:
        assert (await client.head("/items/42")).status_code == 405


def test_candidates_are_the_routes_a_path_can_match_in_declaration_order() -> None:
    app = _app(indexed=True)
    index = app.router.middleware_stack
    assert isinstance(index, RouteIndex)
    names = [getattr(r, "name", "") for r in index.candidates("/items/x/late")]
    assert names == ["item", "delete_item", "first", "post_late", "get_late"]
    assert [getattr(r, "name", "") for r in index.candidates("/n/7")] == [
        "number",
        "word",
    ]
    assert index.candidates("/nothing/here") == []


async def test_a_route_added_later_is_served_in_its_place() -> None:
    app = _app(indexed=True)

    # Without it the index would answer 405 from GET /items/{item_id}.
    @app.put("/items/{item_id}")
    async def put_item(item_id: str) -> dict[str, str]:
        return {"route": "put_item"}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://petpal.test"
    ) as client:
        answer = await client.put("/items/42")
    assert answer.json() == {"route": "put_item"}


def test_a_router_with_its_own_middleware_is_not_indexed() -> None:
    app = FastAPI()
    index_routes(app.router)
    with pytest.raises(RuntimeError):
        index_routes(app.router)  # its dispatch is the index now
