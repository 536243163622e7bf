"""Tenant isolation, proven by the route table (issue 5; docs/api.md 2, 5.2, 6.5).

Every route comes from the application's own router, so a route added later is walked without
editing this file (a route without a probe below still gets the generic expectations). Each
route and method is called with the tokens of eight identities against a target account, and
every response body, JSON or binary, is searched byte by byte for the other tenants' account ids,
names, box ids, message ids and audio.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientResponse, web

from piston_vm.api.routes import ENDPOINTS as ENDPOINT_ROWS
from piston_vm.core import gregorian, tokens
from piston_vm.storage.stores import Stores
from piston_vm.web.routing import ENDPOINTS as ENDPOINT_TABLE
from tests.conftest import MakeAccount, Tenant
from tests.helpers import Api, assert_error
from tests.test_message_support import (
    create_box,
    create_message_with_audio,
    must_stored,
    stored_attachments,
)

JsonObject = dict[str, Any]

AUTHORIZED = ("owner", "parent", "superduper")
FORBIDDEN = ("child", "sibling", "unrelated")
UNAUTHENTICATED = ("none", "bad")
IDENTITIES = AUTHORIZED + FORBIDDEN + UNAUTHENTICATED
# The tenants that own data: every identity with a token of a real account.
OWNERS = AUTHORIZED + FORBIDDEN
MESSAGES_PER_BOX = 2

ACCOUNT_PREFIX = "/v2/accounts/{account_id}"
CATCH_ALL = "/{tail}"
PATH_PARAM = re.compile(r"\{(\w+)\}")
SAFE_METHODS = ("GET", "HEAD")


# -- the world: six tenants with their own boxes, messages and audio ------------------------


@dataclass
class Holdings:
    tenant: Tenant
    name: str
    box_id: str
    message_ids: list[str]
    audio: dict[str, bytes]  # message id -> bytes
    hook_id: str = ""
    secret: str = ""
    attempt_event_id: str = ""

    def markers(self) -> dict[bytes, str]:
        """Every byte string that identifies this tenant's data, with a label for messages."""
        found: dict[bytes, str] = {
            self.tenant.id.encode(): "account id",
            self.name.encode(): "account name",
            self.box_id.encode(): "box id",
        }
        for message_id in self.message_ids:
            found[message_id.encode()] = "message id"
            found[message_id.split("-", 1)[1].encode()] = "message id (hex part)"
        for audio in self.audio.values():
            found[audio] = "audio bytes"
            found[base64.b64encode(audio)] = "audio bytes (base64)"
        found[self.hook_id.encode()] = "webhook id"
        found[self.secret.encode()] = "webhook signing secret"
        found[self.attempt_event_id.encode()] = "webhook attempt"
        return found


@dataclass
class World:
    api: Api
    stores: Stores
    held: dict[str, Holdings]
    token: dict[str, str | None]
    log: list[str] = field(default_factory=list)

    @property
    def target(self) -> Holdings:
        return self.held["owner"]

    def foreign_markers(self) -> dict[bytes, str]:
        markers: dict[bytes, str] = {}
        for role, holdings in self.held.items():
            if role != "owner":
                markers.update({k: f"{role}'s {v}" for k, v in holdings.markers().items()})
        return markers


async def build_world(api: Api, make_account: MakeAccount, stores: Stores) -> World:
    tag = secrets.token_hex(4)
    parent = await make_account(f"Iso parent {tag}")
    owner = await make_account(f"Iso target {tag}", parent=parent)
    tenants = {
        "owner": owner,
        "parent": parent,
        "child": await make_account(f"Iso child {tag}", parent=owner),
        "sibling": await make_account(f"Iso sibling {tag}", parent=parent),
        "unrelated": await make_account(f"Iso unrelated {tag}"),
        "superduper": await make_account(f"Iso superduper {tag}", superduper=True),
    }
    held: dict[str, Holdings] = {}
    for role, tenant in tenants.items():
        box_id = await create_box(api, tenant, "1000", id=f"iso{role}{secrets.token_hex(12)}",
                                  name=f"Box of {role} {tag}")
        audio: dict[str, bytes] = {}
        for n in range(MESSAGES_PER_BOX):
            payload = f"AUDIO-{role}-{n}-".encode() + secrets.token_bytes(48)
            data = await create_message_with_audio(api, tenant, box_id, payload,
                                                   content_type="audio/mpeg",
                                                   caller_id_number=f"{n}00{n}")
            audio[data["media_id"]] = payload
        name = str(tenant.account.name)
        hook = await create_hook(api, tenant, f"Hook of {role} {tag}")
        event_id = f"isoevent{role}{secrets.token_hex(12)}"
        created = gregorian.now() - 60
        await stores.webhooks.add_attempt(
            tenant.account, tenant.account.db.modb(*gregorian.utc_month(created)),
            {"hook_id": hook["id"], "result": "success", "event_id": event_id,
             "pvt_created": created})
        held[role] = Holdings(tenant, name, box_id, list(audio), audio, hook["id"],
                              hook["signing_secret"], event_id)
    token: dict[str, str | None] = {role: tenants[role].token for role in tenants}
    token["none"] = None
    # Well formed, names the target, but signed with another secret.
    token["bad"] = tokens.issue("not-the-test-secret", owner.id, "cb_api_auth", 3600)
    return World(api, stores, held, token)


async def create_hook(api: Api, tenant: Tenant, name: str) -> JsonObject:
    resp = await api.client.put(
        f"/v2/accounts/{tenant.id}/webhooks", headers={"X-Auth-Token": tenant.token},
        json={"data": {"name": name, "uri": "https://receiver.example.com/", "hook": "object",
                       "custom_data": {"type": "all", "action": "all"}}})
    assert resp.status == 201, await resp.text()
    data: JsonObject = data_of(await resp.read())
    return data


# -- the route table, read from the router ---------------------------------------------------


@dataclass(frozen=True)
class Route:
    canonical: str
    methods: tuple[str, ...]

    @property
    def account_scoped(self) -> bool:
        return "{account_id}" in self.canonical

    @property
    def suffix(self) -> str:
        return self.canonical.removeprefix(ACCOUNT_PREFIX)


def routes_of(app: web.Application) -> list[Route]:
    """Every resource of the router but the catch-all and the trailing-slash duplicates."""
    resources = list(app.router.resources())
    canonicals = {r.canonical for r in resources}
    table = app[ENDPOINT_TABLE]
    routes: list[Route] = []
    for resource in resources:
        path = resource.canonical
        if path == CATCH_ALL or (path.endswith("/") and path[:-1] in canonicals):
            continue
        endpoint = table.get(path)
        if endpoint is not None:
            methods = list(endpoint.allowed)
        else:
            methods = [r.method for r in resource if r.method != "*"] or ["GET"]
        if "GET" in methods and "HEAD" not in methods:
            methods.append("HEAD")
        routes.append(Route(path, tuple(dict.fromkeys(methods))))
    return routes


def fill(canonical: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"{canonical}: no value for path parameter {{{name}}}"
        return values[name]

    return PATH_PARAM.sub(value, canonical)


# -- one call and its expectations -------------------------------------------------------------


Check = Callable[[bytes], None]


@dataclass
class Call:
    path: str
    expected: frozenset[int]
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    check: Check | None = None
    # A stream that does not end (the live event stream): its opening is all that is read.
    stream: bool = False


def envelope(data: Any) -> bytes:
    return json.dumps({"data": data}).encode()


def json_call(path: str, data: Any, *expected: int, check: Check | None = None) -> Call:
    return Call(path, frozenset(expected), envelope(data),
                {"Content-Type": "application/json"}, check)


def data_of(raw: bytes) -> Any:
    return json.loads(raw)["data"]


async def send(world: World, method: str, call: Call, token: str | None) -> tuple[int, bytes]:
    headers = dict(call.headers)
    if token is not None:
        headers["X-Auth-Token"] = token
    resp: ClientResponse = await world.api.client.request(
        method, call.path, data=call.body, headers=headers)
    if call.stream and resp.status == 200 and method != "HEAD":
        raw = await resp.content.readuntil(b"\n\n")
        resp.close()
        return resp.status, raw
    raw = await resp.read()
    if resp.status in (401, 403) and method != "HEAD":
        body = json.loads(raw)
        message = "invalid_credentials" if resp.status == 401 else "forbidden"
        assert_error(resp, body, resp.status, message)
    return resp.status, raw


def assert_no_leak(raw: bytes, markers: dict[bytes, str], context: str, request: bytes) -> None:
    """No marker in the response, unless the request itself carried it (an echoed cause)."""
    for marker, label in markers.items():
        if marker in raw and marker not in request:
            raise AssertionError(f"{context}: the response contains {label} {marker[:40]!r}")


async def sacrificial_message(world: World) -> tuple[str, str]:
    """A fresh box with a message in the target account, for one destructive call."""
    target = world.target.tenant
    box_id = await create_box(world.api, target, str(2000 + len(world.log)))
    world.log.append(box_id)
    data = await create_message_with_audio(world.api, target, box_id, b"sacrificial-audio")
    return box_id, str(data["media_id"])


async def authorized_call(world: World, route: Route, method: str, role: str) -> Call:
    """What an identity allowed on the target does, and what it must get (normal success)."""
    t = world.target
    m1, m2 = t.message_ids
    values = {"account_id": t.tenant.id, "box_id": t.box_id, "message_id": m1,
              "webhook_id": t.hook_id}
    path = fill(route.canonical, values)
    key = (route.suffix, "GET" if method == "HEAD" else method)

    def contains(*needles: bytes) -> Check:
        def check(raw: bytes) -> None:
            if method != "HEAD":
                for needle in needles:
                    assert needle in raw, f"{method} {path}: {needle[:40]!r} missing"
        return check

    if key == ("/vmboxes", "GET"):
        return Call(path, frozenset({200}), check=contains(t.box_id.encode()))
    if key == ("/events", "GET"):
        return Call(path, frozenset({200}), check=contains(b"piston_vm events"), stream=True)
    if key == ("/vmboxes", "PUT"):
        return json_call(path, {"mailbox": "not-a-number", "name": "refused"}, 400)
    if key == ("/vmboxes/messages", "GET"):
        return Call(path, frozenset({200}), check=contains(m1.encode(), m2.encode()))
    if key == ("/vmboxes/{box_id}", "GET"):
        return Call(path, frozenset({200}), check=contains(t.box_id.encode()))
    if key == ("/vmboxes/{box_id}", "POST"):
        resp = await world.api.client.get(path, headers={"X-Auth-Token": t.tenant.token})
        return json_call(path, data_of(await resp.read()), 200)
    if key == ("/vmboxes/{box_id}", "PATCH"):
        return json_call(path, {f"iso_probe_{role}": True}, 200)
    if key == ("/vmboxes/{box_id}", "DELETE"):
        box_id, _ = await sacrificial_message(world)
        return json_call(fill(route.canonical, {**values, "box_id": box_id}), {}, 200,
                         check=contains(b'"deleted":true'))
    if key == ("/vmboxes/{box_id}/messages", "GET"):
        return Call(path, frozenset({200}), check=contains(m1.encode(), m2.encode()))
    if key == ("/vmboxes/{box_id}/messages", "PUT"):
        return json_call(path, {"folder": "bogus"}, 400)
    if key == ("/vmboxes/{box_id}/messages", "POST"):
        return json_call(path, {"messages": [m1, m2], "folder": "new"}, 200)
    if key == ("/vmboxes/{box_id}/messages", "DELETE"):
        return json_call(path, {"messages": []}, 200)
    if key == ("/vmboxes/{box_id}/messages/raw", "POST"):
        call = json_call(path, {"messages": [m1, m2]}, 200,
                         check=contains(t.audio[m1], t.audio[m2]))
        call.headers["Accept"] = "application/zip"
        return call
    if key == ("/vmboxes/{box_id}/messages/{message_id}", "GET"):
        return Call(path, frozenset({200}), check=contains(m1.encode()))
    if key == ("/vmboxes/{box_id}/messages/{message_id}", "POST"):
        return json_call(path, {"folder": "new"}, 200)
    if key == ("/vmboxes/{box_id}/messages/{message_id}", "DELETE"):
        box_id, message_id = await sacrificial_message(world)
        return json_call(fill(route.canonical, {**values, "box_id": box_id,
                                                "message_id": message_id}), {}, 200)
    if key == ("/vmboxes/{box_id}/messages/{message_id}/raw", "GET"):
        def same_audio(raw: bytes) -> None:
            assert method == "HEAD" or raw == t.audio[m1], f"GET {path}: wrong audio"
        return Call(path, frozenset({200}), check=same_audio)
    if key == ("/vmboxes/{box_id}/messages/{message_id}/raw", "PUT"):
        return Call(path, frozenset({201}), t.audio[m1], {"Content-Type": "audio/mpeg"})
    if key == ("/webhooks", "GET"):
        return Call(path, frozenset({200}), check=contains(t.hook_id.encode()))
    if key == ("/webhooks", "PUT"):
        return json_call(path, {"name": "refused", "uri": "https://x.example/", "hook": "bogus"},
                         400)
    if key == ("/webhooks", "PATCH"):
        return json_call(path, {"re-enable": True}, 200, check=contains(b"hooks updated"))
    if key in (("/webhooks/attempts", "GET"), ("/webhooks/{webhook_id}/attempts", "GET")):
        return Call(path, frozenset({200}), check=contains(t.attempt_event_id.encode()))
    if key == ("/webhooks/{webhook_id}", "GET"):
        def secret_to_its_account(raw: bytes) -> None:
            if method != "HEAD":
                assert t.hook_id.encode() in raw, f"GET {path}: the hook is missing"
                shown = t.secret.encode() in raw
                assert shown == (role == "owner"), f"GET {path} as {role}: secret shown {shown}"
        return Call(path, frozenset({200}), check=secret_to_its_account)
    if key == ("/webhooks/{webhook_id}", "POST"):
        resp = await world.api.client.get(path, headers={"X-Auth-Token": t.tenant.token})
        return json_call(path, data_of(await resp.read()), 200)
    if key == ("/webhooks/{webhook_id}", "PATCH"):
        return json_call(path, {"ui_metadata": {"iso_probe": role}}, 200)
    if key == ("/webhooks/{webhook_id}", "DELETE"):
        hook = await create_hook(world.api, t.tenant, f"Sacrificial {len(world.log)}")
        world.log.append(hook["id"])
        return json_call(fill(route.canonical, {**values, "webhook_id": hook["id"]}), {}, 200,
                         check=contains(b'"deleted":true'))
    # A route this file has no probe for: reads must succeed, writes must pass the gate.
    if method in SAFE_METHODS:
        return Call(path, frozenset(range(200, 300)))
    return json_call(path, {}, *(s for s in range(400, 500) if s not in (401, 403)))


def open_call(route: Route, method: str) -> Call:
    """Routes outside /accounts: the same answer for everyone, and never a tenant's data."""
    if route.canonical == "/v2/api_auth":
        # Failed logins are throttled (issue 5): after a few, 429 is the right answer too.
        return json_call(route.canonical, {"api_key": "0" * 64}, 401, 429)
    if route.canonical == "/v2/user_auth":
        return json_call(route.canonical, {"credentials": "0" * 32, "account_name": "nobody"},
                         400, 401, 429)
    if method in SAFE_METHODS:
        return Call(route.canonical, frozenset(range(200, 300)))
    return json_call(route.canonical, {}, *range(200, 500))


async def verify_untouched(world: World) -> None:
    """After the walk: every tenant's box, messages (folder `new`, live) and audio are intact."""
    for role, holdings in world.held.items():
        tenant = holdings.tenant
        box = await world.stores.couch.get_doc(tenant.db, holdings.box_id)
        assert box is not None
        assert not box.get("pvt_deleted"), f"{role}'s box was deleted"
        for message_id, audio in holdings.audio.items():
            doc = await must_stored(world.stores, tenant, message_id)
            assert not doc.get("pvt_deleted"), f"{role}'s message {message_id} was deleted"
            assert doc["metadata"]["folder"] == "new", f"{role}'s {message_id} changed folder"
            assert doc["source_id"] == holdings.box_id
            stored = [b for _, b in (await stored_attachments(
                world.stores, tenant, message_id)).values()]
            assert stored == [audio], f"{role}'s {message_id} audio changed"
    for role, holdings in world.held.items():
        hook = await world.stores.webhooks.get(holdings.tenant.account, holdings.hook_id)
        assert hook is not None, f"{role}'s webhook was deleted"
        assert hook["pvt_signing_secret"] == holdings.secret, f"{role}'s secret changed"
        if role != "owner":
            assert "ui_metadata" not in hook, f"{role}'s webhook was changed"
    path = f"/v2/accounts/{world.target.tenant.id}/vmboxes/{world.target.box_id}/messages"
    resp = await world.api.client.get(path, headers={"X-Auth-Token": world.target.tenant.token},
                                      params={"paginate": "false"})
    listed = [row["media_id"] for row in data_of(await resp.read())]
    assert sorted(listed) == sorted(world.target.message_ids)


# -- the tests ---------------------------------------------------------------------------------


async def test_every_route_with_every_identity(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    world = await build_world(api, make_account, stores)
    routes = routes_of(api.client.app)
    walked = {r.canonical for r in routes}
    rows = {row.path.replace("{account_id:[^/]*}", "{account_id}") for row in ENDPOINT_ROWS}
    assert rows <= walked, f"Endpoint rows the router does not expose: {rows - walked}"
    assert len(routes) >= len(ENDPOINT_ROWS)
    foreign = world.foreign_markers()
    target_markers = world.target.markers()
    del target_markers[world.target.tenant.id.encode()]  # the path names it
    del target_markers[world.target.box_id.encode()]
    calls = 0
    for route in routes:
        for method in route.methods:
            for role in IDENTITIES:
                token = world.token[role]
                if not route.account_scoped:
                    call = open_call(route, method)
                elif role in AUTHORIZED:
                    call = await authorized_call(world, route, method, role)
                else:
                    unauthenticated = role in UNAUTHENTICATED
                    values = {"account_id": world.target.tenant.id,
                              "box_id": world.target.box_id,
                              "message_id": world.target.message_ids[0],
                              "webhook_id": world.target.hook_id}
                    call = Call(fill(route.canonical, values),
                                frozenset({401 if unauthenticated else 403}))
                    if method not in SAFE_METHODS:
                        call.body = envelope({})
                        call.headers["Content-Type"] = "application/json"
                status, raw = await send(world, method, call, token)
                context = f"{method} {route.canonical} as {role}"
                calls += 1
                assert status in call.expected, f"{context}: {status} {raw[:300]!r}"
                request = call.path.encode() + (call.body or b"")
                assert_no_leak(raw, foreign, context, request)
                if status in (401, 403):
                    assert_no_leak(raw, target_markers, context, request)
                if call.check is not None:
                    call.check(raw)
    assert calls == sum(len(r.methods) for r in routes) * len(IDENTITIES)
    print(f"isolation: {len(routes)} routes, {calls // len(IDENTITIES)} route-methods "
          f"x {len(IDENTITIES)} identities = {calls} calls")
    await verify_untouched(world)


async def test_own_token_cannot_reach_foreign_ids_through_its_own_path(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    """Another tenant's box or message id under the target's own account path is a 404."""
    world = await build_world(api, make_account, stores)
    t = world.target
    own = f"/v2/accounts/{t.tenant.id}/vmboxes"
    foreign = world.foreign_markers()
    m1 = t.message_ids[0]
    for role in ("parent", "child", "sibling", "unrelated", "superduper"):
        other = world.held[role]
        box, message = other.box_id, other.message_ids[0]
        probes: list[tuple[str, str, Call]] = [
            ("GET", "box", Call(f"{own}/{box}", frozenset({404}))),
            ("PATCH", "box", json_call(f"{own}/{box}", {"name": "hijacked"}, 404)),
            ("POST", "box", json_call(f"{own}/{box}", {"name": "hijacked", "mailbox": "7"},
                                      404)),
            ("DELETE", "box", json_call(f"{own}/{box}", {}, 404)),
            ("PUT", "message into box", json_call(f"{own}/{box}/messages", {}, 404)),
            ("GET", "message", Call(f"{own}/{t.box_id}/messages/{message}", frozenset({404}))),
            ("GET", "message", Call(f"{own}/{box}/messages/{message}", frozenset({404}))),
            ("GET", "raw", Call(f"{own}/{t.box_id}/messages/{message}/raw", frozenset({404}))),
            ("GET", "raw", Call(f"{own}/{box}/messages/{message}/raw", frozenset({404}))),
            ("POST", "message", json_call(f"{own}/{box}/messages/{message}",
                                          {"folder": "saved"}, 404)),
            ("DELETE", "message", json_call(f"{own}/{t.box_id}/messages/{message}", {}, 404)),
            ("PUT", "raw", Call(f"{own}/{box}/messages/{message}/raw", frozenset({404}),
                                b"hijack", {"Content-Type": "audio/mpeg"})),
            ("POST", "zip", json_call(f"{own}/{box}/messages/raw", {"messages": [message]},
                                      404)),
            ("POST", "zip", json_call(f"{own}/{t.box_id}/messages/raw",
                                      {"messages": [message]}, 404)),
            ("POST", "move to foreign box", json_call(
                f"{own}/{t.box_id}/messages/{m1}", {"source_id": box}, 404)),
            ("POST", "bulk copy to foreign box", json_call(
                f"{own}/{t.box_id}/messages", {"messages": [m1], "source_id": [box]}, 404)),
        ]
        hooks = f"/v2/accounts/{t.tenant.id}/webhooks"
        hook = other.hook_id
        probes += [
            ("GET", "webhook", Call(f"{hooks}/{hook}", frozenset({404}))),
            ("POST", "webhook", json_call(f"{hooks}/{hook}", {
                "name": "hijacked", "uri": "https://x.example/", "hook": "all"}, 404)),
            ("PATCH", "webhook", json_call(f"{hooks}/{hook}", {"rotate_signing_secret": True},
                                           404)),
            ("DELETE", "webhook", json_call(f"{hooks}/{hook}", {}, 404)),
        ]
        for method, what, call in probes:
            status, raw = await send(world, method, call, t.tenant.token)
            context = f"{method} {what} of {role} ({call.path})"
            assert status in call.expected, f"{context}: {status} {raw[:300]!r}"
            assert_no_leak(raw, foreign, context, call.path.encode() + (call.body or b""))
        # Lists and bulk changes answer 200, but see nothing of the other tenant.
        listing = await send(world, "GET", Call(f"{own}/{box}/messages?paginate=false",
                                                frozenset({200})), t.tenant.token)
        assert listing[0] == 200
        assert data_of(listing[1]) == []
        for method, data in (("POST", {"messages": [message], "folder": "saved"}),
                             ("DELETE", {"messages": [message]})):
            call = json_call(f"{own}/{t.box_id}/messages", data, 200)
            status, raw = await send(world, method, call, t.tenant.token)
            assert status == 200, raw
            assert data_of(raw) == {"failed": [{message: "not_found"}]}, (method, raw)
        status, raw = await send(world, "GET", Call(f"{own}/messages", frozenset({200})),
                                 t.tenant.token)
        assert status == 200
        assert_no_leak(raw, foreign, "account-wide list", b"")
        status, raw = await send(world, "GET", Call(f"{hooks}/{hook}/attempts",
                                                    frozenset({200})), t.tenant.token)
        assert (status, data_of(raw)) == (200, [])
        for path in (hooks, f"{hooks}/attempts"):
            status, raw = await send(world, "GET", Call(path, frozenset({200})), t.tenant.token)
            assert status == 200
            assert_no_leak(raw, foreign, path, b"")
    await verify_untouched(world)


async def test_tokens_in_query_and_bearer_obey_the_same_scope(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    world = await build_world(api, make_account, stores)
    t = world.target
    m1 = t.message_ids[0]
    raw_path = f"/v2/accounts/{t.tenant.id}/vmboxes/{t.box_id}/messages/{m1}/raw"
    for role in FORBIDDEN:
        token = world.held[role].tenant.token
        resp = await api.client.get(raw_path, params={"auth_token": token})
        assert resp.status == 403, role
        assert t.audio[m1] not in await resp.read()
        resp = await api.client.get(raw_path, headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 403, role
    for role in AUTHORIZED:
        resp = await api.client.get(raw_path,
                                    params={"auth_token": world.held[role].tenant.token})
        assert resp.status == 200, role
        assert hashlib.sha256(await resp.read()).digest() == hashlib.sha256(t.audio[m1]).digest()
    resp = await api.client.get(raw_path, params={"auth_token": str(world.token["bad"])})
    assert resp.status == 401
