"""The API's documentation pages, rendered by a real browser.

Headless Chromium loads ``/docs`` and ``/redoc`` from a real server on
loopback, with every host name but the server's made unresolvable: a page
that still needed a CDN (FastAPI's own pages load Swagger UI and ReDoc from
one) would stay blank. Its network log tells every address the page asked
for (the browser's own requests, which the page did not make, left out),
which must all be the server's. ``.ci/run`` installs Chromium;
elsewhere these tests skip without it.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")


async def rendered(url: str, profile: Path) -> tuple[str, set[str]]:
    """The page's DOM once its scripts have run, as Chromium serialises it,
    and the hosts of every address the page asked the network for."""
    assert CHROMIUM is not None
    net_log = profile / "net-log.json"
    browser = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--log-net-log={net_log}",
        # Any name but loopback's fails to resolve, whatever the network.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(browser.communicate(), timeout=90)
    finally:
        if browser.returncode is None:
            browser.kill()
            await browser.wait()
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    # A request's start names the origin that made it; the browser's own
    # (its updater, autofill) are "not an origin".
    asked = {
        urlsplit(params["url"]).hostname or ""
        for event in orjson.loads(net_log.read_bytes())["events"]
        if (params := event.get("params", {})).get("initiator") == origin
    }
    return out.decode(), asked


async def test_swagger_ui_renders_the_api_without_a_cdn(
    port: int, tmp_path: Path
) -> None:
    dom, hosts = await rendered(f"http://127.0.0.1:{port}/docs", tmp_path)
    assert hosts == {"127.0.0.1"}
    # Swagger UI's script built these from /openapi.json.
    assert 'class="swagger-ui"' in dom, dom[:2000]
    assert "PetPal Connect" in dom
    assert "/api/v1/feed/home" in dom
    assert "/api/v1/posts/{post_id}" in dom
    # Where a token is given, from the schema's bearer scheme (found by a
    # trial: there was no such button).
    assert "btn authorize" in dom


async def test_redoc_renders_the_api_without_a_cdn(port: int, tmp_path: Path) -> None:
    dom, hosts = await rendered(f"http://127.0.0.1:{port}/redoc", tmp_path)
    # Found by a trial: its footer's logo came from Redocly's CDN.
    assert hosts == {"127.0.0.1"}
    assert "redoc-wrap" in dom, dom[:2000]
    assert "PetPal Connect" in dom
    assert "/api/v1/feed/home" in dom
