"""Voicemail box endpoints (docs/api.md 9.1–9.6): read the request, call the service, respond."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp import web

from piston_vm.api import account_of, call_of
from piston_vm.services.vmboxes import LEGACY_MESSAGE, SavedBox, VmboxService
from piston_vm.web import envelope
from piston_vm.web.keys import CONTEXT, VMBOXES

NOTIFY_WARNING = "214 Transformation applied: attribute notify_email_address replaced"


def _service(request: web.Request) -> VmboxService:
    return request.app[VMBOXES]


def _box_response(
    request: web.Request, saved: SavedBox, status: HTTPStatus = HTTPStatus.OK,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    headers: dict[str, str] = {}
    data = request[CONTEXT].data
    emails = data.get("notify_email_addresses") if isinstance(data, dict) else None
    if request.method != "DELETE" and isinstance(emails, list) and emails:
        headers["Warning"] = NOTIFY_WARNING
    if status == HTTPStatus.CREATED:
        headers["Location"] = f"/v2/accounts/{account_of(request).id}/vmboxes/{saved.doc['_id']}"
    return envelope.success(
        request, {**saved.public, **(extra or {})}, status=status, revision=saved.rev,
        message=LEGACY_MESSAGE if saved.has_legacy_messages else None, headers=headers,
    )


async def list_boxes(request: web.Request) -> web.StreamResponse:
    rows, next_cursor, start_key, paginated = await _service(request).listing(
        call_of(request), account_of(request)
    )
    page = envelope.Page(start_key, next_cursor.encode() if next_cursor else None)
    return envelope.success(request, rows, page=page if paginated else None)


async def create_box(request: web.Request) -> web.StreamResponse:
    saved = await _service(request).create(call_of(request), account_of(request))
    return _box_response(request, saved, HTTPStatus.CREATED)


async def get_box(request: web.Request) -> web.StreamResponse:
    doc = await _service(request).load(account_of(request), request.match_info["box_id"])
    return _box_response(request, SavedBox(doc, False))


async def replace_box(request: web.Request) -> web.StreamResponse:
    saved = await _service(request).replace(
        call_of(request), account_of(request), request.match_info["box_id"]
    )
    return _box_response(request, saved)


async def patch_box(request: web.Request) -> web.StreamResponse:
    saved = await _service(request).patch(
        call_of(request), account_of(request), request.match_info["box_id"]
    )
    return _box_response(request, saved)


async def delete_box(request: web.Request) -> web.StreamResponse:
    saved = await _service(request).delete(
        call_of(request), account_of(request), request.match_info["box_id"]
    )
    response = _box_response(request, SavedBox(saved.doc, False),
                             extra={"_read_only": {"deleted": True}})
    return response
