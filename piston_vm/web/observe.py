"""The access log and the request metrics: one middleware outside all others (docs/operations.md,
"Logs" and "Metrics").

It sees every request that reached the app, with the answer the error middleware made of it.
A streamed answer (audio, ZIP) is complete when the handler returns, so its bytes and duration
are exact; a plain answer is sent right after, and its size is its body's. Requests aiohttp's
own parser refuses (a header over 8190 bytes) never reach the app and are not counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import unquote_plus

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from piston_vm.core.logs import ACCESS_FIELDS, ACCESS_LOGGER
from piston_vm.core.metrics import UNMATCHED_ROUTE, Metrics
from piston_vm.web.context import RequestContext
from piston_vm.web.keys import CONTEXT
from piston_vm.web.routing import CATCH_ALL_CANONICAL

access_log = logging.getLogger(ACCESS_LOGGER)

REDACTED = "REDACTED"
# Request values may come from the query string (docs/api.md 3.3), secrets included: their
# values never reach a log.
SECRET_QUERY_NAMES = frozenset({
    "auth_token", "authorization", "api_key", "credentials", "password", "pin", "token",
})
# nginx's code for "the client closed the connection before the answer".
CLIENT_GONE_STATUS = 499
ACCESS_FORMAT = ("remote=%s method=%s path=%s status=%d bytes_in=%d bytes_out=%d "
                 "duration_ms=%.2f account_id=%s")


def route_template(request: web.Request) -> str:
    """The route's template (`/v2/accounts/{account_id}/vmboxes`), never the raw path."""
    match = request.match_info
    if match.http_exception is not None:
        return UNMATCHED_ROUTE
    resource = match.route.resource
    if resource is None:
        return UNMATCHED_ROUTE
    template = resource.canonical
    if template == CATCH_ALL_CANONICAL:
        return UNMATCHED_ROUTE
    # Every path is routed with and without its trailing slash: one series for both.
    return template[:-1] if len(template) > 1 and template.endswith("/") else template


def redacted_path(raw_path: str) -> str:
    """The path as sent, with the value of every secret query parameter replaced."""
    path, mark, query = raw_path.partition("?")
    if not mark:
        return path
    parts = []
    for item in query.split("&"):
        name, equals, _ = item.partition("=")
        if equals and unquote_plus(name).strip().lower() in SECRET_QUERY_NAMES:
            item = f"{name}={REDACTED}"
        parts.append(item)
    return f"{path}?{'&'.join(parts)}"


def _bytes_out(
    request: web.Request, response: web.StreamResponse | None, ctx: RequestContext | None
) -> int:
    """Body bytes: what a streamed answer wrote, else the body aiohttp sends next."""
    if response is None or request.method == "HEAD":
        return 0
    if response.prepared:
        return ctx.bytes_streamed if ctx is not None else 0
    return response.content_length or 0


def _log_access(
    request: web.Request, bytes_out: int, status: int, route: str, duration_s: float,
) -> None:
    ctx = request.get(CONTEXT)
    account = auth_account = None
    request_id = "-"
    remote = request.remote
    if ctx is not None:
        request_id, remote = ctx.request_id, ctx.remote
        auth_account = ctx.auth_account.id if ctx.auth_account is not None else None
        account = ctx.account.id if ctx.account is not None else auth_account
    path = redacted_path(request.raw_path)
    bytes_in = request.content.total_bytes
    duration_ms = round(duration_s * 1000, 2)
    # Never headers, bodies or the token: what identifies the caller is the account id.
    access_log.info(
        ACCESS_FORMAT, remote or "-", request.method, path, status, bytes_in, bytes_out,
        duration_ms, account or "-",
        extra={"request_id": request_id, ACCESS_FIELDS: {
            "remote": remote, "method": request.method, "path": path, "route": route,
            "status": status, "bytes_in": bytes_in, "bytes_out": bytes_out,
            "duration_ms": duration_ms, "account_id": account,
            "auth_account_id": auth_account}})


def _record(
    request: web.Request, bytes_out: int, status: int, duration_s: float, access_log_on: bool,
    metrics: Metrics,
) -> None:
    route = route_template(request)
    metrics.http_request(route, request.method, status, duration_s)
    if access_log_on and access_log.isEnabledFor(logging.INFO):
        _log_access(request, bytes_out, status, route, duration_s)


def observe_middleware(access_log_on: bool, metrics: Metrics) -> Middleware | None:
    """The middleware for these switches; None when both are off (then it costs nothing)."""
    if not access_log_on and not metrics.enabled:
        return None

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response: web.StreamResponse | None = None
        status = CLIENT_GONE_STATUS
        try:
            response = await handler(request)
            status = response.status
            return response
        except asyncio.CancelledError:
            raise
        except BaseException:
            # The error middleware answers every Exception; what gets here broke the request.
            status = 500
            raise
        finally:
            duration_s = time.perf_counter() - started
            # A plain answer is written after this middleware returns: record it on the loop's
            # next turn, once its bytes are on their way, so the log line and the metrics cost
            # the client no latency (they still cost CPU).
            # The body size is read now: a plain answer counts as "prepared" once it is sent.
            bytes_out = _bytes_out(request, response, request.get(CONTEXT))
            asyncio.get_running_loop().call_soon(
                _record, request, bytes_out, status, duration_s, access_log_on, metrics)

    return observe
