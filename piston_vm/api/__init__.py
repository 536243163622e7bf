"""HTTP entrypoints: the route table and one thin module per resource."""

from __future__ import annotations

from aiohttp import web

from piston_vm.core.call import Call
from piston_vm.services.base import ListPage
from piston_vm.storage.accounts import Account
from piston_vm.web import envelope
from piston_vm.web.keys import CONTEXT


def account_of(request: web.Request) -> Account:
    """The account the gate loaded for this path (every account route passes the gate first)."""
    account = request[CONTEXT].account
    if account is None:
        raise RuntimeError("account route reached its handler without the gate")
    return account


def call_of(request: web.Request) -> Call:
    """What the use case gets of this request (its body already read)."""
    return request[CONTEXT].call()


def list_response(request: web.Request, page: ListPage) -> web.Response:
    """A list's answer: its rows, and the paging keys when it was paginated (docs/api.md 8.1)."""
    cursor = page.next_cursor.encode() if page.next_cursor else None
    return envelope.success(
        request, page.rows,
        page=envelope.Page(page.start_key, cursor) if page.paginated else None)
