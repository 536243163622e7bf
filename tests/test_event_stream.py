"""The live stream (docs/events.md "The live stream"): Server-Sent Events of an account's
voicemail events, resumable with Last-Event-ID, kept alive, scoped like every endpoint."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from piston_vm.web.keys import ENGINE
from tests.conftest import AppFactory, MakeAccount, Tenant
from tests.events_support import engine_overrides
from tests.helpers import Api
from tests.test_events import AUDIO
from tests.test_message_support import create_box, create_message_with_audio

JsonObject = dict[str, Any]


def stream_path(tenant: Tenant) -> str:
    return f"/v2/accounts/{tenant.id}/events"


async def next_frame(resp: aiohttp.ClientResponse, timeout_s: float = 20.0) -> JsonObject:
    """The next frame: its fields, or {"comment": …} for a comment-only frame."""
    frame: JsonObject = {}
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), timeout_s)).decode()
        if line in ("\n", ""):
            if frame:
                return frame
            continue
        field, _, value = line.rstrip("\n").partition(":")
        value = value.removeprefix(" ")
        if field == "":
            frame.setdefault("comment", value)
        else:
            frame[field] = value


async def next_event(resp: aiohttp.ClientResponse, timeout_s: float = 20.0) -> JsonObject:
    while True:
        frame = await next_frame(resp, timeout_s)
        if "event" in frame:
            frame["payload"] = json.loads(frame["data"])
            return frame


async def engine_client(make_client: AppFactory) -> TestClient:  # type: ignore[type-arg]
    client: TestClient = await make_client(**engine_overrides())  # type: ignore[type-arg]
    await client.app[ENGINE].wait_ready()
    return client


async def test_new_voicemail_arrives_on_the_stream_with_its_id_and_payload(
    make_client: AppFactory, account: Tenant
) -> None:
    client = await engine_client(make_client)
    api = Api(client)
    box = await create_box(api, account, "4000")
    resp = await client.get(stream_path(account), params={"auth_token": account.token})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    created = await create_message_with_audio(api, account, box, AUDIO)
    event = await next_event(resp)
    assert event["event"] == "voicemail_new"
    assert event["payload"]["voicemail_id"] == created["media_id"]
    assert event["payload"]["voicemail_box"] == box
    assert event["payload"]["account_id"] == account.id
    assert event["id"] == event["payload"]["msg_id"]
    # Quiet: comments keep proxies from closing the stream (every second in these tests).
    frame = await next_frame(resp, 5)
    assert frame == {"comment": "keepalive"}
    resp.close()


async def test_last_event_id_resumes_without_gaps(
    make_client: AppFactory, account: Tenant
) -> None:
    client = await engine_client(make_client)
    api = Api(client)
    box = await create_box(api, account, "4001")
    headers = {"X-Auth-Token": account.token}
    resp = await client.get(stream_path(account), headers=headers)
    await create_message_with_audio(api, account, box, AUDIO)
    first = await next_event(resp)
    resp.close()
    missed = [(await create_message_with_audio(api, account, box, AUDIO))["media_id"]
              for _ in range(3)]
    await asyncio.sleep(1.5)  # stored by the engine while nobody listened
    resp = await client.get(stream_path(account),
                            headers={**headers, "Last-Event-ID": first["id"]})
    seen: list[str] = []
    while len(set(seen)) < 3:
        event = await next_event(resp)
        assert event["id"] != first["id"]
        seen.append(event["payload"]["voicemail_id"])
    assert sorted(set(seen)) == sorted(missed)
    resp.close()


async def test_a_stream_shows_one_tenant_and_descendants_only_when_asked(
    make_client: AppFactory, make_account: MakeAccount
) -> None:
    client = await engine_client(make_client)
    api = Api(client)
    parent = await make_account("Parent")
    child = await make_account("Child", parent=parent)
    other = await make_account("Other")
    resp = await client.get(stream_path(other), headers={"X-Auth-Token": child.token})
    assert resp.status == 403
    resp = await client.get(stream_path(parent), headers={"X-Auth-Token": child.token})
    assert resp.status == 403
    own = await client.get(stream_path(parent), headers={"X-Auth-Token": parent.token})
    tree = await client.get(stream_path(parent), headers={"X-Auth-Token": parent.token},
                            params={"include_subaccounts": "true"})
    foreign = await client.get(stream_path(other), headers={"X-Auth-Token": other.token})
    child_box = await create_box(api, child, "4002")
    created = await create_message_with_audio(api, child, child_box, AUDIO)
    event = await next_event(tree)
    assert event["payload"]["voicemail_id"] == created["media_id"]
    assert event["payload"]["account_id"] == child.id
    parent_box = await create_box(api, parent, "4003")
    mine = await create_message_with_audio(api, parent, parent_box, AUDIO)
    event = await next_event(own)
    assert event["payload"]["voicemail_id"] == mine["media_id"]  # not the child's
    frame = await next_frame(foreign, 5)
    assert frame.get("comment") in ("piston_vm events", "keepalive")
    frame = await next_frame(foreign, 5)
    assert "event" not in frame
    for resp in (own, tree, foreign):
        resp.close()
