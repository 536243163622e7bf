"""Token endpoints: `PUT /v2/user_auth` and `PUT /v2/api_auth` (docs/api.md 6.3–6.4), throttled."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web

from piston_vm.services.auth import login_with_api_key, login_with_credentials, parse_user_login
from piston_vm.web import envelope
from piston_vm.web.keys import CONTEXT, SETTINGS, STORES
from piston_vm.web.throttle import LOGIN_THROTTLE, login_keys


async def user_auth(request: web.Request) -> web.StreamResponse:
    ctx = request[CONTEXT]
    login = parse_user_login(ctx.data)
    keys = login_keys(ctx.remote, login.throttle_account(), login.credentials)
    with request.app[LOGIN_THROTTLE].attempt(keys):
        token, reply = await login_with_credentials(
            request.app[STORES], request.app[SETTINGS], login
        )
    # The auth PUTs ignore any token sent with them (docs/api.md 6.1), so none is echoed back.
    ctx.token = None
    return envelope.success(request, reply, status=HTTPStatus.CREATED, auth_token=token)


async def api_auth(request: web.Request) -> web.StreamResponse:
    ctx = request[CONTEXT]
    data = ctx.data
    api_key = data.get("api_key") if isinstance(data, dict) else None
    keys = login_keys(ctx.remote, (), api_key if isinstance(api_key, str) else "")
    with request.app[LOGIN_THROTTLE].attempt(keys):
        token, reply = await login_with_api_key(
            request.app[STORES], request.app[SETTINGS], api_key
        )
    ctx.token = None
    return envelope.success(request, reply, status=HTTPStatus.CREATED, auth_token=token)
