"""Checks on image inputs (`image_url` content parts): a data URL's base64, its size and pixel count.

Images are checked at the edge even where the model cannot use them, so a malformed or oversized image is
refused with a precise 400. Remote (http/https) images are fetched later through `gateway/fetch.py`.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

from PIL import Image, UnidentifiedImageError

from .limits import current

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,(?P<data>.*)",
                       re.DOTALL)


def check_image_url(url: object) -> None:
    """Raise ValueError (-> 400) for an image URL that is not http(s) or a valid, small enough data URL."""
    if not isinstance(url, str) or not url:
        raise ValueError("image_url.url must be a non-empty string")
    if url.startswith(("http://", "https://")):
        return
    m = _DATA_URL.fullmatch(url)
    if m is None or not m["b64"] or not (m["mime"] or "").startswith("image/"):
        raise ValueError("image_url.url must be an http(s) URL or a data:image/...;base64 URL")
    limit = current().max_image_bytes
    if len(m["data"]) > (limit + 2) // 3 * 4 + 4:
        raise ValueError(f"the image is larger than {limit} bytes")
    try:
        raw = base64.b64decode(m["data"], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the image is not valid base64") from None
    check_image_bytes(raw)


def check_image_bytes(raw: bytes) -> None:
    """Raise ValueError unless `raw` is a readable image within the byte and pixel limits."""
    limits = current()
    if len(raw) > limits.max_image_bytes:
        raise ValueError(f"the image is larger than {limits.max_image_bytes} bytes")
    try:
        with Image.open(io.BytesIO(raw)) as img:  # reads the header only
            width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise ValueError("the image could not be read (unsupported or corrupt)") from None
    if width * height > limits.max_image_pixels:
        raise ValueError(f"the image has {width * height} pixels; at most {limits.max_image_pixels} are allowed")
