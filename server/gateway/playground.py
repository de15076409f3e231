"""The playground: a browser page at /playground (linked from /) that streams one conversation under several
decodings side by side.

The page is plain HTML, CSS and JavaScript in `static/` beside this module, shipped as package data: no build
step, nothing fetched from another origin. The files are served without a key; every call the page makes goes
through the normal /v1 API with the key the person enters (the browser keeps it in sessionStorage). Every file
is sent with a strict Content-Security-Policy: scripts and styles from these files only, no inline code,
connections to this origin only.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Response

from ..errors import APIError

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}

STATIC = files(__package__) / "static"
ASSETS = {f.name: f for f in STATIC.iterdir() if f.is_file() and f.name[f.name.rfind("."):] in MEDIA_TYPES}

router = APIRouter(include_in_schema=False)


def _asset(name: str) -> Response:
    if name not in ASSETS:
        raise APIError(404, "no such playground file")
    return Response(ASSETS[name].read_bytes(), media_type=MEDIA_TYPES[name[name.rfind("."):]], headers=HEADERS)


@router.get("/")
async def home() -> Response:
    return _asset("home.html")


@router.get("/playground")
async def page() -> Response:
    return _asset("index.html")


@router.get("/playground/{name}")
async def asset(name: str) -> Response:
    return _asset(name)
