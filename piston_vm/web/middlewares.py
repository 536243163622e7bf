"""Request pipeline (docs/api.md 2): request id, errors → envelope, v1, preflight, body, verb
tunnel."""

from __future__ import annotations

import json
import logging
import math
import random
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web
from aiohttp.typedefs import Handler

from piston_vm.core import errors
from piston_vm.core.logs import REQUEST_ID
from piston_vm.storage.couch import DbNotFound, DocConflict, ViewMissing
from piston_vm.web import envelope
from piston_vm.web.context import RequestContext
from piston_vm.web.forwarded import client_address
from piston_vm.web.inbox import page_headers
from piston_vm.web.keys import CONTEXT, SETTINGS, STORES
from piston_vm.web.routing import (
    FORM_TYPE,
    JSON_TYPES,
    MULTIPART_TYPES,
    UNKNOWN_PATH_METHODS,
    BodyKind,
    endpoint_of,
    request_mime,
)

log = logging.getLogger(__name__)

_REQUEST_ID_MAX_CHARS = 128
CORS_ALLOW_HEADERS = (
    "content-type, depth, user-agent, x-http-method-override, x-file-size, x-requested-with, "
    "if-modified-since, x-file-name, cache-control, x-auth-token, if-match"
)
# retry-after lets browser clients read the login throttle's wait (docs/api.md lists the rest).
CORS_EXPOSE_HEADERS = "content-type, x-auth-token, x-request-id, location, etag, retry-after"


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-ID", "").strip()
    if given and len(given) <= _REQUEST_ID_MAX_CHARS and given.isprintable():
        return given
    # An id to find log lines by, not a secret: the PRNG, not a system call per request.
    return f"{random.getrandbits(128):032x}"


def _first_wins_query(request: web.Request) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in request.query.items():
        query.setdefault(key, value)
    return query


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request its context, and render every failure in the error envelope."""
    ctx = RequestContext(
        request_id=_request_id(request),
        method=request.method.upper(),
        query=_first_wins_query(request),
    )
    ctx.pretty = request.headers.get("X-Pretty-Print", "").lower() == "true"
    ctx.remote = client_address(request, request.app[SETTINGS].trusted_proxies)
    request[CONTEXT] = ctx
    # Every record logged while this task handles the request carries its id (core/logs.py);
    # aiohttp runs each request in a task of its own, so the value ends with it.
    REQUEST_ID.set(ctx.request_id)
    try:
        return await handler(request)
    except errors.ApiError as error:
        if error.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            log.warning("[%s] %s %s: %s %s", ctx.request_id, request.method, request.path,
                        error.message, error.data.get("cause", ""))
        return envelope.failure(request, error)
    except DocConflict:
        return envelope.failure(request, errors.datastore_conflict())
    except DbNotFound as missing:
        return envelope.failure(request, errors.datastore_missing(missing.db))
    except ViewMissing as missing:
        # A design document vanished under us: the next request installs it again.
        log.warning("[%s] view %s missing in %s", ctx.request_id, missing.view, missing.db)
        request.app[STORES].databases.forget_named(missing.db)
        return envelope.failure(request, errors.datastore_missing_view(missing.view))
    except web.HTTPRequestEntityTooLarge:
        return envelope.failure(request, errors.payload_too_large(
            request.app[SETTINGS].max_upload_bytes))
    except web.HTTPException as http_error:
        # aiohttp's own answers (e.g. a bad request line) still get the platform's envelope.
        return envelope.failure(request, errors.ApiError(
            HTTPStatus(http_error.status), http_error.reason.lower().replace(" ", "_"),
            {"message": http_error.reason.lower()}))
    except Exception:
        log.exception("[%s] unexpected failure in %s %s", ctx.request_id, request.method,
                      request.path)
        return envelope.failure(request, errors.unspecified_fault())


@web.middleware
async def pipeline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = request[CONTEXT]
    if request.path.startswith("/v1/") or request.path == "/v1":
        raise errors.gone_v1()
    if ctx.method == "OPTIONS":
        return web.Response(status=HTTPStatus.OK)
    endpoint = endpoint_of(request)
    body_kind = endpoint.body if endpoint is not None else BodyKind.JSON
    if body_kind is BodyKind.UPLOAD and ctx.method != "PUT":
        # Only the PUTs of an upload path stream files; its other methods take envelopes.
        body_kind = BodyKind.JSON
    ctx.envelope = await read_envelope(request, body_kind)
    if ctx.value("pretty_print") in (True, "true"):
        ctx.pretty = True
    if ctx.method == "POST":
        verb = ctx.value("verb")
        if isinstance(verb, str) and verb.strip():
            ctx.method = verb.strip().upper()
    return await handler(request)


async def read_body(request: web.Request, limit_bytes: int) -> bytes:
    """The whole body, refusing (413) anything over the limit before holding it in memory."""
    if request.content_length is not None and request.content_length > limit_bytes:
        raise errors.payload_too_large(limit_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit_bytes:
            raise errors.payload_too_large(limit_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_envelope(raw: bytes, form_fallback: bool) -> dict[str, Any]:
    """JSON envelope with lowercased keys; form bodies fall back to key=value pairs (docs/api.md
    3.2)."""
    if not raw.strip():
        return {}
    try:
        decoded = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise errors.invalid_json() from None
    except ValueError:
        if not form_fallback:
            raise errors.invalid_json() from None
        try:
            decoded = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            raise errors.invalid_json() from None
    if not isinstance(decoded, dict):
        decoded = {}
    result = {str(k).lower(): v for k, v in decoded.items()}
    return check_envelope(result)


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; CouchDB would refuse the document later with a 503.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999 overflows to Infinity: not representable in JSON
        raise ValueError(f"{text} is out of range")
    return value


def check_envelope(result: dict[str, Any]) -> dict[str, Any]:
    if "data" not in result:
        raise errors.validation_error("data", "required", {
            "message": "Field is required but missing", "value": "data"})
    if not isinstance(result["data"], dict | list):
        raise errors.validation_error("data", "type", {
            "message": "Value did not match type(s): object, array",
            "target": "object, array", "value": result["data"]})
    return result


async def read_envelope(request: web.Request, kind: BodyKind) -> dict[str, Any]:
    """Parse envelope-bearing bodies now; upload bodies are left for the handler to stream."""
    if not request.can_read_body:
        return {}
    limit = request.app[SETTINGS].max_upload_bytes
    mime = request_mime(request)
    if mime in JSON_TYPES or mime == FORM_TYPE or (
        kind is BodyKind.ZIP and mime == "application/zip"
    ):
        return parse_envelope(await read_body(request, limit), form_fallback=mime == FORM_TYPE)
    if mime in MULTIPART_TYPES and kind is BodyKind.JSON:
        return await _multipart_envelope(request, limit)
    return {}


async def _multipart_envelope(request: web.Request, limit: int) -> dict[str, Any]:
    """Envelope from the JSON part of a multipart body on a non-upload endpoint; files ignored."""
    if request.content_length is not None and request.content_length > limit:
        raise errors.payload_too_large(limit)
    envelope_: dict[str, Any] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            part_type = (part.headers.get("Content-Type") or "application/json").split(";")[0]
            data = await part.read()
            if part_type.strip().lower() in JSON_TYPES:
                envelope_ = parse_envelope(bytes(data), form_fallback=False)
    except (ValueError, AssertionError) as exc:
        raise errors.validation_error("multipart", "invalid", {
            "message": "failed to parse multipart body"}) from exc
    return envelope_


async def add_common_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: request id and CORS on every response, streamed ones included."""
    ctx = request.get(CONTEXT)
    if ctx is not None:
        response.headers["X-Request-ID"] = ctx.request_id
    endpoint = endpoint_of(request) if request.match_info.http_exception is None else None
    methods = ["OPTIONS", *(endpoint.allowed if endpoint else UNKNOWN_PATH_METHODS)]
    requested = request.headers.get("Access-Control-Request-Method", "").strip().upper()
    if requested and requested not in methods:
        methods.append(requested)
    allow_headers = CORS_ALLOW_HEADERS
    listed = {h.strip() for h in CORS_ALLOW_HEADERS.split(",")}
    for name in request.headers.get("Access-Control-Request-Headers", "").split(","):
        name = name.strip().lower()
        if name and name not in listed:
            listed.add(name)
            allow_headers += ", " + name
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
    response.headers["Access-Control-Allow-Headers"] = allow_headers
    response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
    response.headers["Access-Control-Max-Age"] = "86400"
    # The inbox page and its assets only (web/inbox.py); API answers stay as they were.
    response.headers.update(page_headers(request))
