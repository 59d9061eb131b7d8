"""The dashboard: one page and its two assets, served from the package (no CDN, no build step).

``GET /dashboard`` needs no token: the page asks for one, keeps it in the browser's
``sessionStorage`` only, and sends it as a bearer header on every API call. Its live feed is
``/events`` read with ``fetch`` (``EventSource`` cannot send that header, and a token never goes
in a query string). The page's Content-Security-Policy allows only these same-origin files, so
even a mistake in the script could not load or run anything else.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


@cache
def _read(name: str) -> bytes:
    """A file of this package, read once (they are small and never change while running)."""
    return resources.files(__package__).joinpath(name).read_bytes()


def _not_found() -> Response:
    return JSONResponse({"error": {"type": "not_found", "message": "no such dashboard file"}},
                        status_code=404)


def _file(name: str) -> Response:
    media_type = _FILES.get(name)
    if media_type is None:
        return _not_found()
    return Response(_read(name), media_type=media_type, headers=_HEADERS)


async def page(request: Request) -> Response:
    return _file("index.html")


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    return _file(name) if name != "index.html" else _not_found()


def routes() -> list[BaseRoute]:
    """``/dashboard`` and ``/dashboard/{asset}``; only the files listed above are served."""
    return [Route("/dashboard", page), Route("/dashboard/{name}", asset)]
