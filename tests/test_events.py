"""The event engine end to end (docs/events.md): API writes and writes straight into CouchDB
become events, delivered to real HTTP receivers on 127.0.0.1, signed, retried and logged."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from piston_vm.core.config import Settings
from piston_vm.storage.stores import Stores
from piston_vm.web.keys import ENGINE
from tests.conftest import AppFactory, MakeAccount, Tenant
from tests.events_support import (
    Receiver,
    add_hook,
    attempts_of,
    engine_overrides,
    signature_valid,
    start_receiver,
)
from tests.helpers import Api, assert_success
from tests.mail_support import Recorder, smtp_server
from tests.test_message_support import (
    create_box,
    create_message,
    create_message_with_audio,
    insert_message,
    message_path,
    now,
    raw_path,
)

JsonObject = dict[str, Any]

AUDIO = b"ID3\x03\x00" + os.urandom(3000)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await start_receiver()
    try:
        yield started
    finally:
        await started.server.close()


async def engine_api(make_client: AppFactory, **extra: Any) -> Api:
    client: TestClient = await make_client(**engine_overrides(**extra))  # type: ignore[type-arg]
    await client.app[ENGINE].wait_ready()
    return Api(client)


async def test_api_create_fires_voicemail_new_once_with_the_platforms_payload(
    make_client: AppFactory, account: Tenant, stores: Stores, receiver: Receiver
) -> None:
    api = await engine_api(make_client)
    hook = await add_hook(stores, account, receiver.url(), custom_data={"type": "voicemail_new"})
    box = await create_box(api, account, "3000")
    created = await create_message_with_audio(
        api, account, box, AUDIO, caller_id_name="Alice", caller_id_number="+15551234567",
        length=4580)
    [delivery] = await receiver.wait_for(1)
    fields = delivery.fields
    assert fields["event_name"] == "voicemail_new"
    assert fields["event_category"] == "notification"
    assert fields["account_id"] == account.id
    assert fields["voicemail_box"] == box
    assert fields["voicemail_id"] == created["media_id"]
    assert fields["voicemail_length"] == "4580"
    assert fields["caller_id_name"] == "Alice"
    assert fields["caller_id_number"] == "+15551234567"
    assert fields["to_user"] == "3000"
    assert fields["from_user"] == "+15551234567"
    assert fields["voicemail_timestamp"] == str(created["timestamp"])
    assert fields["call_id"] == created["call_id"]
    assert fields["type"] == "voicemail_new"  # custom_data is merged in, as the platform does
    assert delivery.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert delivery.headers["webhook-id"] == fields["msg_id"]
    assert signature_valid(delivery, hook["pvt_signing_secret"])
    await receiver.quiet()
    assert len(receiver.on("/hook")) == 1
    [attempt] = await attempts_of(stores, account, hook["_id"])
    assert attempt["result"] == "success"
    assert attempt["response_code"] == "200"
    assert attempt["retries_left"] == 2
    assert attempt["event_id"] == delivery.headers["webhook-id"]
    assert attempt["pvt_message_id"] == created["media_id"]


async def test_message_written_straight_into_a_modb_fires_like_an_api_create(
    make_client: AppFactory, account: Tenant, stores: Stores, receiver: Receiver
) -> None:
    """The platform's call handling writes messages itself: they are voicemail all the same."""
    api = await engine_api(make_client)
    await add_hook(stores, account, receiver.url())
    box = await create_box(api, account, "3001")
    message_id = await insert_message(stores, account, box, now(), mailbox="3001",
                                      audio=AUDIO, pvt_modified=now())
    [delivery] = await receiver.wait_for(1, event_name="voicemail_new")
    assert delivery.fields["voicemail_id"] == message_id
    assert delivery.fields["caller_id_number"] == "1001"
    assert delivery.fields["voicemail_length"] == "3140"


async def test_a_message_without_audio_fires_when_its_audio_arrives(
    make_client: AppFactory, account: Tenant, stores: Stores, receiver: Receiver
) -> None:
    api = await engine_api(make_client)
    await add_hook(stores, account, receiver.url(), custom_data={"type": "voicemail_new"})
    box = await create_box(api, account, "3002")
    created = await create_message(api, account, box, caller_id_number="+15550001111")
    await receiver.quiet()
    assert receiver.on("/hook") == []
    resp = await api.client.put(raw_path(account, box, created["media_id"]), data=AUDIO,
                                headers={"X-Auth-Token": account.token,
                                         "Content-Type": "audio/mpeg"})
    assert resp.status in (200, 201), await resp.text()
    [delivery] = await receiver.wait_for(1)
    assert delivery.fields["voicemail_id"] == created["media_id"]
    # Replacing the audio again is not new voicemail.
    resp = await api.client.put(raw_path(account, box, created["media_id"]), data=AUDIO[:100],
                                headers={"X-Auth-Token": account.token,
                                         "Content-Type": "audio/mpeg"})
    assert resp.status in (200, 201)
    await receiver.quiet()
    assert len(receiver.on("/hook")) == 1


async def test_saved_and_deleted_fire_on_folder_changes_with_the_reason(
    make_client: AppFactory, account: Tenant, stores: Stores, receiver: Receiver
) -> None:
    api = await engine_api(make_client)
    await add_hook(stores, account, receiver.url(), format="json")
    box = await create_box(api, account, "3003")
    created = await create_message_with_audio(api, account, box, AUDIO)
    message_id = created["media_id"]
    await receiver.wait_for(1, event_name="voicemail_new")
    path = message_path(account, box, message_id)
    resp, body = await api.call("POST", path, account.token, {"folder": "saved"})
    assert_success(resp, body)
    [saved] = await receiver.wait_for(1, event_name="voicemail_saved")
    assert saved.headers["Content-Type"] == "application/json"
    assert saved.fields["voicemail_id"] == message_id
    # An edit that leaves the folder alone is no voicemail event.
    resp, body = await api.call("POST", path, account.token, {"folder": "saved"})
    assert_success(resp, body)
    resp, body = await api.call("DELETE", path, account.token)
    assert_success(resp, body)
    [deleted] = await receiver.wait_for(1, event_name="voicemail_deleted")
    assert deleted.fields["reason"] == "crossbar_action"
    assert deleted.fields["voicemail_box"] == box
    await receiver.quiet()
    names = [r.fields["event_name"] for r in receiver.on("/hook")]
    assert names == ["voicemail_new", "voicemail_saved", "voicemail_deleted"]


async def test_a_document_removed_from_couchdb_is_deleted_voicemail_for_an_unknown_reason(
    make_client: AppFactory, account: Tenant, stores: Stores, receiver: Receiver
) -> None:
    api = await engine_api(make_client)
    await add_hook(stores, account, receiver.url(), custom_data={"type": "voicemail_deleted"})
    await add_hook(stores, account, receiver.url("/objects"), hook="object",
                   custom_data={"type": "mailbox_message", "action": "all"})
    box = await create_box(api, account, "3004")
    message_id = await insert_message(stores, account, box, now(), mailbox="3004",
                                      audio=AUDIO, pvt_modified=now())
    modb = account.account.db.modb(int(message_id[:4]), int(message_id[4:6])).unencoded
    # The engine has seen the message before it goes.
    await receiver.wait_for(1, "/objects", id=message_id, action="doc_created")
    doc = await stores.couch.get_doc(modb, message_id)
    assert doc is not None
    await stores.couch.delete_doc(modb, message_id, doc["_rev"])
    [deleted] = await receiver.wait_for(1)
    assert deleted.fields["reason"] == "unknown"
    assert deleted.fields["voicemail_id"] == message_id
    [removed] = await receiver.wait_for(1, "/objects", action="doc_deleted")
    assert removed.fields == {"account_id": account.id, "action": "doc_deleted",
                              "id": message_id, "type": "mailbox_message"}


async def test_moves_and_copies_are_not_new_voicemail_but_objects_see_them(
    make_client: AppFactory, account: Tenant, stores: Stores, receiver: Receiver
) -> None:
    api = await engine_api(make_client)
    await add_hook(stores, account, receiver.url())
    await add_hook(stores, account, receiver.url("/objects"), hook="object",
                   custom_data={"type": "mailbox_message"})
    first = await create_box(api, account, "3005")
    second = await create_box(api, account, "3006")
    third = await create_box(api, account, "3007")
    created = await create_message_with_audio(api, account, first, AUDIO)
    source = created["media_id"]
    await receiver.wait_for(1, event_name="voicemail_new")
    resp, body = await api.call("POST", message_path(account, first, source), account.token,
                                {"source_id": second})
    moved = assert_success(resp, body)["media_id"]
    resp, body = await api.call("POST", message_path(account, second, moved), account.token,
                                {"source_id": [third]})
    [copied] = assert_success(resp, body)["succeeded"]
    await receiver.wait_for(1, "/objects", id=copied, action="doc_created")
    await receiver.wait_for(1, "/objects", id=source, action="doc_deleted")
    await receiver.quiet()
    names = [r.fields["event_name"] for r in receiver.on("/hook")]
    assert names == ["voicemail_new"]
    created_ids = {r.fields["id"] for r in receiver.on("/objects")
                   if r.fields["action"] == "doc_created"}
    assert {source, moved, copied} <= created_ids


async def test_voicemail_full_fires_once_and_again_only_after_room_was_made(
    make_client: AppFactory, account: Tenant, stores: Stores, receiver: Receiver
) -> None:
    api = await engine_api(make_client)
    await add_hook(stores, account, receiver.url(), custom_data={"type": "voicemail_full"})
    box = await create_box(api, account, "3008", max_message_count=2)
    first = await create_message_with_audio(api, account, box, AUDIO)
    await create_message_with_audio(api, account, box, AUDIO)
    [full] = await receiver.wait_for(1)
    assert full.fields["voicemail_box"] == box
    assert full.fields["max_message_count"] == "2"
    assert full.fields["message_count"] == "2"
    await create_message_with_audio(api, account, box, AUDIO)
    await receiver.quiet()
    assert len(receiver.on("/hook")) == 1
    resp, body = await api.call("DELETE", message_path(account, box, first["media_id"]),
                                account.token)
    assert_success(resp, body)
    await receiver.quiet()  # 2 of 2 still: no new event
    assert len(receiver.on("/hook")) == 1
    listed = await api.call("GET", f"/v2/accounts/{account.id}/vmboxes/{box}/messages",
                            account.token)
    remaining = [m["media_id"] for m in listed[1]["data"] if m["folder"] != "deleted"]
    resp, body = await api.call("DELETE", message_path(account, box, remaining[0]),
                                account.token)
    assert_success(resp, body)
    await receiver.quiet()
    await create_message_with_audio(api, account, box, AUDIO)
    again = await receiver.wait_for(2)
    assert again[1].fields["message_count"] == "2"
    assert again[0].headers["webhook-id"] != again[1].headers["webhook-id"]


async def test_failed_deliveries_are_retried_with_backoff_and_every_attempt_logged(
    make_client: AppFactory, account: Tenant, stores: Stores, receiver: Receiver
) -> None:
    api = await engine_api(make_client)
    hook = await add_hook(stores, account, receiver.url(), retries=3)
    receiver.statuses = [500, 503]
    box = await create_box(api, account, "3010")
    created = await create_message_with_audio(api, account, box, AUDIO)
    deliveries = await receiver.wait_for(3, event_name="voicemail_new")
    assert len({d.headers["webhook-id"] for d in deliveries}) == 1
    for delivery in deliveries:
        assert signature_valid(delivery, hook["pvt_signing_secret"])
    await receiver.quiet()
    assert len(receiver.on("/hook")) == 3  # the third answer was a 200: no more
    attempts = await attempts_of(stores, account, hook["_id"])
    assert [(a["attempt"], a["result"], a["response_code"], a["retries_left"])
            for a in attempts] == [(1, "failure", "500", 3), (2, "failure", "503", 2),
                                   (3, "success", "200", 1)]
    assert all(a["pvt_message_id"] == created["media_id"] for a in attempts)
    assert attempts[0]["reason"] == "bad response code"


async def test_a_receiver_that_is_not_there_is_a_logged_failure(
    make_client: AppFactory, account: Tenant, stores: Stores, unused_tcp_port: int
) -> None:
    api = await engine_api(make_client)
    hook = await add_hook(stores, account, f"http://127.0.0.1:{unused_tcp_port}/gone",
                          retries=1)
    box = await create_box(api, account, "3011")
    await create_message_with_audio(api, account, box, AUDIO)
    for _ in range(100):
        attempts = await attempts_of(stores, account, hook["_id"])
        if len(attempts) >= 2:
            break
        await asyncio.sleep(0.1)
    assert [(a["attempt"], a["result"], a["retries_left"]) for a in attempts] == [
        (1, "failure", 1), (2, "failure", 0)]
    assert attempts[0]["client_error"]
    assert "response_code" not in attempts[0]


async def test_a_hook_failing_too_often_is_disabled_as_the_platform_does(
    make_client: AppFactory, account: Tenant, stores: Stores, receiver: Receiver
) -> None:
    api = await engine_api(make_client, webhook_failure_count=3)
    hook = await add_hook(stores, account, receiver.url(), retries=4)
    receiver.statuses = [500] * 10
    box = await create_box(api, account, "3012")
    await create_message_with_audio(api, account, box, AUDIO)
    await receiver.wait_for(3)
    await receiver.quiet()
    assert len(receiver.on("/hook")) == 3  # disabled at the third failure, retries left over
    stored = await stores.couch.get_doc(account.db, hook["_id"])
    assert stored is not None
    assert stored["enabled"] is False
    assert stored["pvt_disabled_message"] == "too many failed attempts"  # the platform's field
    resp, body = await api.call("GET", f"/v2/accounts/{account.id}/webhooks/{hook['_id']}",
                                account.token)
    assert assert_success(resp, body)["disable_reason"] == "too many failed attempts"
    await create_message_with_audio(api, account, box, AUDIO)
    await receiver.quiet(2.5)  # past the hooks cache
    assert len(receiver.on("/hook")) == 3


async def test_hooks_see_only_their_tenant_and_descendants_only_when_asked(
    make_client: AppFactory, make_account: MakeAccount, stores: Stores, receiver: Receiver
) -> None:
    api = await engine_api(make_client)
    parent = await make_account("Parent")
    child = await make_account("Child", parent=parent)
    other = await make_account("Other")
    await add_hook(stores, parent, receiver.url("/parent-all"), include_subaccounts=True)
    await add_hook(stores, parent, receiver.url("/parent-own"))
    await add_hook(stores, other, receiver.url("/other"), include_subaccounts=True)
    await add_hook(stores, child, receiver.url("/child"))
    box = await create_box(api, child, "3013")
    created = await create_message_with_audio(api, child, box, AUDIO)
    [to_parent] = await receiver.wait_for(1, "/parent-all")
    [to_child] = await receiver.wait_for(1, "/child")
    assert to_parent.fields["voicemail_id"] == created["media_id"]
    assert to_parent.fields["account_id"] == child.id
    assert to_parent.headers["webhook-id"] == to_child.headers["webhook-id"]
    await receiver.quiet()
    assert receiver.on("/parent-own") == []
    assert receiver.on("/other") == []


async def test_get_hooks_carry_the_payload_in_the_query_string(
    make_client: AppFactory, account: Tenant, stores: Stores, receiver: Receiver
) -> None:
    api = await engine_api(make_client)
    hook = await add_hook(stores, account, receiver.url(), http_verb="get",
                          custom_data={"type": "voicemail_new", "source": "piston"})
    box = await create_box(api, account, "3014")
    created = await create_message_with_audio(api, account, box, AUDIO)
    [delivery] = await receiver.wait_for(1)
    assert delivery.method == "GET"
    assert delivery.body == b""
    assert delivery.query["voicemail_id"] == created["media_id"]
    assert delivery.query["source"] == "piston"
    assert signature_valid(delivery, hook["pvt_signing_secret"])


async def test_private_addresses_are_refused_unless_allowed(
    make_client: AppFactory, account: Tenant, stores: Stores, receiver: Receiver
) -> None:
    api = await engine_api(make_client, webhook_allow_private=False)
    loopback = await add_hook(stores, account, receiver.url(), retries=0)
    by_name = await add_hook(stores, account, receiver.url().replace("127.0.0.1", "localhost"),
                             retries=0)
    box = await create_box(api, account, "3015")
    await create_message_with_audio(api, account, box, AUDIO)
    for hook in (loopback, by_name):
        for _ in range(100):
            attempts = await attempts_of(stores, account, hook["_id"])
            if attempts:
                break
            await asyncio.sleep(0.1)
        [attempt] = attempts
        assert attempt["result"] == "failure"
        assert "may not reach" in attempt["client_error"] or "not a public" in \
            attempt["client_error"]
    assert receiver.requests == []


async def test_two_workers_deliver_each_event_once(
    make_client: AppFactory, account: Tenant, stores: Stores, receiver: Receiver
) -> None:
    overrides = engine_overrides()
    first: TestClient = await make_client(**overrides)  # type: ignore[type-arg]
    await first.app[ENGINE].wait_ready()
    second: TestClient = await make_client(**overrides)  # type: ignore[type-arg]
    api = Api(first)
    await add_hook(stores, account, receiver.url(), custom_data={"type": "voicemail_new"})
    box = await create_box(api, account, "3016")
    ids = [(await create_message_with_audio(api, account, box, AUDIO))["media_id"]
           for _ in range(5)]
    await receiver.wait_for(5)
    await receiver.quiet(2.0)
    assert sorted(r.fields["voicemail_id"] for r in receiver.on("/hook")) == sorted(ids)
    # The first worker stops: the second takes its shards over and delivers what comes next.
    await first.close()
    await asyncio.sleep(0.5)
    late = await create_message(Api(second), account, box)
    resp = await second.put(raw_path(account, box, late["media_id"]), data=AUDIO,
                            headers={"X-Auth-Token": account.token, "Content-Type": "audio/mpeg"})
    assert resp.status in (200, 201)
    [delivery] = await receiver.wait_for(1, voicemail_id=late["media_id"])
    assert delivery.fields["event_name"] == "voicemail_new"


async def test_email_goes_out_from_the_engine_and_after_notify_is_deleted_voicemail(
    make_client: AppFactory, account: Tenant, stores: Stores, receiver: Receiver
) -> None:
    """The engine feeds the e-mail notifier (docs/email.md): one voicemail_new, one email;
    the after-notify move is a voicemail_deleted with the reason `delete_after_notify`."""
    recorder = Recorder()
    async with smtp_server(recorder) as port:
        api = await engine_api(make_client, smtp_host="127.0.0.1", smtp_port=port,
                               smtp_tls="none", smtp_from="voicemail@piston.test")
        await add_hook(stores, account, receiver.url(), custom_data={"type": "all"})
        box = await create_box(api, account, "3020", notify_email_addresses=["a@example.org"],
                               delete_after_notify=True)
        created = await create_message_with_audio(api, account, box, AUDIO)
        [deleted] = await receiver.wait_for(1, event_name="voicemail_deleted")
        assert deleted.fields["reason"] == "delete_after_notify"
        assert deleted.fields["voicemail_id"] == created["media_id"]
        [mail] = recorder.received
        assert mail.rcpt_tos == ["a@example.org"]
        await receiver.quiet()
        names = [r.fields["event_name"] for r in receiver.on("/hook")]
        assert names == ["voicemail_new", "voicemail_deleted"]
        assert len(recorder.received) == 1


def endpoint(settings: Settings, db: str) -> dict[str, Any]:
    """A replication endpoint: the database's URL and the admin login as a header."""
    couch = settings.couchdb
    assert couch is not None
    login = base64.b64encode(f"{couch.user}:{couch.password}".encode()).decode()
    return {"url": f"{couch.url}/{quote(db, safe='')}",
            "headers": {"Authorization": f"Basic {login}"}}


async def test_a_message_replicated_into_a_modb_is_new_voicemail(
    make_client: AppFactory, settings: Settings, account: Tenant, stores: Stores,
    receiver: Receiver,
) -> None:
    """CouchDB replication is another writer: what it brings into a MODB is voicemail too."""
    api = await engine_api(make_client)
    await add_hook(stores, account, receiver.url(), custom_data={"type": "voicemail_new"})
    box = await create_box(api, account, "3021")
    # A message made elsewhere (another CouchDB, here a database of its own) …
    message_id = await insert_message(stores, account, box, now(), mailbox="3021",
                                      pvt_modified=now())
    modb = account.account.db.modb(int(message_id[:4]), int(message_id[4:6])).unencoded
    doc = await stores.couch.get_doc(modb, message_id)
    assert doc is not None
    await stores.couch.delete_doc(modb, message_id, doc["_rev"])
    elsewhere = "replication_source_" + os.urandom(6).hex()
    await stores.couch.create_db(elsewhere)
    try:
        record = {k: v for k, v in doc.items() if k != "_rev"}
        record["_id"] = replicated = f"{message_id[:7]}{os.urandom(16).hex()}"
        record["_attachments"] = {"voice.mp3": {
            "content_type": "audio/mpeg", "data": base64.b64encode(AUDIO).decode()}}
        await stores.couch.bulk_docs(elsewhere, [record])
        # … replicated into the account's MODB (CouchDB 3 takes endpoints as URLs).
        _, result = await stores.couch.request(
            "POST", stores.couch.url("_replicate"), timeout=aiohttp.ClientTimeout(total=60),
            body={"source": endpoint(settings, elsewhere), "target": endpoint(settings, modb),
                  "doc_ids": [replicated]})
        assert result["ok"] is True
        [delivery] = await receiver.wait_for(1, voicemail_id=replicated)
        assert delivery.fields["voicemail_box"] == box
        assert delivery.fields["event_name"] == "voicemail_new"
    finally:
        await stores.couch.request("DELETE", stores.couch.url(elsewhere), db=elsewhere)
