from __future__ import annotations

import httpx


async def test_liveness_readiness_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok"}
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


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "abc123"})
    assert response.headers["x-request-id"] == "abc123"
    assert len((await client.get("/healthz")).headers["x-request-id"]) == 16


async def test_openapi_documents_the_api(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in ("/api/v1/accounts", "/api/v1/auth/token", "/api/v1/media"):
        assert path in schema["paths"]
    assert (await client.get("/docs")).status_code == 200
