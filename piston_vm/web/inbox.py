"""The browser inbox (README, "The inbox"): one page and its plain ES modules, no build step.

The page is a client of the public API only (docs/api.md), served from the API's own origin, so
its Content-Security-Policy allows nothing but that origin: no inline script, no third party.
`PISTON_VM_INBOX=off` leaves these routes out (app.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().with_name("static")
PAGE_FILE = "index.html"
PAGE_TYPE = "text/html; charset=utf-8"
ASSETS_PREFIX = "/inbox/assets/"
# Every file the page loads, with its type. Named one by one, not a directory served: a name
# outside this table is the API's JSON 404, never a file (tests hold the table and the folder
# together).
ASSETS: Mapping[str, str] = {
    "main.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
    "format.js": "text/javascript; charset=utf-8",
    "md5.js": "text/javascript; charset=utf-8",
    "session.js": "text/javascript; charset=utf-8",
    "inbox.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
# The page itself: the start, and the addresses the page puts in the location bar.
PAGE_PATHS = ("/", "/inbox", "/inbox/", "/inbox/boxes/{box_id:[^/]+}",
              "/inbox/boxes/{box_id:[^/]+}/")
# Every path the inbox adds to the router: none of them is part of the API (docs/api.md).
ROUTE_PATHS = (*PAGE_PATHS, *(ASSETS_PREFIX + name for name in ASSETS))

# Same origin only. media-src for <audio> on …/raw, connect-src for fetch and the event stream;
# the page writes the DOM with textContent only, so Trusted Types can refuse every HTML sink.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "media-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
    "require-trusted-types-for 'script'",
    "trusted-types 'none'",
))
PAGE_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # The audio and download links carry ?auth_token=: no Referer may take it anywhere.
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    # Revalidated on every load (FileResponse answers 304 to a matching ETag): a new release
    # is seen at once, without names that change with every build.
    "Cache-Control": "no-cache",
}


async def inbox_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / PAGE_FILE, headers={"Content-Type": PAGE_TYPE})


async def inbox_asset(request: web.Request) -> web.StreamResponse:
    name = request.path.removeprefix(ASSETS_PREFIX)
    return web.FileResponse(STATIC_DIR / name, headers={"Content-Type": ASSETS[name]})


def add_inbox_routes(app: web.Application) -> None:
    """Before the API's catch-all (web/routing.py `register`), which answers every other path."""
    for path in ROUTE_PATHS:
        app.router.add_get(path, inbox_asset if path.startswith(ASSETS_PREFIX) else inbox_page)


def page_headers(request: web.Request) -> Mapping[str, str]:
    """The security headers of the page and its assets; API answers get none of them."""
    if request.match_info.http_exception is not None:
        return {}
    if request.match_info.route.handler in (inbox_page, inbox_asset):
        return PAGE_HEADERS
    return {}
