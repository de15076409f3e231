"""Fetching remote images (for vision models) without server-side request forgery.

A URL a client sends must not make the server reach what the client cannot: loopback, private networks,
link-local and cloud metadata addresses. Each hop (the first URL and every redirect) is resolved here, every
resolved address is checked, and the connection goes to the checked address itself (the URL's host is kept
in the Host header and TLS SNI), so a DNS answer that changes between check and connect cannot slip through.
Size, time, redirect count and content type are bounded. `allow_private` lets an operator reach private and
loopback addresses (an internal image store, tests); metadata addresses stay refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Self

import httpx

from ..errors import APIError

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata and platform endpoints (AWS/GCP/Azure IMDS, AWS IPv6 IMDS, Alibaba, Azure wire server).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16"))


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 10 << 20  # body bytes at most
    timeout: float = 10.0  # seconds for the whole fetch, redirects included
    max_redirects: int = 3  # redirects followed (each one checked like the first URL)
    allow_private: bool = False  # reach private, loopback and link-local addresses too (never metadata)
    content_types: tuple[str, ...] = ("image/",)  # accepted Content-Type prefixes

    @classmethod
    def from_settings(cls, settings) -> FetchPolicy:
        return cls(max_bytes=settings.max_image_bytes, timeout=settings.fetch_timeout,
                   max_redirects=settings.fetch_max_redirects, allow_private=settings.fetch_allow_private)


class FetchError(APIError):
    def __init__(self, message: str, code: str = "image_fetch_failed"):
        super().__init__(400, message, "image_url", code)


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


def check_address(address: str, allow_private: bool) -> IPAddress:
    """The address, if a fetch may connect to it; FetchError otherwise."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    refused = (ip in METADATA_ADDRESSES or ip.is_multicast or ip.is_unspecified or ip.is_reserved
               or (not ip.is_global and not allow_private))
    if refused:
        raise FetchError("the image URL points to an address this server may not fetch from", "image_url_forbidden")
    return ip


class ImageFetcher:
    def __init__(self, policy: FetchPolicy, resolver: Resolver = system_resolve,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.policy = policy
        self.resolver = resolver
        self.client = httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False,
                                        timeout=policy.timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.aclose()

    async def fetch(self, url: str) -> tuple[bytes, str]:
        """(body, content type) of an http(s) URL, within the policy; FetchError (400) for anything else."""
        try:
            async with asyncio.timeout(self.policy.timeout):
                return await self._follow(url)
        except TimeoutError:
            raise FetchError(f"fetching the image took longer than {self.policy.timeout:g} seconds") from None
        except httpx.HTTPError:
            raise FetchError("the image could not be fetched") from None

    async def _follow(self, url: str) -> tuple[bytes, str]:
        target = _parse(url)
        for _ in range(self.policy.max_redirects + 1):
            response = await self.client.send(await self._pinned_request(target), stream=True)
            try:
                if response.is_redirect:
                    target = _parse(str(target.join(response.headers.get("location", ""))))
                    continue
                return await self._body(response)
            finally:
                await response.aclose()
        raise FetchError(f"the image URL redirected more than {self.policy.max_redirects} times")

    async def _pinned_request(self, target: httpx.URL) -> httpx.Request:
        try:
            addresses = await self.resolver(target.host, target.port or (443 if target.scheme == "https" else 80))
        except OSError:
            raise FetchError("the image URL's host could not be resolved") from None
        if not addresses:
            raise FetchError("the image URL's host could not be resolved")
        checked = [check_address(a, self.policy.allow_private) for a in addresses]  # every answer must pass
        host_header = target.netloc.decode("ascii")
        return self.client.build_request("GET", target.copy_with(host=str(checked[0])),
                                         headers={"host": host_header, "accept": "image/*"},
                                         extensions={"sni_hostname": target.host})

    async def _body(self, response: httpx.Response) -> tuple[bytes, str]:
        if response.status_code != 200:
            raise FetchError(f"the image URL answered HTTP {response.status_code}")
        ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not ctype.startswith(self.policy.content_types):
            raise FetchError(f"the image URL returned {ctype or 'no content type'}, not an image")
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.policy.max_bytes:
            raise FetchError(f"the image is larger than {self.policy.max_bytes} bytes")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self.policy.max_bytes:
                raise FetchError(f"the image is larger than {self.policy.max_bytes} bytes")
        return bytes(body), ctype


def _parse(url: str) -> httpx.URL:
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchError("the image URL is not a valid URL") from None
    if target.scheme not in ("http", "https") or not target.host:
        raise FetchError("the image URL must be an http or https URL")
    if target.userinfo:
        raise FetchError("the image URL must not carry credentials")
    return target
