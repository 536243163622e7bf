"""`GET /healthz` for load balancers: 200 while CouchDB answers, 503 otherwise."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web

from piston_vm.web import envelope
from piston_vm.web.keys import STORES


async def healthz(request: web.Request) -> web.StreamResponse:
    up = await request.app[STORES].couch.ping()
    status = HTTPStatus.OK if up else HTTPStatus.SERVICE_UNAVAILABLE
    return envelope.json_response(
        {"status": "ok" if up else "error", "couchdb": "up" if up else "unreachable"}, status
    )
