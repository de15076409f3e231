"""Images of chat requests: `data:` URLs decoded here, http(s) URLs fetched under limits, all checked.

`fetch_image(url, settings)` is the one interface: bytes of a PNG, JPEG or WebP file, or `ImageRefused`.
http(s) fetching follows redirects by hand so every hop's address is checked: loopback, private, link-local
and other non-public addresses are refused unless `fetch_allow_private` is set (a guard against SSRF). The
body is streamed and cut at `max_image_bytes`; the whole fetch must finish within `fetch_timeout`.
`request_images` turns every image part of a request into an `ImageInput` (base64 bytes) for the worker,
with a 400 that names the part (`messages[i].content[j]`) when one is bad.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from urllib.parse import unquote_to_bytes, urlsplit

from PIL import Image

from ..config import Settings
from ..errors import APIError
from ..worker_protocol import ImageInput
from .fetch import FetchError, FetchPolicy, ImageFetcher

MEDIA_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG", "image/webp": "WEBP"}


class ImageRefused(ValueError):
    """The image cannot be used; the message says why (it becomes a 400 naming the part)."""


async def fetch_image(url: str, settings: Settings) -> bytes:
    if url.startswith("data:"):
        return _data_url(url, settings.max_image_bytes)
    if urlsplit(url).scheme not in ("http", "https"):
        raise ImageRefused("image URLs must be data:, http: or https:")
    try:  # the SSRF-guarded fetcher: every address and redirect checked, the connection pinned to it
        async with ImageFetcher(FetchPolicy.from_settings(settings)) as fetcher:
            data, media_type = await fetcher.fetch(url)
    except FetchError as exc:
        raise ImageRefused(exc.message) from exc
    if media_type not in MEDIA_TYPES:
        raise ImageRefused(f"the URL returned {media_type}, not PNG, JPEG or WebP")
    return data


def _data_url(url: str, max_bytes: int) -> bytes:
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise ImageRefused("a data: URL needs a comma before its data")
    media_type, *params = header.split(";")
    if media_type.lower() not in MEDIA_TYPES:
        raise ImageRefused(f"unsupported image type {media_type or 'text/plain'!r}; use PNG, JPEG or WebP")
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise ImageRefused(f"the image is larger than {max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True) if "base64" in params else unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise ImageRefused("the data: URL is not valid base64") from exc
    if len(data) > max_bytes:
        raise ImageRefused(f"the image is larger than {max_bytes} bytes")
    return data


def check_image(data: bytes) -> None:
    """The bytes are a PNG, JPEG or WebP image that decodes."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("PNG", "JPEG", "WEBP"):
                raise ImageRefused(f"unsupported image format {image.format}; use PNG, JPEG or WebP")
            image.load()
    except ImageRefused:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise ImageRefused(f"the image could not be decoded ({type(exc).__name__})") from exc


async def request_images(parts: list[tuple[str, str]], settings: Settings, model_info: dict | None
                         ) -> list[ImageInput]:
    """(part name, url) of every image part -> checked images for the worker, fetched concurrently."""
    if not parts:
        return []
    if model_info is not None and not model_info.get("vision", False):
        raise APIError(400, "this model does not accept images", parts[0][0])

    async def one(part: str, url: str) -> ImageInput:
        try:
            data = await fetch_image(url, settings)
            check_image(data)
        except ImageRefused as exc:
            raise APIError(400, f"{part}: {exc}", part) from exc
        return ImageInput(part=part, data=base64.b64encode(data).decode())

    return list(await asyncio.gather(*(one(p, u) for p, u in parts)))
