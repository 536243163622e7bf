"""Token endpoints: `PUT /v2/api_auth` (api.md 6.4); user logins live in services/auth.py."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web

from piston_vm import envelope
from piston_vm.keys import CONTEXT, SETTINGS, STORES
from piston_vm.services.auth import login_with_api_key


async def api_auth(request: web.Request) -> web.StreamResponse:
    ctx = request[CONTEXT]
    data = ctx.data
    api_key = data.get("api_key") if isinstance(data, dict) else None
    token, reply = await login_with_api_key(request.app[STORES], request.app[SETTINGS], api_key)
    ctx.token = None
    return envelope.success(request, reply, status=HTTPStatus.CREATED, auth_token=token)
