"""The SSRF-guarded image fetcher, against an httpx MockTransport and a loopback server; no outside address."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from counterpoint.server.gateway.fetch import FetchError, FetchPolicy, ImageFetcher, check_address

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
PUBLIC = "93.184.216.34"  # a global address; the mock transport answers for it, nothing leaves the machine
DNS = {"images.example": [PUBLIC], "evil.example": ["127.0.0.1"], "mixed.example": [PUBLIC, "10.1.2.3"],
       "meta.example": ["169.254.169.254"], "v6.example": ["::ffff:127.0.0.1"]}


async def fake_resolve(host: str, port: int) -> list[str]:
    if host in DNS:
        return DNS[host]
    try:
        check_address(host, True)  # an IP literal resolves to itself
        return [host]
    except ValueError:
        raise OSError("unknown host") from None


def run(coro):
    return asyncio.run(coro)


def fetch(url: str, handler, **policy) -> tuple[bytes, str]:
    async def go():
        async with ImageFetcher(FetchPolicy(**policy), fake_resolve, httpx.MockTransport(handler)) as f:
            return await f.fetch(url)
    return run(go())


def image(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})


def test_fetch_pins_the_checked_address_and_keeps_the_host():
    seen = []

    def handler(request):
        seen.append(request)
        return image(request)
    body, ctype = fetch("http://images.example:8080/cat.png?x=1", handler)
    assert body == PNG and ctype == "image/png"
    assert seen[0].url.host == PUBLIC and seen[0].url.port == 8080 and seen[0].url.path == "/cat.png"
    assert seen[0].headers["host"] == "images.example:8080"
    assert seen[0].extensions["sni_hostname"] == "images.example"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x.png", "http://localhost.localdomain.invalid/x.png", "http://[::1]/x.png",
    "http://10.0.0.7/x.png", "http://192.168.1.1/x.png", "http://172.16.0.1/x.png", "http://169.254.1.1/x.png",
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://100.100.100.200/",
    "http://0.0.0.0/", "http://[::ffff:127.0.0.1]/", "http://evil.example/x.png", "http://mixed.example/x.png",
    "http://meta.example/", "http://v6.example/", "http://224.0.0.1/", "file:///etc/passwd", "ftp://images.example/",
    "http://user:pw@images.example/x.png", "not a url", "http:///x.png",
])
def test_refused_urls_never_reach_the_network(url):
    calls = []

    def handler(request):
        calls.append(request)
        return image(request)
    with pytest.raises(FetchError) as err:
        fetch(url, handler)
    assert err.value.status == 400 and err.value.param == "image_url"
    assert not calls


@pytest.mark.parametrize("location", ["http://127.0.0.1/x.png", "http://evil.example/x.png",
                                      "http://169.254.169.254/", "/local-redirect-to-private"])
def test_redirects_are_checked_like_the_first_url(location):
    hosts = []

    def handler(request):
        hosts.append(request.url.host)
        if request.url.path == "/start":
            return httpx.Response(302, headers={"location": location})
        return image(request)
    if location.startswith("/"):  # a relative redirect stays on the (public) host: allowed
        assert fetch("http://images.example/start", handler)[0] == PNG
        assert hosts == [PUBLIC, PUBLIC]
    else:
        with pytest.raises(FetchError, match="may not fetch"):
            fetch("http://images.example/start", handler)
        assert hosts == [PUBLIC]


def test_redirect_limit():
    def handler(request):
        return httpx.Response(302, headers={"location": f"/hop{len(request.url.path)}"})
    with pytest.raises(FetchError, match="redirected more than 2"):
        fetch("http://images.example/", handler, max_redirects=2)


def test_size_type_status_and_time_limits():
    def big(request):
        return httpx.Response(200, content=b"x" * 2000, headers={"content-type": "image/png"})
    with pytest.raises(FetchError, match="larger than 1000"):
        fetch("http://images.example/", big, max_bytes=1000)

    def chunked(request):  # no Content-Length: the limit is counted while reading
        async def body():
            for _ in range(100):
                yield b"y" * 100
        return httpx.Response(200, content=body(), headers={"content-type": "image/png"})
    with pytest.raises(FetchError, match="larger than 1000"):
        fetch("http://images.example/", chunked, max_bytes=1000)
    with pytest.raises(FetchError, match="text/html"):
        fetch("http://images.example/", lambda r: httpx.Response(200, html="<html>"))
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch("http://images.example/", lambda r: httpx.Response(404))

    async def slow(request):
        await asyncio.sleep(30)
        return image(request)
    with pytest.raises(FetchError, match="longer than 0.2"):
        fetch("http://images.example/", slow, timeout=0.2)


def test_allow_private_reaches_loopback_but_never_metadata():
    assert fetch("http://127.0.0.1/x.png", image, allow_private=True)[0] == PNG
    assert fetch("http://evil.example/x.png", image, allow_private=True)[0] == PNG
    with pytest.raises(FetchError):
        fetch("http://169.254.169.254/latest/meta-data/", image, allow_private=True)


def test_real_loopback_server_with_allow_private():
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse, Response
    from starlette.routing import Route

    from tests.conftest import ThreadServer
    app = Starlette(routes=[Route("/img", lambda r: Response(PNG, media_type="image/png")),
                            Route("/go", lambda r: RedirectResponse("/img"))])

    async def go(url: str, allow: bool):
        async with ImageFetcher(FetchPolicy(allow_private=allow)) as f:  # real DNS resolver, real transport
            return await f.fetch(url)
    with ThreadServer(app) as server:
        assert run(go(f"{server.url}/go", True)) == (PNG, "image/png")
        assert run(go(f"http://localhost:{server.port}/img", True))[0] == PNG
        with pytest.raises(FetchError, match="may not fetch"):
            run(go(f"{server.url}/img", False))
