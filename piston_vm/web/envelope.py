"""The only owner of the platform's response and error JSON shapes (docs/api.md 4 and 5)."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web

from piston_vm.core import gregorian
from piston_vm.core.errors import ApiError
from piston_vm.web.context import RequestContext
from piston_vm.web.keys import CONTEXT, SETTINGS

JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Page:
    """Pagination keys for list envelopes; None means the list was not paginated."""

    start_key: str | None
    next_start_key: str | None


@functools.lru_cache(maxsize=8)
def node_id(node_name: str) -> str:
    digest = hashlib.md5(node_name.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def list_revision(data: Any) -> str:
    return hashlib.md5(_dumps(data, pretty=False)).hexdigest()


def _dumps(payload: Any, pretty: bool) -> bytes:
    if pretty:
        return json.dumps(payload, indent=2, ensure_ascii=False).encode()
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(
    payload: Mapping[str, Any],
    status: int,
    pretty: bool = False,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    # Exactly "application/json", no charset: the browser UI and the SDKs compare it verbatim.
    all_headers = {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})}
    return web.Response(body=_dumps(payload, pretty), status=status, headers=all_headers)


def _common(request: web.Request, ctx: RequestContext | None) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    common: dict[str, Any] = {
        "request_id": ctx.request_id if ctx else "",
        "timestamp": gregorian.iso8601(),
        "node": node_id(settings.node_name),
    }
    if ctx is not None and ctx.token:
        common["auth_token"] = ctx.token
    if ctx is not None and ctx.authenticated:
        common["version"] = settings.version
    return common


def success(
    request: web.Request,
    data: Any,
    *,
    status: HTTPStatus = HTTPStatus.OK,
    revision: str | None = None,
    page: Page | None = None,
    message: str | None = None,
    headers: Mapping[str, str] | None = None,
    auth_token: str | None = None,
) -> web.Response:
    ctx = request.get(CONTEXT)
    payload = _common(request, ctx)
    payload.update({"status": "success", "data": data})
    all_headers = dict(headers or {})
    if isinstance(data, list) and revision is None:
        revision = list_revision(data)
    if revision is not None:
        payload["revision"] = revision
        all_headers.setdefault("ETag", f'"{revision}"')
    if auth_token is not None:
        payload["auth_token"] = auth_token
    if page is not None:
        payload["page_size"] = len(data) if isinstance(data, list) else 0
        if page.start_key is not None:
            payload["start_key"] = page.start_key
        if page.next_start_key is not None:
            payload["next_start_key"] = page.next_start_key
    if message is not None:
        payload["message"] = message
    return json_response(payload, status, pretty=bool(ctx and ctx.pretty), headers=all_headers)


def failure(request: web.Request, error: ApiError) -> web.Response:
    ctx = request.get(CONTEXT)
    payload = _common(request, ctx)
    payload.pop("version", None)
    payload.update(
        {
            "status": "error",
            "error": str(int(error.status)),
            "message": error.message,
            "data": error.data,
        }
    )
    return json_response(
        payload, int(error.status), pretty=bool(ctx and ctx.pretty), headers=error.headers
    )
