"""A message's delivery status (docs/api.md 9.24): read the ids, ask the service, answer."""

from __future__ import annotations

from aiohttp import web

from piston_vm.api import account_of
from piston_vm.web import envelope
from piston_vm.web.keys import DELIVERY_STATUS


async def list_message_notifications(request: web.Request) -> web.StreamResponse:
    box_id, message_id = request.match_info["box_id"], request.match_info["message_id"]
    rows = await request.app[DELIVERY_STATUS].attempts(account_of(request), box_id, message_id)
    return envelope.success(request, rows)
