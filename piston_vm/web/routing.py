"""Endpoints: one row per path with methods, body kind and gates, dispatched by effective method.

aiohttp resolves the route before our middlewares run, but verb tunnelling (docs/api.md 3.4) can
change the method afterwards; so each path is registered once for every method and this
dispatcher picks the handler, answering 405 with an `Allow` header itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from aiohttp import web

from piston_vm.core import errors
from piston_vm.web.gate import authenticate, authorize, load_target_account
from piston_vm.web.keys import CONTEXT

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

UNKNOWN_PATH_METHODS = ("GET", "PUT", "POST", "PATCH", "DELETE")
CATCH_ALL_PATH = "/{tail:.*}"
CATCH_ALL_CANONICAL = "/{tail}"


class BodyKind(Enum):
    JSON = "json"  # envelope bodies: JSON, form-urlencoded, multipart with a JSON part
    UPLOAD = "upload"  # also audio/*, octet-stream, base64; files are streamed by the handler
    ZIP = "zip"  # the ZIP request: JSON read whatever the Content-Type (docs/decisions.md D-5)


JSON_TYPES = frozenset({"application/json", "application/x-json"})
FORM_TYPE = "application/x-www-form-urlencoded"
MULTIPART_TYPES = frozenset({"multipart/mixed", "multipart/form-data"})
BASE64_TYPES = frozenset({"application/base64", "application/x-base64"})


def is_file_type(mime: str) -> bool:
    return mime.startswith("audio/") or mime == "application/octet-stream" or mime in BASE64_TYPES


def accepts(kind: BodyKind, mime: str) -> bool:
    if mime in JSON_TYPES or mime == FORM_TYPE:
        return True
    if kind is BodyKind.ZIP:
        return mime == "application/zip"
    if mime in MULTIPART_TYPES:
        return True
    return kind is BodyKind.UPLOAD and is_file_type(mime)


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    methods: Mapping[str, Handler]
    body: BodyKind = BodyKind.JSON
    authenticated: bool = True

    @property
    def account_scoped(self) -> bool:
        return "{account_id" in self.path

    @property
    def allowed(self) -> list[str]:
        return list(self.methods)


ENDPOINTS = web.AppKey["dict[str, Endpoint]"]("endpoints")


def request_mime(request: web.Request) -> str:
    # A missing Content-Type means JSON (docs/api.md 3.2); parameters never matter for matching.
    raw = request.headers.get("Content-Type", "")
    return raw.split(";", 1)[0].strip().lower() or "application/json"


def endpoint_of(request: web.Request) -> Endpoint | None:
    route = request.match_info.route
    resource = route.resource
    if resource is None:
        return None
    return request.app[ENDPOINTS].get(resource.canonical)


def make_dispatcher(endpoint: Endpoint) -> Handler:
    async def dispatch(request: web.Request) -> web.StreamResponse:
        ctx = request[CONTEXT]
        method = "GET" if ctx.method == "HEAD" else ctx.method
        handler = endpoint.methods.get(method)
        if handler is None:
            raise errors.method_not_allowed(endpoint.allowed)
        if endpoint.account_scoped:
            await load_target_account(request)
        if endpoint.authenticated:
            await authenticate(request)
            if endpoint.account_scoped:
                authorize(request)
        if method in ("PUT", "POST", "PATCH") and request.can_read_body:
            mime = request_mime(request)
            # Audio bodies are uploads: only the PUTs of an upload path take them (docs/api.md 3.2).
            kind = (BodyKind.JSON if endpoint.body is BodyKind.UPLOAD and method != "PUT"
                    else endpoint.body)
            if not accepts(kind, mime):
                raise errors.unsupported_media_type(mime)
        return await handler(request)

    return dispatch


async def unknown_route(request: web.Request) -> web.StreamResponse:
    raise errors.not_found()


def register(app: web.Application, endpoints: list[Endpoint]) -> None:
    """Register every endpoint (with and without a trailing slash), then the 404 catch-all."""
    table: dict[str, Endpoint] = {}
    for endpoint in endpoints:
        dispatch = make_dispatcher(endpoint)
        for path in (endpoint.path, endpoint.path + "/"):
            resource = app.router.add_resource(path)
            resource.add_route("*", dispatch)
            table[resource.canonical] = endpoint
    app[ENDPOINTS] = table
    app.router.add_route("*", CATCH_ALL_PATH, unknown_route)
