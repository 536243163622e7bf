"""Raw audio download and upload (docs/api.md 9.16, 9.17), link-form audio (docs/storage.md 5.4)
and the
ZIP of several messages (9.12)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import secrets
import zipfile
from typing import Any

import pytest
from aiohttp import ClientResponse

from piston_vm.storage.stores import Stores
from tests.conftest import AppFactory, Tenant
from tests.helpers import Api, assert_error, assert_success
from tests.test_message_support import (
    DATE_RANGE_MESSAGE,
    LA,
    NO_AUDIO_CAUSE,
    create_box,
    create_message,
    create_message_with_audio,
    download_name,
    get_raw,
    insert_message,
    json_part,
    last_month,
    message_path,
    modb_of_id,
    modb_of_time,
    multipart,
    must_stored,
    now,
    older_than_retention,
    raw_path,
    request_id,
    stored_attachments,
    this_month,
    user_doc_ids,
    zip_path,
)

JsonObject = dict[str, Any]

SEVEN = b"ABCDEFG"


def auth(tenant: Tenant, **extra: str) -> dict[str, str]:
    return {"X-Auth-Token": tenant.token, **extra}


async def put_raw(
    api: Api, tenant: Tenant, box_id: str, message_id: str, body: bytes, content_type: str,
    **params: str,
) -> tuple[ClientResponse, Any]:
    return await api.call("PUT", raw_path(tenant, box_id, message_id), tenant.token, body=body,
                          headers={"Content-Type": content_type}, params=params or None)


async def post_zip(
    api: Api, tenant: Tenant, box_id: str, messages: Any, rid: str | None = None,
    content_type: str = "application/json",
) -> tuple[ClientResponse, bytes]:
    headers = auth(tenant, **{"Content-Type": content_type, "Accept": "application/zip"})
    if rid is not None:
        headers["X-Request-ID"] = rid
    resp = await api.client.post(zip_path(tenant, box_id),
                                 data=json.dumps({"data": {"messages": messages}}),
                                 headers=headers)
    return resp, await resp.read()


def error_body(resp: ClientResponse, raw: bytes) -> Any:
    assert resp.headers["Content-Type"] == "application/json", raw[:200]
    return json.loads(raw)


async def seven_byte_message(api: Api, tenant: Tenant) -> tuple[str, str]:
    box = await create_box(api, tenant)
    data = await create_message_with_audio(api, tenant, box, SEVEN, caller_id_number="1001")
    return box, data["media_id"]


# -- GET raw ---------------------------------------------------------------------------------


async def test_raw_get_returns_the_stored_bytes_and_headers(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    audio = os.urandom(4096) + b"\x00\r\n--boundary\r\n"
    ts = this_month()
    data = await create_message_with_audio(api, account, box, audio, caller_id_number="1001",
                                           timestamp=ts)
    resp, raw = await get_raw(api, raw_path(account, box, data["media_id"]), auth(account))
    assert resp.status == 200
    assert raw == audio
    assert resp.headers["Content-Type"] == "audio/mp3"
    assert resp.headers["Content-Length"] == str(len(audio))
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert "Content-Range" not in resp.headers
    assert "ETag" not in resp.headers
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Content-Disposition"] == (
        f'attachment; filename="{download_name("1001", ts)}"')


async def test_raw_get_with_auth_token_query_and_any_accept(
    api: Api, account: Tenant
) -> None:
    box, message_id = await seven_byte_message(api, account)
    path = raw_path(account, box, message_id)
    resp, raw = await get_raw(api, path, {"Accept": "*/*"}, auth_token=account.token)
    assert resp.status == 200
    assert raw == SEVEN
    for accept in ("application/json", "audio/*", "text/html"):
        resp, raw = await get_raw(api, path, auth(account, Accept=accept))
        assert resp.status == 200, accept
        assert raw == SEVEN
        assert resp.headers["Content-Type"] == "audio/mp3"
    resp, raw = await get_raw(api, path, {"Accept": "*/*"})
    assert resp.status == 401
    assert error_body(resp, raw)["error"] == "401"


async def test_content_disposition_of_the_seed_message(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account, "1000", timezone=LA)
    # 63630058722 = 2016-05-10T00:18:42Z = 2016-05-09 17:18:42 in Los Angeles (docs/decisions.md
    # D-10)
    data = await create_message_with_audio(api, account, box, b"seed-audio",
                                           caller_id_number="1001", timestamp=63630058722)
    assert data["media_id"].startswith("201605-")
    # older than retention, but downloading is not a change
    resp, raw = await get_raw(api, raw_path(account, box, data["media_id"]), auth(account))
    assert resp.status == 200
    assert raw == b"seed-audio"
    assert resp.headers["Content-Disposition"] == (
        'attachment; filename="1001_2016-05-09_17-18-42.mp3"')


async def test_download_name_falls_back_to_unknown_utc_and_no_extension(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000", timezone=LA)
    ts = this_month()
    no_cid = await insert_message(stores, account, box, ts, caller_id_number=None,
                                  audio=b"wav", content_type="audio/x-wav",
                                  attachment_name="0123456789abcdef0123456789abcdef.wav")
    resp, raw = await get_raw(api, raw_path(account, box, no_cid), auth(account))
    assert resp.status == 200
    assert raw == b"wav"
    assert resp.headers["Content-Type"] == "audio/x-wav"
    assert resp.headers["Content-Disposition"] == (
        f'attachment; filename="{download_name("unknown", ts, ".wav")}"')
    lost = await create_box(api, account, "2000", timezone="Nowhere/Atlantis")
    bare = await insert_message(stores, account, lost, ts, mailbox="2000", audio=b"bare",
                                content_type="application/octet-stream",
                                attachment_name="voice")
    resp, raw = await get_raw(api, raw_path(account, lost, bare), auth(account))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"] == (
        f'attachment; filename="{download_name("1001", ts, "", "UTC")}"')


@pytest.mark.parametrize(
    ("range_header", "status", "body", "content_range"),
    [
        ("bytes=0-", 200, SEVEN, "bytes 0-6/7"),
        ("bytes=2-", 206, b"CDEFG", "bytes 2-6/7"),
        ("bytes=6-", 206, b"G", "bytes 6-6/7"),
        ("bytes=0-0", 206, b"A", "bytes 0-0/7"),
        ("bytes=1-3", 206, b"BCD", "bytes 1-3/7"),
        ("bytes=0-6", 200, SEVEN, "bytes 0-6/7"),
        ("bytes=0-9", 200, SEVEN, "bytes 0-6/7"),
        ("bytes=3-9", 200, SEVEN, "bytes 0-6/7"),
        ("bytes", 200, SEVEN, "bytes 0-6/7"),
        ("bytes=3-1", 200, SEVEN, "bytes 0-6/7"),
        ("bytes=-3", 200, SEVEN, "bytes 0-6/7"),
        ("bytes=0-1,3-4", 200, SEVEN, "bytes 0-6/7"),
    ],
)
async def test_range_table(
    api: Api, account: Tenant, range_header: str, status: int, body: bytes, content_range: str
) -> None:
    box, message_id = await seven_byte_message(api, account)
    resp, raw = await get_raw(api, raw_path(account, box, message_id),
                              auth(account, Range=range_header))
    assert resp.status == status
    assert raw == body
    assert resp.headers["Content-Range"] == content_range
    assert resp.headers["Content-Length"] == str(len(body))
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Content-Type"] == "audio/mp3"


@pytest.mark.parametrize("range_header", ["bytes=7-", "bytes=20-"])
async def test_range_starting_past_the_end_is_416(
    api: Api, account: Tenant, range_header: str
) -> None:
    box, message_id = await seven_byte_message(api, account)
    resp, raw = await get_raw(api, raw_path(account, box, message_id),
                              auth(account, Range=range_header))
    body = error_body(resp, raw)
    assert assert_error(resp, body, 416, "range_not_satisfiable") == {
        "message": "range not satisfiable"}
    assert resp.headers["Content-Range"] == "bytes */7"


async def test_message_without_audio_is_404_with_audio_cause(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box)
    resp, raw = await get_raw(api, raw_path(account, box, data["media_id"]), auth(account))
    assert assert_error(resp, error_body(resp, raw), 404, "bad_identifier") == {
        "cause": NO_AUDIO_CAUSE, "message": "bad identifier"}


async def test_raw_get_of_unknown_or_foreign_message_is_404_with_message_cause(
    api: Api, account: Tenant
) -> None:
    box, message_id = await seven_byte_message(api, account)
    other = await create_box(api, account, "2000")
    resp, raw = await get_raw(api, raw_path(account, other, message_id), auth(account))
    assert assert_error(resp, error_body(resp, raw), 404, "bad_identifier")["cause"] == (
        message_id)
    unknown = message_id[:7] + "0" * 32
    resp, raw = await get_raw(api, raw_path(account, box, unknown), auth(account))
    assert assert_error(resp, error_body(resp, raw), 404, "bad_identifier")["cause"] == unknown


async def test_raw_get_sets_a_missing_folder_to_new(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    message_id = await insert_message(stores, account, box, this_month(), folder=None,
                                      audio=b"no-folder")
    resp, raw = await get_raw(api, raw_path(account, box, message_id), auth(account))
    assert resp.status == 200
    assert raw == b"no-folder"
    doc = await must_stored(stores, account, message_id)
    assert doc["metadata"]["folder"] == "new"


async def test_several_inline_attachments_serve_the_latest(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    # the older one sorts first by name, so only "highest revpos" picks the newer one
    # (docs/decisions.md P-13)
    message_id = await insert_message(stores, account, box, this_month(), audio=b"older",
                                      attachment_name="a-first.mp3")
    doc = await must_stored(stores, account, message_id)
    doc["_attachments"]["b-second.mp3"] = {
        "content_type": "audio/mpeg", "data": base64.b64encode(b"newer").decode()}
    await stores.couch.put_doc(modb_of_id(account, message_id), doc)
    resp, raw = await get_raw(api, raw_path(account, box, message_id), auth(account))
    assert resp.status == 200
    assert raw == b"newer"


# -- link-form and external audio (docs/storage.md 5.4) -------------------------------------------


async def legacy_media(
    stores: Stores, tenant: Tenant, box_id: str, attachments: dict[str, bytes]
) -> str:
    media_id = secrets.token_hex(16)
    await stores.couch.put_doc(tenant.db, {
        "_id": media_id, "name": "legacy voicemail", "pvt_type": "private_media",
        "source_type": "voicemail", "source_id": box_id, "media_source": "recording",
        "_attachments": {
            name: {"content_type": "audio/mpeg", "data": base64.b64encode(data).decode()}
            for name, data in attachments.items()},
    })
    return media_id


def link(tenant: Tenant, media_id: str, name: str, **handler: str) -> JsonObject:
    return {name: {
        "content_type": "audio/mpeg", "length": 0, "stub": False,
        "handler": {"kz_att_link": {"att_dbname": tenant.account.db.encoded,
                                    "att_docid": media_id, **handler}}}}


async def test_link_form_audio_is_served_from_the_media_doc(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    audio = os.urandom(2048)
    media_id = await legacy_media(stores, account, box, {"legacy.mp3": audio})
    media_before = await stores.couch.get_doc(account.db, media_id)
    assert media_before is not None
    ts = last_month()
    message_id = await insert_message(
        stores, account, box, ts, pvt_attachments=link(account, media_id, f"{'c' * 32}.mp3"))
    resp, raw = await get_raw(api, raw_path(account, box, message_id), auth(account))
    assert resp.status == 200
    assert raw == audio
    assert resp.headers["Content-Type"] == "audio/mpeg"
    assert resp.headers["Content-Disposition"] == (
        f'attachment; filename="{download_name("1001", ts)}"')
    media_after = await stores.couch.get_doc(account.db, media_id)
    assert media_after is not None
    assert media_after["_rev"] == media_before["_rev"]


async def test_link_form_att_name_selects_the_attachment(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    media_id = await legacy_media(stores, account, box,
                                  {"a.mp3": b"not this one", "b.mp3": b"this one"})
    message_id = await insert_message(
        stores, account, box, this_month(),
        pvt_attachments=link(account, media_id, "x.mp3", att_name="b.mp3"))
    resp, raw = await get_raw(api, raw_path(account, box, message_id), auth(account))
    assert resp.status == 200
    assert raw == b"this one"


async def test_moving_a_link_form_message_stores_the_audio_inline(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000")
    dest = await create_box(api, account, "2000")
    media_id = await legacy_media(stores, account, box, {"legacy.mp3": b"linked-audio"})
    name = f"{'d' * 32}.mp3"
    message_id = await insert_message(stores, account, box, this_month(),
                                      pvt_attachments=link(account, media_id, name))
    resp, body = await api.call("POST", message_path(account, box, message_id), account.token,
                                {"source_id": dest})
    new_id = assert_success(resp, body)["media_id"]
    doc = await must_stored(stores, account, new_id)
    assert "pvt_attachments" not in doc
    assert await stored_attachments(stores, account, new_id) == {
        name: ("audio/mpeg", b"linked-audio")}
    assert await stores.couch.get_doc(account.db, media_id) is not None
    resp, raw = await get_raw(api, raw_path(account, dest, new_id), auth(account))
    assert raw == b"linked-audio"


async def test_external_storage_audio_is_500_not_missing(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    message_id = await insert_message(stores, account, box, this_month(), pvt_attachments={
        "x.mp3": {"content_type": "audio/mpeg", "length": 10, "stub": False,
                  "handler": {"s3": {"bucket": "vm", "key": "x.mp3"}}}})
    resp, raw = await get_raw(api, raw_path(account, box, message_id), auth(account))
    data = assert_error(resp, error_body(resp, raw), 500, "unspecified_fault")
    assert "s3" in str(data.get("cause"))


# -- PUT raw ---------------------------------------------------------------------------------


async def test_put_raw_replaces_the_audio(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account)
    data = await create_message_with_audio(api, account, box, b"old audio")
    message_id = data["media_id"]
    before = await must_stored(stores, account, message_id)
    rid = request_id()
    # the seed's curl: -H "Content-Type: multipart/mixed" -F "content=@voice.mp3; type=audio/mp3"
    body, ctype = multipart(("audio/mp3", b"new audio!", "voice.mp3"))
    resp, decoded = await api.call("PUT", raw_path(account, box, message_id), account.token,
                                   body=body,
                                   headers={"Content-Type": ctype, "X-Request-ID": rid})
    changed = assert_success(resp, decoded, 201)
    assert resp.headers["Location"] == (
        f"/v2/accounts/{account.id}/vmboxes/{box}/messages/{message_id}")
    after = await must_stored(stores, account, message_id)
    assert changed == after["metadata"]
    assert changed == data
    attachments = await stored_attachments(stores, account, message_id)
    assert list(attachments.values()) == [("audio/mp3", b"new audio!")]
    assert after["pvt_request_id"] == rid
    assert after["pvt_modified"] >= before["pvt_modified"]
    assert after["pvt_created"] == before["pvt_created"]
    assert after["pvt_auth_account_id"] == account.id
    resp, raw = await get_raw(api, raw_path(account, box, message_id), auth(account))
    assert raw == b"new audio!"


async def test_put_raw_adds_audio_to_a_json_only_message(
    api: Api, account: Tenant, stores: Stores
) -> None:
    """The seed's first method: create the metadata, then upload the audio."""
    box = await create_box(api, account)
    data = await create_message(api, account, box, caller_id_number="6001")
    audio = os.urandom(1000)
    resp, body = await put_raw(api, account, box, data["media_id"], audio, "audio/wav")
    assert assert_success(resp, body, 201) == data
    attachments = await stored_attachments(stores, account, data["media_id"])
    [(name, value)] = attachments.items()
    assert value == ("audio/wav", audio)
    assert re.fullmatch(r"uploaded_file_\d+\.wav", name), name
    resp, raw = await get_raw(api, raw_path(account, box, data["media_id"]), auth(account))
    assert raw == audio
    assert resp.headers["Content-Type"] == "audio/wav"


async def test_put_raw_attachment_names(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box)
    message_id = data["media_id"]
    resp, body = await put_raw(api, account, box, message_id, b"1", "audio/x-wav",
                               filename="my voice note")
    assert_success(resp, body, 201)
    assert list(await stored_attachments(stores, account, message_id)) == ["myvoicenote.wav"]
    resp, body = await put_raw(api, account, box, message_id, b"2", "audio/ogg")
    assert_success(resp, body, 201)
    [name] = await stored_attachments(stores, account, message_id)
    assert re.fullmatch(r"uploaded_file_\d+\.oga", name), name
    resp, body = await put_raw(api, account, box, message_id, b"3", "application/octet-stream")
    assert_success(resp, body, 201)
    [name] = await stored_attachments(stores, account, message_id)
    assert re.fullmatch(r"uploaded_file_\d+\.", name), name
    resp, body = await put_raw(api, account, box, message_id, b"4", "audio/mpeg",
                               filename="greeting.ogg")
    assert_success(resp, body, 201)
    assert await stored_attachments(stores, account, message_id) == {
        "greeting.ogg": ("audio/mpeg", b"4")}


async def test_put_raw_replaces_link_form_audio(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    media_id = await legacy_media(stores, account, box, {"legacy.mp3": b"legacy"})
    message_id = await insert_message(stores, account, box, this_month(),
                                      pvt_attachments=link(account, media_id, "l.mp3"))
    resp, body = await put_raw(api, account, box, message_id, b"fresh", "audio/mpeg")
    assert_success(resp, body, 201)
    doc = await must_stored(stores, account, message_id)
    assert "pvt_attachments" not in doc
    assert list((await stored_attachments(stores, account, message_id)).values()) == [
        ("audio/mpeg", b"fresh")]
    media = await stores.couch.get_doc(account.db, media_id)
    assert media is not None  # the legacy media doc is never touched
    resp, raw = await get_raw(api, raw_path(account, box, message_id), auth(account))
    assert raw == b"fresh"


async def test_put_raw_without_a_file_is_400_required(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    data = await create_message_with_audio(api, account, box, b"keep me")
    path = raw_path(account, box, data["media_id"])
    expected = {"file": {"required": {"message": "Please provide a media file"}}}
    resp, body = await api.call("PUT", path, account.token, {})
    assert assert_error(resp, body, 400, "validation error") == expected
    resp, body = await api.call("PUT", path, account.token, body=b"",
                                headers={"Content-Type": "audio/mpeg"})
    assert assert_error(resp, body, 400, "validation error") == expected
    assert list((await stored_attachments(stores, account, data["media_id"])).values()) == [
        ("audio/mp3", b"keep me")]


async def test_put_raw_with_two_files_is_400_max_items(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    data = await create_message_with_audio(api, account, box, b"keep me")
    body, ctype = multipart(("audio/mp3", b"one", "a.mp3"), ("audio/mp3", b"two", "b.mp3"))
    resp, decoded = await api.call("PUT", raw_path(account, box, data["media_id"]),
                                   account.token, body=body, headers={"Content-Type": ctype})
    assert assert_error(resp, decoded, 400, "validation error") == {
        "file": {"maxItems": {"message": "Please provide a single media file"}}}
    assert list((await stored_attachments(stores, account, data["media_id"])).values()) == [
        ("audio/mp3", b"keep me")]


async def test_put_raw_on_an_old_message_is_400_date_range(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000", timezone=LA)
    data = await create_message_with_audio(api, account, box, b"2016 audio",
                                           caller_id_number="1001", timestamp=63630058722)
    message_id = data["media_id"]
    resp, body = await put_raw(api, account, box, message_id, b"new", "audio/mpeg")
    err = assert_error(resp, body, 400, "validation error")
    assert err[message_id]["date_range"]["message"] == DATE_RANGE_MESSAGE
    assert list((await stored_attachments(stores, account, message_id)).values()) == [
        ("audio/mp3", b"2016 audio")]
    old_id = await insert_message(stores, account, box, older_than_retention(), audio=b"o")
    resp, body = await put_raw(api, account, box, old_id, b"new", "audio/mpeg")
    assert "date_range" in assert_error(resp, body, 400)[old_id]


async def test_put_raw_on_a_foreign_message_is_404(api: Api, account: Tenant) -> None:
    _, message_id = await seven_byte_message(api, account)
    other = await create_box(api, account, "2000")
    resp, body = await put_raw(api, account, other, message_id, b"x", "audio/mpeg")
    assert assert_error(resp, body, 404, "bad_identifier")["cause"] == message_id


async def test_put_raw_with_a_json_part_and_an_audio_part(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box)
    body, ctype = multipart(json_part({}), ("audio/wav", b"riff", "v.wav"))
    resp, decoded = await api.call("PUT", raw_path(account, box, data["media_id"]),
                                   account.token, body=body, headers={"Content-Type": ctype})
    assert_success(resp, decoded, 201)
    assert list((await stored_attachments(stores, account, data["media_id"])).values()) == [
        ("audio/wav", b"riff")]


# -- ZIP (docs/api.md 9.12) -----------------------------------------------------------------------


async def test_zip_holds_stored_entries_named_like_downloads(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account, "1000", timezone=LA)
    t1, t2 = this_month(1), last_month()
    m1 = await create_message_with_audio(api, account, box, os.urandom(3000),
                                         caller_id_number="1001", timestamp=t1)
    m2 = await create_message_with_audio(api, account, box, b"second" * 100,
                                         caller_id_number="2002", timestamp=t2)
    m3 = await create_message_with_audio(api, account, box, b"same name, other audio",
                                         caller_id_number="1001", timestamp=t1)
    silent = await create_message(api, account, box)
    audio: dict[str, bytes] = {}
    for m in (m1, m2, m3):
        resp, raw = await get_raw(api, raw_path(account, box, m["media_id"]), auth(account))
        audio[m["media_id"]] = raw
    rid = request_id()
    resp, raw = await post_zip(api, account, box, [m1["media_id"], m2["media_id"],
                                                   m3["media_id"], m1["media_id"],
                                                   silent["media_id"]], rid)
    assert resp.status == 200, raw[:300]
    assert resp.headers["Content-Type"] == "application/zip"
    assert resp.headers["X-Request-ID"] == rid
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{rid}.zip"'
    assert "ETag" not in resp.headers
    archive = zipfile.ZipFile(io.BytesIO(raw))
    assert archive.testzip() is None
    infos = archive.infolist()
    first = download_name("1001", t1)
    assert [i.filename for i in infos] == [
        first, download_name("2002", t2), first.replace(".mp3", "_2.mp3")]
    assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
    for info, m in zip(infos, (m1, m2, m3), strict=True):
        assert archive.read(info) == audio[m["media_id"]]


async def test_zip_uses_the_generated_request_id_and_accepts_zip_content_type(
    api: Api, account: Tenant
) -> None:
    box, message_id = await seven_byte_message(api, account)
    resp, raw = await post_zip(api, account, box, [message_id], content_type="application/zip")
    assert resp.status == 200, raw[:300]
    rid = resp.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{rid}.zip"'
    archive = zipfile.ZipFile(io.BytesIO(raw))
    assert [archive.read(i) for i in archive.infolist()] == [SEVEN]


async def test_zip_without_ids_is_400(api: Api, account: Tenant) -> None:
    box, _ = await seven_byte_message(api, account)
    messages: list[str] | None
    for messages in ([], None):
        resp, raw = await post_zip(api, account, box, messages)
        assert assert_error(resp, error_body(resp, raw), 400, "validation error") == {
            "messages": {"required": {"message": "No array of message ids are specified"}}}


async def test_zip_with_a_foreign_or_unknown_id_is_404_with_that_id(
    api: Api, account: Tenant
) -> None:
    box, mine = await seven_byte_message(api, account)
    other = await create_box(api, account, "2000")
    theirs = await create_message_with_audio(api, account, other, b"theirs")
    resp, raw = await post_zip(api, account, box, [mine, theirs["media_id"]])
    assert assert_error(resp, error_body(resp, raw), 404, "bad_identifier") == {
        "cause": theirs["media_id"], "message": "bad identifier"}
    unknown = mine[:7] + "1" * 32
    resp, raw = await post_zip(api, account, box, [unknown, mine])
    assert assert_error(resp, error_body(resp, raw), 404, "bad_identifier")["cause"] == unknown
    missing_box = "0" * 32
    resp, raw = await post_zip(api, account, missing_box, [mine])
    assert assert_error(resp, error_body(resp, raw), 404, "bad_identifier")["cause"] == (
        missing_box)


async def test_zip_of_messages_without_audio_is_404_not_found(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    a = await create_message(api, account, box)
    b = await create_message(api, account, box)
    resp, raw = await post_zip(api, account, box, [a["media_id"], b["media_id"]])
    assert assert_error(resp, error_body(resp, raw), 404, "not_found") == {
        "message": "not found"}


# -- large audio -----------------------------------------------------------------------------


async def test_fifty_megabyte_upload_and_download(
    make_client: AppFactory, account: Tenant
) -> None:
    api = Api(await make_client(max_upload_bytes=60_000_000))
    box = await create_box(api, account)
    audio = b"".join(os.urandom(1 << 20) for _ in range(50))
    digest = hashlib.sha256(audio).hexdigest()
    # a file object: aiohttp warns (an error here) about large raw-bytes bodies
    resp = await api.client.put(f"/v2/accounts/{account.id}/vmboxes/{box}/messages",
                                data=io.BytesIO(audio),
                                headers=auth(account, **{"Content-Type": "audio/mpeg"}))
    message_id = assert_success(resp, json.loads(await resp.read()), 201)["media_id"]
    resp = await api.client.get(raw_path(account, box, message_id), headers=auth(account))
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(len(audio))
    assert resp.headers["Content-Type"] == "audio/mpeg"
    hasher = hashlib.sha256()
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        hasher.update(chunk)
        size += len(chunk)
    assert size == len(audio)
    assert hasher.hexdigest() == digest
    resp, raw = await get_raw(api, raw_path(account, box, message_id),
                              auth(account, Range=f"bytes={len(audio) - 5}-"))
    assert resp.status == 206
    assert raw == audio[-5:]


async def test_default_upload_limit_is_413(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account)
    resp = await api.client.put(f"/v2/accounts/{account.id}/vmboxes/{box}/messages",
                                data=io.BytesIO(b"\x00" * 8_000_001),
                                headers=auth(account, **{"Content-Type": "audio/mpeg"}))
    data = assert_error(resp, json.loads(await resp.read()), 413)
    assert data["file"]["maxSize"]["target"] == 8_000_000
    assert await user_doc_ids(stores, modb_of_time(account, now())) == []


# -- other upload forms, HEAD, streaming -----------------------------------------------------


async def test_put_raw_base64_body(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account)
    data = await create_message(api, account, box)
    audio = os.urandom(300)
    body = f"data:audio/wav;base64,{base64.b64encode(audio).decode()}".encode()
    resp, decoded = await put_raw(api, account, box, data["media_id"], body, "application/base64")
    assert_success(resp, decoded, 201)
    assert list((await stored_attachments(stores, account, data["media_id"])).values()) == [
        ("audio/wav", audio)]
    resp, decoded = await put_raw(api, account, box, data["media_id"], b"!!not base64!!",
                                  "application/x-base64")
    assert assert_error(resp, decoded, 413, "validation error") == {
        "file": {"encoding": {"message": "failed to decode base64 data"}}}


async def test_head_raw_has_the_get_headers_and_no_body(api: Api, account: Tenant) -> None:
    box, message_id = await seven_byte_message(api, account)
    path = raw_path(account, box, message_id)
    get_resp, _ = await get_raw(api, path, auth(account))
    resp = await api.client.head(path, headers=auth(account))
    assert resp.status == 200
    assert await resp.read() == b""
    for header in ("Content-Type", "Content-Disposition", "Accept-Ranges"):
        assert resp.headers[header] == get_resp.headers[header], header


async def test_zip_is_streamed_and_includes_link_form_audio(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    media_id = await legacy_media(stores, account, box, {"legacy.mp3": b"from the link"})
    ts = this_month()
    linked = await insert_message(stores, account, box, ts, caller_id_number="5005",
                                  pvt_attachments=link(account, media_id, f"{'e' * 32}.mp3"))
    resp, raw = await post_zip(api, account, box, [linked])
    assert resp.status == 200, raw[:300]
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    archive = zipfile.ZipFile(io.BytesIO(raw))
    assert [(i.filename, archive.read(i)) for i in archive.infolist()] == [
        (download_name("5005", ts), b"from the link")]


async def test_range_on_link_form_audio(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account)
    media_id = await legacy_media(stores, account, box, {"legacy.mp3": SEVEN})
    message_id = await insert_message(stores, account, box, this_month(),
                                      pvt_attachments=link(account, media_id, "l.mp3"))
    resp, raw = await get_raw(api, raw_path(account, box, message_id),
                              auth(account, Range="bytes=1-3"))
    assert resp.status == 206
    assert raw == b"BCD"
    assert resp.headers["Content-Range"] == "bytes 1-3/7"
