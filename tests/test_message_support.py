"""Shared helpers for the message test modules (this module holds no tests).

Everything here is written from the documents (docs/api.md 8-10, docs/storage.md 1, 2, 5, 7.2, 8,
9), not from the implementation: message documents inserted straight into CouchDB follow
docs/storage.md 5.8 (the shape the original callflow and our own create both write), and every
timestamp is computed relative to now so that "this month", "last month" and "older than
retention" never rot.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import ClientResponse

from piston_vm.core import gregorian
from piston_vm.storage.stores import Stores
from tests.conftest import Tenant
from tests.helpers import Api, assert_success

JsonObject = dict[str, Any]

MESSAGE_ID = re.compile(r"^\d{6}-[0-9a-f]{32}$")
HEX24 = re.compile(r"^[0-9a-f]{24}$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")

LA = "America/Los_Angeles"
REALM = "sip.example.net"
DAY = 86_400
# docs/storage.md 8: days x 86400 + 3600, default 93 days.
RETENTION_S = 93 * DAY + 3_600
MAX_WINDOW_S = 2_682_000

# docs/storage.md 7.2: the nine summary members copied from metadata (plus `transcribed` when the
# doc
# has a top-level transcription result).
SUMMARY_KEYS = {
    "timestamp", "from", "to", "caller_id_number", "caller_id_name", "call_id", "folder",
    "length", "media_id",
}
# docs/api.md 9.9 example / docs/storage.md 5.2: the metadata written by an API create.
CREATE_METADATA_KEYS = SUMMARY_KEYS | {"from_user", "from_realm", "to_user", "to_realm"}

RETENTION_MESSAGE = (
    "this message is prior to retention policy, no update operation is permitted"
)
DATE_RANGE_MESSAGE = "cannot make changes to messages prior to retention duration"
NO_AUDIO_CAUSE = "voicemail message does not have any audio file"
MODB_VIEWS = {
    "count_per_box_folder", "count_per_folder", "listing_by_mailbox", "listing_by_timestamp",
    "missing_metadata",
}

# -- time ------------------------------------------------------------------------------------


def now() -> int:
    return gregorian.now()


def greg(moment: datetime) -> int:
    return gregorian.from_unix(moment.timestamp())


def shift_month(year: int, month: int, back: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) - back
    return index // 12, index % 12 + 1


def this_month(index: int = 0) -> int:
    """A distinct time in the current UTC month, at or before now (larger index = older)."""
    current = now()
    moment = gregorian.to_datetime(current)
    start = greg(datetime(moment.year, moment.month, 1, tzinfo=UTC))
    return max(current - 60 * (index + 1), start + index)


def months_ago(back: int, index: int = 0) -> int:
    """The 15th, 12:00 UTC, of the month `back` months before this one, minus index minutes.

    One or two months back is always inside the default 93-day retention window.
    """
    moment = gregorian.to_datetime(now())
    year, month = shift_month(moment.year, moment.month, back)
    return greg(datetime(year, month, 15, 12, tzinfo=UTC)) - 60 * index


def last_month(index: int = 0) -> int:
    return months_ago(1, index)


def older_than_retention(index: int = 0) -> int:
    return now() - 100 * DAY - 60 * index


def local_stamp(timestamp: int, zone: str = LA) -> str:
    """`YYYY-MM-DD_HH-MM-SS` of a gregorian time in a zone, as in raw download names
    (docs/decisions.md D-10)."""
    moment = datetime.fromtimestamp(gregorian.to_unix(timestamp), ZoneInfo(zone))
    return moment.strftime("%Y-%m-%d_%H-%M-%S")


def download_name(caller_id: str, timestamp: int, ext: str = ".mp3", zone: str = LA) -> str:
    return f"{caller_id}_{local_stamp(timestamp, zone)}{ext}"


# -- paths and database names ----------------------------------------------------------------


def vmboxes_path(tenant: Tenant) -> str:
    return f"/v2/accounts/{tenant.id}/vmboxes"


def messages_path(tenant: Tenant, box_id: str) -> str:
    return f"{vmboxes_path(tenant)}/{box_id}/messages"


def message_path(tenant: Tenant, box_id: str, message_id: str) -> str:
    return f"{messages_path(tenant, box_id)}/{message_id}"


def raw_path(tenant: Tenant, box_id: str, message_id: str) -> str:
    return f"{message_path(tenant, box_id, message_id)}/raw"


def zip_path(tenant: Tenant, box_id: str) -> str:
    return f"{messages_path(tenant, box_id)}/raw"


def modb_of_month(tenant: Tenant, year: int, month: int) -> str:
    return tenant.account.db.modb(year, month).unencoded


def modb_of_time(tenant: Tenant, timestamp: int) -> str:
    return modb_of_month(tenant, *gregorian.utc_month(timestamp))


def modb_of_id(tenant: Tenant, message_id: str) -> str:
    return modb_of_month(tenant, int(message_id[:4]), int(message_id[4:6]))


def encoded_modb_of_id(tenant: Tenant, message_id: str) -> str:
    return tenant.account.db.modb(int(message_id[:4]), int(message_id[4:6])).encoded


def id_prefix(timestamp: int) -> str:
    year, month = gregorian.utc_month(timestamp)
    return f"{year:04d}{month:02d}-"


def request_id() -> str:
    return secrets.token_hex(16)


# -- API fixtures ----------------------------------------------------------------------------


async def create_box(api: Api, tenant: Tenant, mailbox: str = "1000", **fields: Any) -> str:
    """Create a box (time zone America/Los_Angeles unless given) and return its id."""
    fields.setdefault("name", f"Box {mailbox}")
    fields.setdefault("timezone", LA)
    resp, body = await api.call(
        "PUT", vmboxes_path(tenant), tenant.token, {"mailbox": mailbox, **fields}
    )
    box_id: str = assert_success(resp, body, 201)["id"]
    return box_id


async def create_message(api: Api, tenant: Tenant, box_id: str, **fields: Any) -> JsonObject:
    """JSON-only create through the API; returns the response `data` (the metadata)."""
    resp, body = await api.call("PUT", messages_path(tenant, box_id), tenant.token, fields)
    data: JsonObject = assert_success(resp, body, 201)
    assert MESSAGE_ID.match(data["media_id"]), data
    return data


def multipart(
    *parts: tuple[str | None, bytes, str | None],
    subtype: str = "mixed",
    boundary: str = "pistonvm-test-boundary-7d1c",
) -> tuple[bytes, str]:
    """A hand-built multipart body from (content type, payload, part filename) triples.

    Parts look like curl's `-F "content=@file; type=…"`: `Content-Disposition: form-data;
    name="content"` (with `filename` when one is given) and the given Content-Type.
    """
    out = bytearray()
    for content_type, payload, filename in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = 'form-data; name="content"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if content_type is not None:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + payload + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/{subtype}; boundary={boundary}"


def json_part(data: JsonObject) -> tuple[str, bytes, str]:
    return "application/json", json.dumps({"data": data}).encode(), "message.json"


async def create_message_with_audio(
    api: Api,
    tenant: Tenant,
    box_id: str,
    audio: bytes,
    content_type: str = "audio/mp3",
    **fields: Any,
) -> JsonObject:
    """Single-request multipart/mixed create (seed's second method); returns the metadata."""
    body, ctype = multipart(json_part(fields), (content_type, audio, "voice.mp3"))
    resp, decoded = await api.call(
        "PUT", messages_path(tenant, box_id), tenant.token, body=body,
        headers={"Content-Type": ctype},
    )
    data: JsonObject = assert_success(resp, decoded, 201)
    assert MESSAGE_ID.match(data["media_id"]), data
    return data


async def list_messages(
    api: Api, tenant: Tenant, box_id: str, **params: str
) -> tuple[JsonObject, list[JsonObject]]:
    resp, body = await api.call(
        "GET", messages_path(tenant, box_id), tenant.token, params=params or None
    )
    rows: list[JsonObject] = assert_success(resp, body)
    assert isinstance(rows, list)
    return body, rows


async def listed_ids(api: Api, tenant: Tenant, box_id: str, **params: str) -> list[str]:
    _, rows = await list_messages(api, tenant, box_id, paginate="false", **params)
    return [row["media_id"] for row in rows]


async def get_raw(
    api: Api, path: str, headers: dict[str, str] | None = None, **params: str
) -> tuple[ClientResponse, bytes]:
    resp = await api.client.get(path, headers=headers or {}, params=params or None)
    return resp, await resp.read()


# -- direct CouchDB fixtures and assertions --------------------------------------------------


async def stored(stores: Stores, tenant: Tenant, message_id: str) -> JsonObject | None:
    return await stores.couch.get_doc(modb_of_id(tenant, message_id), message_id)


async def stored_message_docs(stores: Stores, tenant: Tenant) -> list[JsonObject]:
    """Every message document of the account in every MODB, attachment bytes inline (base64),
    read straight from CouchDB: what the race, kill and fault tests hold the answers against."""
    couch = stores.couch
    docs: list[JsonObject] = []
    for modb in await stores.messages.all_modbs(tenant.account.db):
        _, result = await couch.request(
            "GET", couch.url(modb.unencoded, "_all_docs"),
            params={"include_docs": "true", "attachments": "true"}, db=modb.unencoded)
        docs += [row["doc"] for row in result["rows"]
                 if (row.get("doc") or {}).get("pvt_type") == "mailbox_message"]
    return docs


async def must_stored(stores: Stores, tenant: Tenant, message_id: str) -> JsonObject:
    doc = await stored(stores, tenant, message_id)
    assert doc is not None, f"{message_id} is not in CouchDB"
    return doc


async def stored_attachments(
    stores: Stores, tenant: Tenant, message_id: str
) -> dict[str, tuple[str, bytes]]:
    """`{attachment name: (content_type, bytes)}` of a stored message (inline attachments)."""
    doc = await stores.couch.get_doc(
        modb_of_id(tenant, message_id), message_id, attachments="true"
    )
    assert doc is not None
    return {
        name: (att["content_type"], base64.b64decode(att["data"]))
        for name, att in (doc.get("_attachments") or {}).items()
    }


async def update_stored(
    stores: Stores, tenant: Tenant, message_id: str, **changes: Any
) -> JsonObject:
    """Write top-level changes straight into CouchDB (`None` removes a key)."""
    doc = await must_stored(stores, tenant, message_id)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    await stores.couch.put_doc(modb_of_id(tenant, message_id), doc)
    return doc


async def user_doc_ids(stores: Stores, db: str) -> list[str]:
    """Every non-design document id of a database (`[]` when it does not exist)."""
    if not await stores.couch.db_exists(db):
        return []
    _, result = await stores.couch.request("GET", stores.couch.url(db, "_all_docs"), db=db)
    return [row["id"] for row in result["rows"] if not row["id"].startswith("_design/")]


async def insert_message(
    stores: Stores,
    tenant: Tenant,
    box_id: str,
    timestamp: int,
    *,
    mailbox: str = "1000",
    folder: str | None = "new",
    caller_id_number: str | None = "1001",
    audio: bytes | None = None,
    content_type: str = "audio/mpeg",
    attachment_name: str | None = None,
    metadata: JsonObject | None = None,
    **top: Any,
) -> str:
    """Write a message document straight into its MODB, as the callflow would (docs/storage.md 5.8).

    `metadata` entries override the generated metadata (`None` removes a key); `top` entries
    override top-level fields (`None` removes a key). Returns the message id.
    """
    year, month = gregorian.utc_month(timestamp)
    name = tenant.account.db.modb(year, month)
    await stores.databases.ensure_modb(name, create=True)
    message_id = f"{year:04d}{month:02d}-{secrets.token_hex(16)}"
    meta: JsonObject = {
        "media_id": message_id, "call_id": secrets.token_hex(12),
        "caller_id_name": "Caller", "caller_id_number": caller_id_number,
        "from": f"{caller_id_number}@{REALM}", "from_user": caller_id_number,
        "from_realm": REALM, "length": 3140, "timestamp": timestamp,
        "to": f"{mailbox}@{REALM}", "to_user": mailbox, "to_realm": REALM, "folder": folder,
    }
    for key, value in (metadata or {}).items():
        meta[key] = value
    meta = {k: v for k, v in meta.items() if v is not None}
    doc: JsonObject = {
        "_id": message_id,
        "name": f"mailbox {mailbox} message fixture",
        "description": "voicemail message with media", "source_type": "voicemail",
        "source_id": box_id, "media_source": "recording", "streamable": True,
        "utc_seconds": timestamp, "metadata": meta,
        "pvt_type": "mailbox_message", "pvt_account_id": tenant.id,
        "pvt_account_db": name.encoded, "pvt_created": timestamp, "pvt_modified": timestamp,
        "pvt_vsn": "1", "pvt_node": "callflow@fixture",
    }
    if audio is not None:
        att_name = attachment_name or f"{secrets.token_hex(16)}.mp3"
        doc["media_filename"] = att_name
        doc["_attachments"] = {att_name: {
            "content_type": content_type, "data": base64.b64encode(audio).decode()}}
    for key, value in top.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    await stores.couch.put_doc(name.unencoded, doc)
    return message_id
