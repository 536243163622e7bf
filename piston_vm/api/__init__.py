"""HTTP entrypoints: the route table and one thin module per resource."""

from __future__ import annotations

from aiohttp import web

from piston_vm.keys import CONTEXT
from piston_vm.storage.accounts import Account


def account_of(request: web.Request) -> Account:
    """The account the gate loaded for this path (every account route passes the gate first)."""
    account = request[CONTEXT].account
    if account is None:
        raise RuntimeError("account route reached its handler without the gate")
    return account
