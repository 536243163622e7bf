"""Webhook endpoints (docs/webhooks.md, "The webhooks API"): read the request, call the service,
respond."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp import web

from piston_vm.api import account_of, call_of, list_response
from piston_vm.services.webhooks import SavedHook, WebhookService
from piston_vm.web import envelope
from piston_vm.web.keys import WEBHOOKS


def _service(request: web.Request) -> WebhookService:
    return request.app[WEBHOOKS]


def _hook_id(request: web.Request) -> str:
    return request.match_info["webhook_id"]


def _hook_response(
    request: web.Request, saved: SavedHook, status: HTTPStatus = HTTPStatus.OK,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    headers: dict[str, str] = {}
    if status == HTTPStatus.CREATED:
        headers["Location"] = f"/v2/accounts/{account_of(request).id}/webhooks/{saved.doc['_id']}"
    return envelope.success(request, {**saved.public, **(extra or {})}, status=status,
                            revision=saved.rev, headers=headers)


async def list_available(request: web.Request) -> web.StreamResponse:
    return envelope.success(request, _service(request).available(), page=envelope.Page(None, None))


async def list_hooks(request: web.Request) -> web.StreamResponse:
    page = await _service(request).listing(call_of(request), account_of(request))
    return list_response(request, page)


async def create_hook(request: web.Request) -> web.StreamResponse:
    saved = await _service(request).create(call_of(request), account_of(request))
    return _hook_response(request, saved, HTTPStatus.CREATED)


async def reenable_hooks(request: web.Request) -> web.StreamResponse:
    answer = await _service(request).reenable(call_of(request), account_of(request))
    return envelope.success(request, answer)


async def get_hook(request: web.Request) -> web.StreamResponse:
    saved = await _service(request).load(call_of(request), account_of(request), _hook_id(request))
    return _hook_response(request, saved)


async def replace_hook(request: web.Request) -> web.StreamResponse:
    saved = await _service(request).replace(
        call_of(request), account_of(request), _hook_id(request))
    return _hook_response(request, saved)


async def patch_hook(request: web.Request) -> web.StreamResponse:
    saved = await _service(request).patch(
        call_of(request), account_of(request), _hook_id(request))
    return _hook_response(request, saved)


async def delete_hook(request: web.Request) -> web.StreamResponse:
    saved = await _service(request).delete(
        call_of(request), account_of(request), _hook_id(request))
    return _hook_response(request, saved, extra={"_read_only": {"deleted": True}})


async def list_attempts(request: web.Request) -> web.StreamResponse:
    page = await _service(request).attempts(call_of(request), account_of(request), None)
    return list_response(request, page)


async def list_hook_attempts(request: web.Request) -> web.StreamResponse:
    page = await _service(request).attempts(
        call_of(request), account_of(request), _hook_id(request))
    return list_response(request, page)
