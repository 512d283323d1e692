from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import select

from petpal.media.service import PROCESS_JOB
from petpal.platform.app import create_app
from petpal.platform.jobs import OutboxJob
from petpal.platform.services import Services
from petpal.platform.settings import Settings
from tests.factories import a_user, an_uploaded_photo, assert_problem, drain_jobs

EDGE = Path(__file__).parent.parent / "fixtures" / "photos" / "edge-cases"
CAMERA = Path(__file__).parent.parent / "fixtures" / "photos" / "camera-exif"


async def upload_bytes(
    client: httpx.AsyncClient, headers: dict[str, str], data: bytes, name: str = "x.jpg"
) -> httpx.Response:
    return await client.post(
        "/api/v1/media", headers=headers, files={"file": (name, data, "image/jpeg")}
    )


async def test_phone_photo_comes_out_upright_and_without_metadata(
    client: httpx.AsyncClient, services: Services
) -> None:
    user = await a_user(client)
    source = CAMERA / "apple_iphone5_ori3_gps.jpg"
    with source.open("rb") as f:
        accepted = await client.post(
            "/api/v1/media",
            headers=user.headers,
            files={"file": ("p.jpg", f, "image/jpeg")},
        )
    assert accepted.status_code == 202
    assert accepted.json()["status"] == "processing"
    assert accepted.headers["location"] == f"/api/v1/media/{accepted.json()['id']}"

    await drain_jobs(services)
    media = (
        await client.get(accepted.headers["location"], headers=user.headers)
    ).json()
    assert media["status"] == "ready"
    assert media["blurhash"]
    names = {v["name"] for v in media["variants"]}
    assert names == {"small", "medium", "large"}

    reference = Image.open(source)
    upright = reference.rotate(180)  # orientation 3 means "stored upside down"
    for variant in media["variants"]:
        served = await client.get(variant["url"])
        assert served.status_code == 200
        # HEAD: the same size and type, no bytes (it was a 405).
        head = await client.head(variant["url"])
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) == len(served.content)
        assert head.headers["content-type"] == served.headers["content-type"]
        assert b"Exif" not in served.content[:4096]
        image = Image.open(io.BytesIO(served.content))
        assert (image.width, image.height) == (variant["width"], variant["height"])
        assert not dict(image.getexif())
        assert not {"exif", "icc_profile", "xmp", "comment"} & set(image.info)
        if variant["name"] == "small":
            expected = upright.resize(image.size).convert("RGB")
            diff = sum(
                abs(a - b)
                for a, b in zip(
                    image.convert("L").tobytes(),
                    expected.convert("L").tobytes(),
                    strict=True,
                )
            ) / (image.width * image.height)
            assert diff < 20, diff

    # The raw upload, which held the GPS position, is gone from storage.
    assert [
        p
        for p in (services.settings.media_dir).rglob("*")
        if "incoming" in str(p) and p.is_file()
    ] == []


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("bmp_cat_1_2MB.bmp", 415, "unsupported_media_type"),
        ("decompression_bomb_65535x66601.gif", 413, "too_many_pixels"),
        ("zero_width.gif", 422, "unreadable_image"),
        ("png_text_chunk_bomb.png", 422, "unreadable_image"),
    ],
)
async def test_refused_before_decoding(
    client: httpx.AsyncClient, name: str, status: int, code: str
) -> None:
    user = await a_user(client)
    response = await upload_bytes(
        client, user.headers, (EDGE / name).read_bytes(), name
    )
    assert_problem(response, status, code)


async def test_truncated_photo_ends_failed_with_a_reason(
    client: httpx.AsyncClient, services: Services
) -> None:
    user = await a_user(client)
    media = await an_uploaded_photo(
        client, user, EDGE / "truncated_real_photo.jpg", services
    )
    assert media["status"] == "failed"
    assert "truncated" in media["failure_reason"]
    assert media["variants"] == []


@pytest.mark.parametrize(
    "payload", [b"hello, this is text", b"%PDF-1.7\n", b"\x00" * 100, b"GIF8"]
)
async def test_non_images_are_415(client: httpx.AsyncClient, payload: bytes) -> None:
    user = await a_user(client)
    assert_problem(await upload_bytes(client, user.headers, payload), 415)


async def test_empty_file_is_refused(client: httpx.AsyncClient) -> None:
    user = await a_user(client)
    response = await upload_bytes(client, user.headers, b"")
    assert response.status_code in (415, 422)
    assert response.headers["content-type"] == "application/problem+json"


async def test_upload_needs_a_token(client: httpx.AsyncClient) -> None:
    assert_problem(await upload_bytes(client, {}, b"x"), 401)


async def test_upload_must_be_multipart_with_a_file_field(
    client: httpx.AsyncClient,
) -> None:
    user = await a_user(client)
    as_json = await client.post(
        "/api/v1/media", headers=user.headers, json={"file": "x"}
    )
    assert_problem(as_json, 415)
    wrong_field = await client.post(
        "/api/v1/media",
        headers=user.headers,
        files={"photo": ("a.jpg", b"x", "image/jpeg")},
    )
    problem = assert_problem(wrong_field, 400, "malformed_upload")
    assert "has no 'file' part" in problem["detail"]
    # Found by a trial: a 'file' part cut short (no closing boundary) was
    # said to be missing.
    cut_short = await client.post(
        "/api/v1/media",
        headers={**user.headers, "content-type": "multipart/form-data; boundary=zzz"},
        content=(
            b'--zzz\r\nContent-Disposition: form-data; name="file"; '
            b'filename="a.jpg"\r\n\r\n\xff\xd8\xff\xe0 partial bytes'
        ),
    )
    problem = assert_problem(cut_short, 400, "malformed_upload")
    assert "cut short" in problem["detail"]
    # Or in the part's headers, or its boundary (found by the trials after).
    for cut in (b"--zzz\r\nContent-Disposition: form-da", b"--zzz\r\n", b"--zz"):
        in_headers = await client.post(
            "/api/v1/media",
            headers={
                **user.headers,
                "content-type": "multipart/form-data; boundary=zzz",
            },
            content=cut,
        )
        problem = assert_problem(in_headers, 400, "malformed_upload")
        assert "cut short" in problem["detail"], cut
    broken = await client.post(
        "/api/v1/media",
        headers={**user.headers, "content-type": "multipart/form-data; boundary=zzz"},
        content=b"--zzz\r\nthis is not a part header\r\n\r\n",
    )
    assert broken.status_code == 400
    for content_type in ("multipart/form-data", "multipart/form-data; boundary="):
        unsplittable = await client.post(
            "/api/v1/media",
            headers={**user.headers, "content-type": content_type},
            content=b"--zzz\r\n",
        )
        assert_problem(unsplittable, 400, "malformed_upload")
        assert "boundary" in unsplittable.json()["detail"]


async def test_two_photos_in_one_upload_are_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Found by a trial: the second ``file`` part was dropped without a word,
    and its client believed both photos uploaded."""
    user = await a_user(client)
    photo = (EDGE / "jpeg_1x1_with_gps.jpg").read_bytes()
    both = await client.post(
        "/api/v1/media",
        headers=user.headers,
        files=[("file", ("a.jpg", photo)), ("file", ("b.jpg", photo))],
    )
    problem = assert_problem(both, 400, "malformed_upload")
    assert "more than one 'file' part" in problem["detail"]
    async with services.db.read_session() as session:
        jobs = (
            await session.scalars(
                select(OutboxJob.id).where(OutboxJob.kind == PROCESS_JOB)
            )
        ).all()
    assert jobs == []  # nothing recorded
    stored = [batch async for batch in services.storage.list_objects("incoming/")]
    assert stored == []
    # Other fields beside the one photo are still let be.
    one = await client.post(
        "/api/v1/media",
        headers=user.headers,
        files=[("file", ("a.jpg", photo)), ("note", ("n.txt", b"hi"))],
    )
    assert one.status_code == 202, one.text


@pytest.fixture
async def small_limit_client(settings: Settings) -> httpx.AsyncClient:
    limited = settings.model_copy(update={"max_upload_bytes": 50_000})
    app: FastAPI = create_app(limited)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


async def test_oversized_upload_is_413(small_limit_client: httpx.AsyncClient) -> None:
    user = await a_user(small_limit_client)
    data = (CAMERA / "orientation_1_landscape.jpg").read_bytes()
    response = await upload_bytes(small_limit_client, user.headers, data)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


async def test_media_of_others_is_hidden_until_ready(
    client: httpx.AsyncClient, services: Services
) -> None:
    owner, other = await a_user(client), await a_user(client)
    media = await an_uploaded_photo(
        client, owner, EDGE / "truncated_small_progressive.jpg"
    )
    assert_problem(
        await client.get(f"/api/v1/media/{media['id']}", headers=other.headers), 404
    )
    assert (
        await client.get(f"/api/v1/media/{media['id']}", headers=owner.headers)
    ).status_code == 200


@pytest.mark.parametrize("media_id", ["nope", "01J00000000000000000000000", "x" * 300])
async def test_unknown_media_is_404(client: httpx.AsyncClient, media_id: str) -> None:
    assert_problem(await client.get(f"/api/v1/media/{media_id}"), 404)


@pytest.mark.parametrize(
    "path", ["incoming/x", "media/../incoming/x", "../secret.key", "media/nothing.jpg"]
)
async def test_only_processed_files_are_served(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(f"/media-files/{path}")
    assert response.status_code == 404
    assert (await client.head(f"/media-files/{path}")).status_code == 404


async def test_inline_processing_answers_with_the_photo_ready(
    settings: Settings,
) -> None:
    # The benchmark baseline: the request does the media job's work itself.
    inline = settings.model_copy(update={"media_process_inline": True})
    app: FastAPI = create_app(inline)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            user = await a_user(c)
            data = (CAMERA / "apple_iphone5_ori3_gps.jpg").read_bytes()
            accepted = await upload_bytes(c, user.headers, data)
            assert accepted.status_code == 202, accepted.text
            media = accepted.json()
            assert media["status"] == "ready"
            assert {v["name"] for v in media["variants"]} == {
                "small",
                "medium",
                "large",
            }
            assert media["blurhash"]
            fetched = await c.get(accepted.headers["location"], headers=user.headers)
            assert fetched.json() == media
            # No job was queued: nothing is left for a worker to do.
            async with services.db.read_session() as session:
                jobs = await session.scalars(
                    select(OutboxJob.kind).where(OutboxJob.kind == PROCESS_JOB)
                )
                assert jobs.all() == []
            broken = (EDGE / "truncated_real_photo.jpg").read_bytes()
            failed = (await upload_bytes(c, user.headers, broken)).json()
            assert failed["status"] == "failed"
            assert "truncated" in failed["failure_reason"]
