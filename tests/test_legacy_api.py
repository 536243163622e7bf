"""Legacy (pre-4.0) messages seen through the HTTP API: lazy migration before every operation."""

from __future__ import annotations

import hashlib

from piston_vm.core import gregorian
from piston_vm.storage.stores import Stores
from tests.conftest import Tenant
from tests.helpers import Api, assert_error, assert_success
from tests.test_legacy import audio_bytes, element, put_box, put_media

DAY_S = 86_400


async def recent_legacy_box(
    stores: Stores, tenant: Tenant, count: int = 3, mailbox: str = "3001"
) -> tuple[str, dict[str, bytes], dict[str, int]]:
    """A legacy box whose entries are inside the retention window (listed by default)."""
    box_id_seed = hashlib.md5(f"{tenant.id}{mailbox}".encode()).hexdigest()
    audio: dict[str, bytes] = {}
    times: dict[str, int] = {}
    elements = []
    now = gregorian.now()
    for n in range(count):
        data = audio_bytes(f"{box_id_seed}:{n}")
        media_id = await put_media(stores, tenant, box_id_seed, data)
        times[media_id] = now - (n + 1) * DAY_S
        audio[media_id] = data
        elements.append(element(media_id, times[media_id]))
    await put_box(stores, tenant, elements, mailbox=mailbox, _id=box_id_seed)
    return box_id_seed, audio, times


def month_prefix(time: int) -> str:
    year, month = gregorian.utc_month(time)
    return f"{year:04d}{month:02d}-"


async def test_box_listing_counts_legacy_entries_and_message_listing_migrates_them(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box_id, audio, times = await recent_legacy_box(stores, account)
    resp, body = await api.call("GET", f"/v2/accounts/{account.id}/vmboxes", account.token)
    assert assert_success(resp, body)[0]["messages"] == 3
    resp, body = await api.call(
        "GET", f"/v2/accounts/{account.id}/vmboxes/{box_id}/messages", account.token)
    rows = assert_success(resp, body)
    assert sorted(row["media_id"] for row in rows) == sorted(
        month_prefix(times[old]) + old for old in audio)
    box = await stores.couch.get_doc(account.db, box_id)
    assert box is not None
    assert box["messages"] == []
    resp, body = await api.call("GET", f"/v2/accounts/{account.id}/vmboxes", account.token)
    row = assert_success(resp, body)[0]
    assert row["messages"] == 3
    assert row["folders"] == {"new": 3, "saved": 0}


async def test_old_media_ids_reach_the_migrated_messages(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box_id, audio, times = await recent_legacy_box(stores, account)
    old_ids = list(audio)
    base = f"/v2/accounts/{account.id}/vmboxes/{box_id}/messages"
    # The first request of any kind migrates the box; the old id still names the message.
    resp, body = await api.call("GET", f"{base}/{old_ids[0]}", account.token)
    data = assert_success(resp, body)
    assert data["media_id"] == month_prefix(times[old_ids[0]]) + old_ids[0]
    resp = await api.client.get(f"{base}/{old_ids[0]}/raw",
                                params={"auth_token": account.token})
    assert resp.status == 200
    assert await resp.read() == audio[old_ids[0]]
    resp, body = await api.call("DELETE", f"{base}/{old_ids[1]}", account.token)
    assert assert_success(resp, body)["folder"] == "deleted"
    resp, body = await api.call("GET", f"{base}/{old_ids[1]}", account.token)
    assert_error(resp, body, 404, "bad_identifier")
    resp, body = await api.call("GET", f"{base}/{'0' * 32}", account.token)
    assert_error(resp, body, 404, "bad_identifier")


async def test_moving_a_migrated_message_copies_its_audio_inline(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box_id, audio, _ = await recent_legacy_box(stores, account)
    resp, body = await api.call("PUT", f"/v2/accounts/{account.id}/vmboxes", account.token,
                                {"name": "Destination", "mailbox": "4000"})
    destination = assert_success(resp, body, 201)["id"]
    old_id = next(iter(audio))
    base = f"/v2/accounts/{account.id}/vmboxes"
    resp, body = await api.call("POST", f"{base}/{box_id}/messages/{old_id}", account.token,
                                {"source_id": destination})
    moved = assert_success(resp, body)
    resp = await api.client.get(f"{base}/{destination}/messages/{moved['media_id']}/raw",
                                params={"auth_token": account.token})
    assert await resp.read() == audio[old_id]
    year, month = gregorian.utc_month(gregorian.now())
    doc = await stores.couch.get_doc(account.account.db.modb(year, month).unencoded,
                                     moved["media_id"])
    assert doc is not None
    assert "pvt_attachments" not in doc
    assert len(doc["_attachments"]) == 1
    media = await stores.couch.get_doc(account.db, old_id)
    assert media is not None
    assert media["_rev"].startswith("2-")


async def test_account_listing_migrates_every_box_and_box_delete_takes_migrated_messages(
    api: Api, account: Tenant, stores: Stores
) -> None:
    first, _, _ = await recent_legacy_box(stores, account, count=2, mailbox="3001")
    second, _, _ = await recent_legacy_box(stores, account, count=2, mailbox="3002")
    resp, body = await api.call(
        "GET", f"/v2/accounts/{account.id}/vmboxes/messages", account.token)
    rows = assert_success(resp, body)
    assert sorted(next(iter(row)) for row in rows) == sorted([first, first, second, second])
    resp, body = await api.call("DELETE", f"/v2/accounts/{account.id}/vmboxes/{second}",
                                account.token)
    assert_success(resp, body)
    resp, body = await api.call(
        "GET", f"/v2/accounts/{account.id}/vmboxes/messages", account.token)
    assert sorted(next(iter(row)) for row in assert_success(resp, body)) == [first, first]


async def test_bulk_requests_accept_old_ids(api: Api, account: Tenant, stores: Stores) -> None:
    box_id, audio, times = await recent_legacy_box(stores, account)
    old_ids = list(audio)
    resp, body = await api.call(
        "POST", f"/v2/accounts/{account.id}/vmboxes/{box_id}/messages", account.token,
        {"messages": old_ids[:2], "folder": "saved"})
    data = assert_success(resp, body)
    assert sorted(data["succeeded"]) == sorted(
        month_prefix(times[old]) + old for old in old_ids[:2])
