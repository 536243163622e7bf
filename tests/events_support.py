"""Shared pieces of the event tests: a real HTTP receiver on 127.0.0.1, webhook documents,
the engine's settings, and Standard Webhooks signature checks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.test_utils import TestServer

from piston_vm.core import gregorian
from piston_vm.storage.stores import Stores
from tests.conftest import Tenant

JsonObject = dict[str, Any]


def engine_overrides(**extra: Any) -> dict[str, Any]:
    """An engine of the test's own (its own engine database), quick to retry and to notice."""
    return {
        "events": True,
        "events_db": "piston_vm_events_test_" + secrets.token_hex(6),
        "webhook_allow_private": True,
        "webhook_backoff_s": 0.05,
        "webhook_timeout_s": 2.0,
        "event_lease_s": 1.5,
        "events_heartbeat_s": 1.0,
        **extra,
    }


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def fields(self) -> dict[str, str]:
        """The payload: form fields, the JSON body, or the query string (http_verb get)."""
        if self.method == "GET":
            return self.query
        if self.headers.get("Content-Type", "").startswith("application/json"):
            return dict(json.loads(self.body))
        return dict(parse_qsl(self.body.decode()))


@dataclass
class Receiver:
    """An HTTP server that records every request and answers from a script (default 200)."""

    server: TestServer
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str = "/hook") -> str:
        return str(self.server.make_url(path))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        received = Received(request.method, request.path, dict(request.query),
                            dict(request.headers), body)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status = self.statuses.pop(0) if self.statuses else 200
        async with self._arrived:
            self.requests.append(received)
            self._arrived.notify_all()
        return web.Response(status=status, text="ok" if status < 400 else "nope")

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, count: int, path: str = "/hook", timeout_s: float = 20.0,
                       **where: str) -> list[Received]:
        def matching() -> list[Received]:
            return [r for r in self.on(path)
                    if all(r.fields.get(k) == v for k, v in where.items())]

        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(matching()) >= count), timeout_s)
        return matching()

    async def quiet(self, seconds: float = 1.5) -> None:
        """Let anything still on its way arrive (to check that nothing more comes)."""
        await asyncio.sleep(seconds)


async def start_receiver() -> Receiver:
    app = web.Application()
    receiver: Receiver | None = None

    async def handle(request: web.Request) -> web.Response:
        assert receiver is not None
        return await receiver.handle(request)

    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    receiver = Receiver(server)
    return receiver


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def add_hook(stores: Stores, tenant: Tenant, uri: str, hook: str = "notifications",
                   **fields: Any) -> JsonObject:
    """A webhook document as the platform stores it in the account database."""
    doc: JsonObject = {
        "_id": secrets.token_hex(16), "name": f"{hook} hook", "uri": uri, "hook": hook,
        "http_verb": "post", "format": "form-data", "retries": 2, "enabled": True,
        "custom_data": {}, "pvt_type": "webhook", "pvt_account_id": tenant.id,
        "pvt_account_db": tenant.account.db.encoded, "pvt_created": gregorian.now(),
        "pvt_modified": gregorian.now(), "pvt_signing_secret": new_secret(), **fields,
    }
    await stores.databases.ensure_account_db(tenant.account.db)
    await stores.couch.put_doc(tenant.db, doc)
    return doc


def signature_valid(received: Received, secret: str, tolerance_s: int = 300) -> bool:
    """What a receiver following Standard Webhooks checks."""
    event_id = received.headers["webhook-id"]
    stamp = received.headers["webhook-timestamp"]
    if abs(int(stamp) - time.time()) > tolerance_s:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{event_id}.{stamp}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1)[1] for s in received.headers["webhook-signature"].split()
               if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, s) for s in offered)


async def attempts_of(stores: Stores, tenant: Tenant, hook_id: str) -> list[JsonObject]:
    """Every webhook_attempt document of the hook in the account's MODBs."""
    found: list[JsonObject] = []
    for modb in await stores.messages.all_modbs(tenant.account.db):
        rows = await stores.couch.request(
            "GET", stores.couch.url(modb.unencoded, "_all_docs"),
            params={"include_docs": "true"}, db=modb.unencoded)
        for row in rows[1]["rows"]:
            doc = row.get("doc") or {}
            if doc.get("pvt_type") == "webhook_attempt" and doc.get("hook_id") == hook_id:
                found.append(doc)
    return sorted(found, key=lambda d: (d["event_id"], d["attempt"]))
