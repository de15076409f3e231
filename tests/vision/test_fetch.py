"""server/gateway/images.py fetch_image: http(s) images under size, time, redirect and content-type limits."""

from __future__ import annotations

import asyncio
import io

import pytest
from counterpoint.server.config import Settings
from counterpoint.server.gateway.images import ImageRefused, fetch_image
from starlette.applications import Starlette
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tests.conftest import ThreadServer

from .conftest import make_image


def _png() -> bytes:
    buf = io.BytesIO()
    make_image(3).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


async def _slow(request):
    await asyncio.sleep(3)
    return Response(PNG, media_type="image/png")


def _app() -> Starlette:
    return Starlette(routes=[
        Route("/cat.png", lambda r: Response(PNG, media_type="image/png")),
        Route("/page", lambda r: Response("<html></html>", media_type="text/html")),
        Route("/big.png", lambda r: Response(PNG * 50, media_type="image/png")),
        Route("/hop/{n:int}", lambda r: RedirectResponse(f"/hop/{r.path_params['n'] - 1}" if r.path_params["n"] > 0
                                                         else "/cat.png")),
        Route("/missing.png", lambda r: Response("no", status_code=404)),
        Route("/slow.png", _slow),
    ])


@pytest.fixture(scope="module")
def image_server():
    with ThreadServer(_app()) as server:
        yield server


def fetch(url: str, **settings) -> bytes:
    return asyncio.run(fetch_image(url, Settings(**{"fetch_allow_private": True, **settings})))


def test_fetches_an_image_and_follows_a_few_redirects(image_server):
    assert fetch(f"{image_server.url}/cat.png") == PNG
    assert fetch(f"{image_server.url}/hop/2", fetch_max_redirects=3) == PNG


@pytest.mark.parametrize("path, settings, words", [
    ("/hop/5", {"fetch_max_redirects": 2}, "redirected more than 2 times"),
    ("/page", {}, "text/html"),
    ("/big.png", {"max_image_bytes": len(PNG) * 10}, "larger than"),
    ("/missing.png", {}, "HTTP 404"),
    ("/slow.png", {"fetch_timeout": 0.5}, "longer than"),
])
def test_limits(image_server, path, settings, words):
    with pytest.raises(ImageRefused, match=words):
        fetch(f"{image_server.url}{path}", **settings)


def test_loopback_is_refused_unless_allowed(image_server):
    with pytest.raises(ImageRefused, match="may not fetch from"):
        asyncio.run(fetch_image(f"{image_server.url}/cat.png", Settings()))
    with pytest.raises(ImageRefused, match="may not fetch from"):  # a redirect cannot lead there either
        asyncio.run(fetch_image("http://localhost:1/x.png", Settings()))


def test_data_url_size_limit():
    import base64
    import random

    from PIL import Image
    noise = Image.frombytes("RGB", (64, 64), random.Random(0).randbytes(64 * 64 * 3))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    assert fetch(url) == buf.getvalue()
    with pytest.raises(ImageRefused, match="larger than"):
        fetch(url, max_image_bytes=4096)
