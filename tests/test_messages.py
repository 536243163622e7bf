"""Message create (docs/api.md 9.9) and the single-message endpoints (9.13-9.15), with the stored
documents read back from CouchDB (docs/storage.md 5)."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import aiohttp

from piston_vm.storage.stores import Stores
from tests.conftest import AppFactory, MakeAccount, Tenant
from tests.helpers import Api, assert_error, assert_success
from tests.test_message_support import (
    CREATE_METADATA_KEYS,
    DATE_RANGE_MESSAGE,
    HEX24,
    LA,
    MESSAGE_ID,
    MODB_VIEWS,
    REALM,
    RETENTION_MESSAGE,
    RETENTION_S,
    create_box,
    create_message,
    create_message_with_audio,
    encoded_modb_of_id,
    id_prefix,
    insert_message,
    json_part,
    last_month,
    listed_ids,
    message_path,
    messages_path,
    modb_of_id,
    modb_of_time,
    multipart,
    must_stored,
    now,
    older_than_retention,
    request_id,
    stored,
    stored_attachments,
    this_month,
    update_stored,
    user_doc_ids,
)

JsonObject = dict[str, Any]

SEED_MESSAGE = {
    "caller_id_name": "someone", "caller_id_number": "6001", "folder": "new",
    "from": "someone@farfaraway.com",
}


def alphanum(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


async def put_message(
    api: Api, tenant: Tenant, box_id: str, data: Any, **headers: str
) -> tuple[aiohttp.ClientResponse, Any]:
    return await api.call("PUT", messages_path(tenant, box_id), tenant.token, data,
                          headers=headers or None)


# -- create: JSON only -----------------------------------------------------------------------


async def test_json_create_answers_201_with_location_and_metadata(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "3000")
    resp, body = await put_message(api, account, box, SEED_MESSAGE)
    data = assert_success(resp, body, 201)
    message_id = data["media_id"]
    assert MESSAGE_ID.match(message_id)
    assert resp.headers["Location"] == (
        f"/v2/accounts/{account.id}/vmboxes/{box}/messages/{message_id}")
    assert set(data) == CREATE_METADATA_KEYS
    assert data["caller_id_name"] == "someone"
    assert data["caller_id_number"] == "6001"
    assert data["folder"] == "new"
    assert data["from"] == "someone@farfaraway.com"  # has an "@": unchanged (docs/decisions.md D-2)
    assert data["from_user"] == "someone"
    assert data["from_realm"] == "farfaraway.com"
    assert data["to"] == f"3000@{REALM}"
    assert data["to_user"] == "3000"
    assert data["to_realm"] == REALM
    assert "id" not in data
    assert "revision" not in body
    assert "ETag" not in resp.headers
    doc = await must_stored(stores, account, message_id)
    assert doc["metadata"] == data


async def test_create_without_timestamp_uses_now_and_its_month(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    before = now()
    data = await create_message(api, account, box)
    after = now()
    assert before <= data["timestamp"] <= after
    assert data["media_id"].startswith(id_prefix(data["timestamp"]))


async def test_id_month_is_the_utc_month_of_the_timestamp(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    # 2016-05-10T00:18:42Z: still May 9 in Los Angeles, but the id month is UTC (docs/storage.md
    # 1.4).
    data = await create_message(api, account, box, timestamp=63630058722)
    assert data["media_id"].startswith("201605-")
    assert data["timestamp"] == 63630058722
    previous = await create_message(api, account, box, timestamp=last_month())
    assert previous["media_id"].startswith(id_prefix(last_month()))


async def test_create_defaults(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account, "3000")
    data = await create_message(api, account, box)
    assert data["caller_id_number"] == "anonymous"
    assert data["caller_id_name"] == "anonymous"
    assert data["folder"] == "new"
    assert data["length"] == 1
    assert HEX24.match(data["call_id"]), data["call_id"]
    assert data["from"] == f"anonymous@{REALM}"
    assert data["from_user"] == "anonymous"
    assert data["from_realm"] == REALM
    assert data["to"] == f"3000@{REALM}"
    other = await create_message(api, account, box)
    assert other["call_id"] != data["call_id"]
    assert other["media_id"] != data["media_id"]
    doc = await must_stored(stores, account, data["media_id"])
    assert doc["metadata"] == data


async def test_caller_id_name_defaults_to_anonymous_not_to_the_number(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box, caller_id_number="6001")
    assert data["caller_id_number"] == "6001"
    assert data["caller_id_name"] == "anonymous"
    assert data["from"] == f"6001@{REALM}"  # from defaults to the number, then gets the realm


async def test_empty_strings_count_as_absent(api: Api, account: Tenant) -> None:
    box = await create_box(api, account, "3000")
    data = await create_message(api, account, box, caller_id_number="", caller_id_name="",
                                **{"from": "", "to": "", "call_id": ""})
    assert data["caller_id_number"] == "anonymous"
    assert data["caller_id_name"] == "anonymous"
    assert data["from"] == f"anonymous@{REALM}"
    assert data["to"] == f"3000@{REALM}"
    assert HEX24.match(data["call_id"])


async def test_realm_is_appended_only_without_an_at_sign(api: Api, account: Tenant) -> None:
    box = await create_box(api, account, "3000")
    data = await create_message(api, account, box, **{"from": "6001", "to": "2000"})
    assert (data["from"], data["from_user"], data["from_realm"]) == (
        f"6001@{REALM}", "6001", REALM)
    assert (data["to"], data["to_user"], data["to_realm"]) == (f"2000@{REALM}", "2000", REALM)
    data = await create_message(api, account, box,
                                **{"from": "a@b.com", "to": "x@y@z.org"})
    assert (data["from"], data["from_user"], data["from_realm"]) == ("a@b.com", "a", "b.com")
    # split at the FIRST "@" (docs/storage.md 5.2)
    assert (data["to"], data["to_user"], data["to_realm"]) == ("x@y@z.org", "x", "y@z.org")


async def test_account_without_realm_uses_nodomain(
    api: Api, make_account: MakeAccount
) -> None:
    tenant = await make_account(name="No Realm", realm=None)
    box = await create_box(api, tenant, "4000")
    data = await create_message(api, tenant, box, caller_id_number="6001")
    assert data["from"] == "6001@nodomain"
    assert data["from_realm"] == "nodomain"
    assert data["to"] == "4000@nodomain"
    assert data["to_user"] == "4000"
    assert data["to_realm"] == "nodomain"


async def test_length_and_timestamp_strings_are_coerced(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    ts = this_month()
    data = await create_message(api, account, box, length="3140", timestamp=str(ts))
    assert data["length"] == 3140
    assert data["timestamp"] == ts


async def test_unknown_keys_are_ignored(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box, media_id="201001-" + "a" * 32,
                                metadata={"folder": "saved"}, ui_metadata={"ui": "x"},
                                pvt_deleted=True)
    assert data["media_id"] != "201001-" + "a" * 32
    assert data["folder"] == "new"
    doc = await must_stored(stores, account, data["media_id"])
    assert "pvt_deleted" not in doc
    assert "ui_metadata" not in doc["metadata"]


async def test_stored_document_follows_the_storage_model(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "3001", timezone=LA)
    rid = request_id()
    before = now()
    # docs/storage.md 5.3 worked example: 63674208419 in LA is 2017-10-02 17:06:59 (unpadded H:M:S).
    resp, body = await put_message(api, account, box, {"timestamp": 63674208419},
                                   **{"X-Request-ID": rid})
    after = now()
    data = assert_success(resp, body, 201)
    message_id = data["media_id"]
    assert message_id.startswith("201710-")
    doc = await must_stored(stores, account, message_id)
    assert doc["_id"] == message_id
    assert doc["name"] == "mailbox 3001 message 2017-10-02 17:6:59"
    assert doc["description"] == "voicemail message with media"
    assert doc["source_type"] == "voicemail"
    assert doc["source_id"] == box
    assert doc["media_source"] == "recording"
    assert doc["streamable"] is True
    assert doc["utc_seconds"] == 63674208419
    assert "media_filename" not in doc
    assert "_attachments" not in doc
    assert doc["metadata"] == data
    assert doc["metadata"]["media_id"] == message_id
    assert doc["pvt_type"] == "mailbox_message"
    assert doc["pvt_account_id"] == account.id
    assert doc["pvt_account_db"] == encoded_modb_of_id(account, message_id)
    assert doc["pvt_account_db"].endswith("-201710")
    assert "%2F" in doc["pvt_account_db"]
    # API creates use now even with an old timestamp (docs/storage.md 5.5)
    assert before <= doc["pvt_created"] <= after
    assert before <= doc["pvt_modified"] <= after
    assert doc["pvt_vsn"] == "1"
    assert doc["pvt_node"] == "piston_vm@test"
    assert re.fullmatch(r"[0-9a-f]{32}", doc["pvt_document_hash"])
    assert doc["pvt_request_id"] == rid
    assert resp.headers["X-Request-ID"] == rid
    assert doc["pvt_is_authenticated"] is True
    assert doc["pvt_auth_account_id"] == account.id
    assert doc["pvt_alphanum_name"] == alphanum(doc["name"])
    assert doc["pvt_alphanum_name"] == "mailbox3001message2017100217659"
    assert "pvt_deleted" not in doc
    assert "id" not in doc


async def test_name_uses_utc_and_suffix_when_zone_is_unknown(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "3002", timezone="Nowhere/Atlantis")
    data = await create_message(api, account, box, timestamp=63674208419)
    doc = await must_stored(stores, account, data["media_id"])
    assert doc["name"] == "mailbox 3002 message 2017-10-03 0:6:59 UTC"


async def test_timestamp_in_a_month_without_modb_creates_it_with_design_doc(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    modb = modb_of_time(account, 63630058722)
    assert modb.endswith("-201605")
    assert not await stores.couch.db_exists(modb)
    data = await create_message(api, account, box, timestamp=63630058722)
    assert modb_of_id(account, data["media_id"]) == modb
    assert await stores.couch.db_exists(modb)
    design = await stores.couch.get_doc(modb, "_design/mailbox_messages")
    assert design is not None
    assert set(design["views"]) == MODB_VIEWS
    assert design["language"] == "javascript"
    assert await user_doc_ids(stores, modb) == [data["media_id"]]


async def test_unknown_box_is_404_with_box_cause(api: Api, account: Tenant) -> None:
    missing = "0" * 32
    resp, body = await put_message(api, account, missing, SEED_MESSAGE)
    assert assert_error(resp, body, 404, "bad_identifier") == {
        "cause": missing, "message": "bad identifier"}


async def test_bad_folder_and_long_caller_name_are_validation_errors(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    resp, body = await put_message(api, account, box, {"folder": "bogus"})
    data = assert_error(resp, body, 400, "validation error")
    assert data["folder"]["enum"]["message"] == "Value not found in enumerated list of values"
    assert data["folder"]["enum"]["value"] == "bogus"
    assert sorted(data["folder"]["enum"]["target"]) == ["deleted", "new", "saved"]
    resp, body = await put_message(api, account, box, {"caller_id_name": "x" * 36})
    data = assert_error(resp, body, 400, "validation error")
    assert data["caller_id_name"]["maxLength"]["target"] == 35
    assert await user_doc_ids(stores, modb_of_time(account, now())) == []


# -- create: with audio ----------------------------------------------------------------------


async def test_multipart_mixed_create_stores_the_audio(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "3000")
    audio = b"ID3\x03\x00fake-mp3-\x00\xff\xfe-bytes"
    # the seed's curl: -F "content=@message.json; type=application/json"
    #                  -F "content=@voice.mp3; type=audio/mp3"
    body, ctype = multipart(json_part(SEED_MESSAGE), ("audio/mp3", audio, "voice.mp3"))
    resp, decoded = await api.call("PUT", messages_path(account, box), account.token, body=body,
                                   headers={"Content-Type": ctype})
    data = assert_success(resp, decoded, 201)
    message_id = data["media_id"]
    assert resp.headers["Location"] == (
        f"/v2/accounts/{account.id}/vmboxes/{box}/messages/{message_id}")
    assert data["caller_id_number"] == "6001"
    assert data["from"] == "someone@farfaraway.com"
    assert set(data) == CREATE_METADATA_KEYS
    attachments = await stored_attachments(stores, account, message_id)
    assert len(attachments) == 1
    [(name, (content_type, stored_bytes))] = attachments.items()
    assert content_type == "audio/mp3"
    assert stored_bytes == audio
    assert name.endswith(".mp3")
    assert not re.search(r"\s", name)
    doc = await must_stored(stores, account, message_id)
    assert "media_filename" not in doc
    resp = await api.client.get(f"{message_path(account, box, message_id)}/raw",
                                headers={"X-Auth-Token": account.token})
    assert resp.status == 200
    assert await resp.read() == audio
    assert resp.headers["Content-Type"] == "audio/mp3"


async def test_attachment_name_defaults_to_uploaded_file_and_now(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    body, ctype = multipart(("application/json", json.dumps({"data": {}}).encode(), None),
                            ("audio/mpeg", b"mpeg-audio", None))
    before = now()
    resp, decoded = await api.call("PUT", messages_path(account, box), account.token, body=body,
                                   headers={"Content-Type": ctype})
    after = now()
    data = assert_success(resp, decoded, 201)
    attachments = await stored_attachments(stores, account, data["media_id"])
    [name] = attachments
    match = re.fullmatch(r"uploaded_file_(\d+)\.mp3", name)
    assert match, name
    assert before <= int(match.group(1)) <= after
    assert attachments[name] == ("audio/mpeg", b"mpeg-audio")


async def test_form_data_create_stores_the_audio(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    form = aiohttp.FormData()
    form.add_field("content", json.dumps({"data": {"caller_id_number": "7007"}}),
                   content_type="application/json", filename="message.json")
    form.add_field("content", b"wav-audio-bytes", content_type="audio/wav",
                   filename="voice.wav")
    resp = await api.client.put(messages_path(account, box), data=form,
                                headers={"X-Auth-Token": account.token})
    decoded = json.loads(await resp.read())
    data = assert_success(resp, decoded, 201)
    assert data["caller_id_number"] == "7007"
    attachments = await stored_attachments(stores, account, data["media_id"])
    assert list(attachments.values()) == [("audio/wav", b"wav-audio-bytes")]
    assert next(iter(attachments)).endswith(".wav")


async def test_two_audio_parts_are_rejected_before_anything_is_saved(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    first = await create_message(api, account, box)  # makes sure this month's MODB exists
    modb = modb_of_id(account, first["media_id"])
    before = await user_doc_ids(stores, modb)
    assert before == [first["media_id"]]
    body, ctype = multipart(json_part({"caller_id_number": "6001"}),
                            ("audio/mp3", b"one", "a.mp3"), ("audio/mp3", b"two", "b.mp3"))
    resp, decoded = await api.call("PUT", messages_path(account, box), account.token, body=body,
                                   headers={"Content-Type": ctype})
    data = assert_error(resp, decoded, 400, "validation error")
    assert data == {"file": {"maxItems": {"message": "Please provide a single media file"}}}
    assert await user_doc_ids(stores, modb) == before
    assert await listed_ids(api, account, box) == [first["media_id"]]


async def test_raw_audio_body_create(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account, "3000")
    audio = bytes(range(256)) * 4
    resp, body = await api.call("PUT", messages_path(account, box), account.token, body=audio,
                                headers={"Content-Type": "audio/mpeg"})
    data = assert_success(resp, body, 201)
    assert data["caller_id_number"] == "anonymous"
    assert data["to"] == f"3000@{REALM}"
    attachments = await stored_attachments(stores, account, data["media_id"])
    assert list(attachments.values()) == [("audio/mpeg", audio)]
    assert next(iter(attachments)).endswith(".mp3")


async def test_created_message_is_listed_at_once(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    data = await create_message_with_audio(api, account, box, b"abc", caller_id_number="1")
    assert await listed_ids(api, account, box) == [data["media_id"]]


# -- GET one ---------------------------------------------------------------------------------


async def test_get_returns_metadata_and_transcription_without_id_revision_or_etag(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box, caller_id_number="1001")
    transcription = {"result": "success", "text": "This is a test."}
    await update_stored(stores, account, data["media_id"], transcription=transcription)
    resp, body = await api.call("GET", message_path(account, box, data["media_id"]),
                                account.token)
    fetched = assert_success(resp, body)
    assert fetched == data | {"transcription": transcription}
    assert "id" not in fetched
    assert "revision" not in body
    assert "ETag" not in resp.headers
    assert not any(k.startswith(("pvt_", "_")) for k in fetched)


async def test_get_keeps_a_metadata_transcription(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    inner = {"result": "success", "text": "inner"}
    message_id = await insert_message(stores, account, box, this_month(),
                                      metadata={"transcription": inner},
                                      transcription={"result": "error", "text": "outer"})
    resp, body = await api.call("GET", message_path(account, box, message_id), account.token)
    assert assert_success(resp, body)["transcription"] == inner


async def test_get_of_another_boxs_message_is_404_with_message_cause(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account, "1000")
    other = await create_box(api, account, "2000")
    data = await create_message(api, account, box)
    resp, body = await api.call("GET", message_path(account, other, data["media_id"]),
                                account.token)
    assert assert_error(resp, body, 404, "bad_identifier") == {
        "cause": data["media_id"], "message": "bad identifier"}


async def test_get_of_unknown_messages_is_404(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    await create_message(api, account, box)
    # one in an existing MODB, one in a month that has no MODB, one with an impossible month
    for missing in (id_prefix(now()) + "f" * 32, "201001-" + "f" * 32, "202413-" + "f" * 32):
        resp, body = await api.call("GET", message_path(account, box, missing), account.token)
        assert assert_error(resp, body, 404, "bad_identifier")["cause"] == missing


async def test_get_sets_a_missing_folder_to_new_and_saves_it(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    message_id = await insert_message(stores, account, box, this_month(), folder=None)
    before = await must_stored(stores, account, message_id)
    assert "folder" not in before["metadata"]
    resp, body = await api.call("GET", message_path(account, box, message_id), account.token)
    assert assert_success(resp, body)["folder"] == "new"
    after = await must_stored(stores, account, message_id)
    assert after["metadata"]["folder"] == "new"
    assert after["_rev"] != before["_rev"]
    assert after["pvt_modified"] == before["pvt_modified"]


async def test_get_of_a_soft_deleted_message_is_404(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    message_id = await insert_message(stores, account, box, this_month(), pvt_deleted=True)
    resp, body = await api.call("GET", message_path(account, box, message_id), account.token)
    assert assert_error(resp, body, 404, "bad_identifier")["cause"] == message_id


async def test_get_of_an_old_message_carries_the_retention_marks(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    message_id = await insert_message(stores, account, box, older_than_retention())
    resp, body = await api.call("GET", message_path(account, box, message_id), account.token)
    data = assert_success(resp, body)
    assert data["folder"] == "deleted"
    assert data["retention"] == "enforced"
    assert data["retention_message"] == RETENTION_MESSAGE
    doc = await must_stored(stores, account, message_id)
    assert doc["metadata"]["folder"] == "new"
    assert "retention" not in doc["metadata"]


# -- POST one: folder ------------------------------------------------------------------------


async def test_post_folder_saved(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box)
    resp, body = await api.call("POST", message_path(account, box, data["media_id"]),
                                account.token, {"folder": "saved"})
    changed = assert_success(resp, body)
    assert changed == data | {"folder": "saved"}
    doc = await must_stored(stores, account, data["media_id"])
    assert doc["metadata"]["folder"] == "saved"
    assert "revision" not in body


async def test_post_folder_from_the_query_string_and_default_saved(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box)
    path = message_path(account, box, data["media_id"])
    resp, body = await api.call("POST", path, account.token, {}, params={"folder": "deleted"})
    assert assert_success(resp, body)["folder"] == "deleted"
    doc = await must_stored(stores, account, data["media_id"])
    assert doc["metadata"]["folder"] == "deleted"
    assert "pvt_deleted" not in doc  # moving to the deleted folder is not a delete
    resp, body = await api.call("POST", path, account.token, {})
    assert assert_success(resp, body)["folder"] == "saved"  # docs/decisions.md D-7


async def test_post_unknown_folder_is_400(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box)
    resp, body = await api.call("POST", message_path(account, box, data["media_id"]),
                                account.token, {"folder": "bogus"})
    assert assert_error(resp, body, 400, "validation error") == {"folder": {"enum": {
        "message": "Value not found in enumerated list of values",
        "target": ["new", "saved", "deleted"], "value": "bogus"}}}
    doc = await must_stored(stores, account, data["media_id"])
    assert doc["metadata"]["folder"] == "new"


async def test_folder_change_keeps_pvt_modified_and_sets_auth_fields(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    transcription = {"result": "success", "text": "hello"}
    message_id = await insert_message(stores, account, box, this_month(),
                                      transcription=transcription)
    before = await must_stored(stores, account, message_id)
    assert "pvt_auth_account_id" not in before
    resp, body = await api.call("POST", message_path(account, box, message_id), account.token,
                                {"folder": "saved"})
    assert assert_success(resp, body)["folder"] == "saved"
    after = await must_stored(stores, account, message_id)
    assert after["pvt_modified"] == before["pvt_modified"]
    assert after["pvt_created"] == before["pvt_created"]
    assert after["pvt_auth_account_id"] == account.id
    assert after["pvt_is_authenticated"] is True
    # docs/storage.md 5.7: a folder change copies the top-level transcription into metadata
    assert after["metadata"]["transcription"] == transcription
    assert after["transcription"] == transcription


async def test_post_on_a_message_older_than_retention_is_400_date_range(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    message_id = await insert_message(stores, account, box, older_than_retention())
    before = await must_stored(stores, account, message_id)
    low = now() - RETENTION_S
    resp, body = await api.call("POST", message_path(account, box, message_id), account.token,
                                {"folder": "saved"})
    high = now() - RETENTION_S
    data = assert_error(resp, body, 400, "validation error")
    assert set(data) == {message_id}
    assert set(data[message_id]) == {"date_range"}
    detail = data[message_id]["date_range"]
    assert detail["message"] == DATE_RANGE_MESSAGE
    assert low <= detail["cause"] <= high
    after = await must_stored(stores, account, message_id)
    assert after["_rev"] == before["_rev"]


# -- POST one: move and copy -----------------------------------------------------------------


async def test_post_source_id_string_moves_the_message(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000")
    dest = await create_box(api, account, "2000")
    audio = b"\x00\x01move-me\xff"
    transcription = {"result": "success", "text": "moving"}
    source = await create_message_with_audio(api, account, box, audio,
                                             timestamp=last_month(), caller_id_number="1001")
    await update_stored(stores, account, source["media_id"], transcription=transcription)
    source_doc = await must_stored(stores, account, source["media_id"])
    [att_name] = (await stored_attachments(stores, account, source["media_id"]))
    before = now()
    resp, body = await api.call("POST", message_path(account, box, source["media_id"]),
                                account.token, {"source_id": dest})
    after = now()
    moved = assert_success(resp, body)
    new_id = moved["media_id"]
    assert MESSAGE_ID.match(new_id)
    assert new_id != source["media_id"]
    assert new_id.startswith(id_prefix(after)) or new_id.startswith(id_prefix(before))
    assert not any(k.startswith(("pvt_", "_")) for k in moved)
    assert "source_id" not in moved
    assert moved["folder"] == "new"
    assert moved["to"] == f"2000@{REALM}"
    assert before <= moved["timestamp"] <= after
    # the source is removed from CouchDB (the one hard delete, docs/storage.md 5.6)
    assert await stored(stores, account, source["media_id"]) is None
    doc = await must_stored(stores, account, new_id)
    assert doc["metadata"] == moved
    assert doc["metadata"]["transcription"] == transcription  # copied in (docs/storage.md 5.7)
    assert doc["source_id"] == dest
    assert doc["history"] == [box]
    assert doc["metadata"]["media_id"] == new_id
    assert doc["metadata"]["to_user"] == "1000"  # left as it was (docs/storage.md 5.7)
    assert doc["metadata"]["caller_id_number"] == "1001"
    assert before <= doc["utc_seconds"] <= after
    assert doc["pvt_created"] == source_doc["pvt_created"]
    assert before <= doc["pvt_modified"] <= after
    assert doc["pvt_account_db"] == encoded_modb_of_id(account, new_id)
    assert doc["pvt_type"] == "mailbox_message"
    assert doc["transcription"] == transcription
    assert doc["name"].startswith("mailbox 2000 message ")
    assert doc["name"] == source_doc["name"].replace("mailbox 1000", "mailbox 2000")
    assert await stored_attachments(stores, account, new_id) == {
        att_name: ("audio/mp3", audio)}
    assert await listed_ids(api, account, box) == []
    assert await listed_ids(api, account, dest) == [new_id]
    resp, body = await api.call("GET", message_path(account, box, source["media_id"]),
                                account.token)
    assert_error(resp, body, 404, "bad_identifier")


async def test_post_source_id_array_copies_and_returns_a_bulk_result(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000")
    dest2 = await create_box(api, account, "2000")
    dest3 = await create_box(api, account, "3000")
    audio = b"copy-me"
    source = await create_message_with_audio(api, account, box, audio)
    before = await must_stored(stores, account, source["media_id"])
    resp, body = await api.call("POST", message_path(account, box, source["media_id"]),
                                account.token, {"source_id": [dest2, dest3]})
    result = assert_success(resp, body)
    assert set(result) == {"succeeded"}
    new_ids = result["succeeded"]
    assert len(new_ids) == 2
    assert len(set(new_ids) | {source["media_id"]}) == 3
    assert all(MESSAGE_ID.match(i) for i in new_ids)
    after = await must_stored(stores, account, source["media_id"])
    assert after["source_id"] == box
    assert after["metadata"] == before["metadata"]
    assert "history" not in after
    owners: dict[str, str] = {}
    for new_id in new_ids:
        doc = await must_stored(stores, account, new_id)
        owners[doc["source_id"]] = new_id
        assert doc["history"] == [box]
        assert doc["metadata"]["media_id"] == new_id
        assert doc["metadata"]["folder"] == "new"
        assert list((await stored_attachments(stores, account, new_id)).values()) == [
            ("audio/mp3", audio)]
    assert set(owners) == {dest2, dest3}  # one per destination
    assert await listed_ids(api, account, box) == [source["media_id"]]
    assert await listed_ids(api, account, dest2) == [owners[dest2]]
    assert await listed_ids(api, account, dest3) == [owners[dest3]]


async def test_post_empty_source_id_is_400_required(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box)
    path = message_path(account, box, data["media_id"])
    for bad in ("", [], [""]):
        resp, body = await api.call("POST", path, account.token, {"source_id": bad})
        assert assert_error(resp, body, 400, "validation error") == {"source_id": {"required": {
            "message": "empty source_id is specified. please set a single or a list of "
                       "source_ids."}}}, bad
    resp, body = await api.call("POST", path, account.token, {"source_id": 42})
    detail = assert_error(resp, body, 400, "validation error")["source_id"]["type"]
    assert detail["message"] == "Value did not match type(s): string, array"
    assert detail["value"] == 42
    assert await listed_ids(api, account, box) == [data["media_id"]]
    assert (await must_stored(stores, account, data["media_id"]))["metadata"] == data


async def test_post_move_to_a_missing_box_is_404_with_its_id(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000")
    dest = await create_box(api, account, "2000")
    data = await create_message(api, account, box)
    missing = "e" * 32
    path = message_path(account, box, data["media_id"])
    for source_id in (missing, [dest, missing]):
        resp, body = await api.call("POST", path, account.token, {"source_id": source_id})
        assert assert_error(resp, body, 404, "bad_identifier") == {
            "cause": missing, "message": "bad identifier"}
    assert await must_stored(stores, account, data["media_id"])
    assert await listed_ids(api, account, dest) == []


async def test_post_move_of_an_old_message_is_400(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000")
    dest = await create_box(api, account, "2000")
    message_id = await insert_message(stores, account, box, older_than_retention())
    resp, body = await api.call("POST", message_path(account, box, message_id), account.token,
                                {"source_id": dest})
    assert "date_range" in assert_error(resp, body, 400)[message_id]
    assert await stored(stores, account, message_id) is not None
    assert await listed_ids(api, account, dest) == []


# -- DELETE one ------------------------------------------------------------------------------


async def test_delete_one_soft_deletes(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box)
    keep = await create_message(api, account, box)
    path = message_path(account, box, data["media_id"])
    resp, body = await api.call("DELETE", path, account.token)
    deleted = assert_success(resp, body)
    assert deleted == data | {"folder": "deleted"}
    doc = await must_stored(stores, account, data["media_id"])
    assert doc["pvt_deleted"] is True
    assert doc["metadata"]["folder"] == "deleted"
    assert doc["pvt_auth_account_id"] == account.id
    resp, body = await api.call("GET", path, account.token)
    assert assert_error(resp, body, 404, "bad_identifier")["cause"] == data["media_id"]
    resp, body = await api.call("GET", f"{path}/raw", account.token)
    assert assert_error(resp, body, 404, "bad_identifier")["cause"] == data["media_id"]
    assert await listed_ids(api, account, box) == [keep["media_id"]]
    resp, body = await api.call("DELETE", path, account.token)
    assert_error(resp, body, 404, "bad_identifier")


async def test_delete_one_accepts_the_browser_ui_body(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box)
    resp, body = await api.call(
        "DELETE", message_path(account, box, data["media_id"]), account.token,
        {"ui_metadata": {"version": "4.3", "ui": "web-ui", "origin": "voicemails"}})
    assert assert_success(resp, body)["folder"] == "deleted"


async def test_delete_one_returns_transcription_and_works_on_old_messages(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    transcription = {"result": "success", "text": "old news"}
    message_id = await insert_message(stores, account, box, older_than_retention(),
                                      transcription=transcription)
    resp, body = await api.call("DELETE", message_path(account, box, message_id),
                                account.token)
    data = assert_success(resp, body)
    assert data["folder"] == "deleted"
    assert data["media_id"] == message_id
    assert data["transcription"] == transcription
    doc = await must_stored(stores, account, message_id)
    assert doc["pvt_deleted"] is True
    assert doc["metadata"]["folder"] == "deleted"


async def test_delete_of_another_boxs_message_is_404(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000")
    other = await create_box(api, account, "2000")
    data = await create_message(api, account, box)
    resp, body = await api.call("DELETE", message_path(account, other, data["media_id"]),
                                account.token)
    assert assert_error(resp, body, 404, "bad_identifier")["cause"] == data["media_id"]
    assert "pvt_deleted" not in await must_stored(stores, account, data["media_id"])


# -- less common paths -----------------------------------------------------------------------


async def test_get_of_a_doc_without_metadata_rebuilds_it(
    api: Api, account: Tenant, stores: Stores
) -> None:
    """docs/decisions.md P-26: missing metadata is treated as {} and gets folder, media_id and
    timestamp."""
    box = await create_box(api, account)
    ts = this_month()
    message_id = await insert_message(stores, account, box, ts)
    await update_stored(stores, account, message_id, metadata=None)
    resp, body = await api.call("GET", message_path(account, box, message_id), account.token)
    expected = {"folder": "new", "media_id": message_id, "timestamp": ts}
    assert assert_success(resp, body) == expected
    doc = await must_stored(stores, account, message_id)
    assert doc["metadata"] == expected


async def test_message_time_falls_back_for_retention(
    api: Api, account: Tenant, stores: Stores
) -> None:
    """docs/decisions.md D-9: utc_seconds, then metadata.timestamp, then pvt_created (first
    present, non-zero)."""
    box = await create_box(api, account)
    old = older_than_retention()
    by_metadata = await insert_message(stores, account, box, this_month(), utc_seconds=None,
                                       metadata={"timestamp": old})
    by_created = await insert_message(stores, account, box, this_month(), utc_seconds=0,
                                      metadata={"timestamp": None}, pvt_created=old)
    fresh_zero = await insert_message(stores, account, box, this_month(), utc_seconds=0)
    for message_id in (by_metadata, by_created):
        resp, body = await api.call("POST", message_path(account, box, message_id),
                                    account.token, {"folder": "saved"})
        assert "date_range" in assert_error(resp, body, 400)[message_id], message_id
    resp, body = await api.call("POST", message_path(account, box, fresh_zero), account.token,
                                {"folder": "saved"})
    assert assert_success(resp, body)["folder"] == "saved"


async def test_account_retention_override(api: Api, account: Tenant, stores: Stores) -> None:
    """docs/storage.md 8: configs_callflow voicemail.message_retention_duration (days) wins."""
    await stores.couch.put_doc(account.db, {
        "_id": "configs_callflow", "voicemail": {"message_retention_duration": 10}})
    box = await create_box(api, account)
    ts = now() - 20 * 86_400
    message_id = await insert_message(stores, account, box, ts)
    low = now() - (10 * 86_400 + 3_600)
    resp, body = await api.call("POST", message_path(account, box, message_id), account.token,
                                {"folder": "saved"})
    detail = assert_error(resp, body, 400)[message_id]["date_range"]
    assert low <= detail["cause"] <= now() - (10 * 86_400 + 3_600)
    assert await listed_ids(api, account, box) == []


async def test_configured_retention_days(
    make_client: AppFactory, account: Tenant, stores: Stores
) -> None:
    api = Api(await make_client(retention_days=10))
    box = await create_box(api, account)
    old_id = await insert_message(stores, account, box, now() - 20 * 86_400)
    fresh = await create_message(api, account, box, timestamp=now() - 5 * 86_400)
    assert await listed_ids(api, account, box) == [fresh["media_id"]]
    resp, body = await api.call("POST", message_path(account, box, old_id), account.token, {})
    assert "date_range" in assert_error(resp, body, 400)[old_id]


async def test_verb_tunnelling_deletes_a_message(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box)
    resp, body = await api.call("POST", message_path(account, box, data["media_id"]),
                                account.token, {}, params={"verb": "DELETE"})
    assert assert_success(resp, body)["folder"] == "deleted"
    assert (await must_stored(stores, account, data["media_id"]))["pvt_deleted"] is True


async def test_routes_around_messages(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box)
    resp, body = await api.call("PATCH", message_path(account, box, data["media_id"]),
                                account.token, {"folder": "saved"})
    assert_error(resp, body, 405, "invalid_method")
    assert {"GET", "POST", "DELETE"} <= {
        m.strip() for m in resp.headers["Allow"].split(",")}
    # docs/decisions.md D-15: the seed's /accounts/{A}/messages is not a route
    resp, body = await api.call("PUT", f"/v2/accounts/{account.id}/messages", account.token,
                                {"caller_id_number": "1"})
    assert assert_error(resp, body, 404, "not_found") == {"message": "not found"}
    # a legacy-looking id that resolves to nothing
    resp, body = await api.call("GET", message_path(account, box, "abcdef0123"), account.token)
    assert assert_error(resp, body, 404, "bad_identifier")["cause"] == "abcdef0123"


async def test_move_in_an_account_without_realm_uses_nodomain(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    tenant = await make_account(name="No Realm", realm=None)
    box = await create_box(api, tenant, "1000")
    dest = await create_box(api, tenant, "2000")
    data = await create_message(api, tenant, box, caller_id_number="6001")
    resp, body = await api.call("POST", message_path(tenant, box, data["media_id"]),
                                tenant.token, {"source_id": dest})
    moved = assert_success(resp, body)
    assert moved["to"] == "2000@nodomain"
    assert moved["from"] == "6001@nodomain"


async def test_post_copy_of_an_old_message_is_400(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000")
    dest = await create_box(api, account, "2000")
    message_id = await insert_message(stores, account, box, older_than_retention())
    resp, body = await api.call("POST", message_path(account, box, message_id), account.token,
                                {"source_id": [dest]})
    assert "date_range" in assert_error(resp, body, 400)[message_id]
    assert await listed_ids(api, account, dest) == []


async def test_create_attachment_name_from_the_filename_request_value(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    data = await create_message_with_audio(api, account, box, b"riff", "audio/wav",
                                           filename="my message")
    assert await stored_attachments(stores, account, data["media_id"]) == {
        "mymessage.wav": ("audio/wav", b"riff")}


async def test_multipart_part_in_base64_is_decoded(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    audio = bytes(range(256))
    boundary = "b64-boundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/json\r\n\r\n"
        '{"data":{"caller_id_number":"1001"}}\r\n'
        f"--{boundary}\r\nContent-Type: audio/mpeg\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{base64.b64encode(audio).decode()}\r\n--{boundary}--\r\n"
    ).encode()
    ctype = f"multipart/mixed; boundary={boundary}"
    resp, decoded = await api.call("PUT", messages_path(account, box), account.token, body=body,
                                   headers={"Content-Type": ctype})
    data = assert_success(resp, decoded, 201)
    assert data["caller_id_number"] == "1001"
    assert list((await stored_attachments(stores, account, data["media_id"])).values()) == [
        ("audio/mpeg", audio)]
