"""Message documents as the platform stores and shows them (docs/storage.md 5, 8; docs/api.md
9.8–9.13)."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from piston_vm.core.documents import alphanum_name, copy_transcription, is_private
from piston_vm.services.timezones import local_time
from piston_vm.storage.names import DbName, yyyymm

JsonObject = dict[str, Any]

FOLDERS = ("new", "saved", "deleted")
RETENTION_MESSAGE = (
    "this message is prior to retention policy, no update operation is permitted"
)
SUMMARY_KEYS = ("timestamp", "from", "to", "caller_id_number", "caller_id_name", "call_id",
                "folder", "length", "media_id")


@dataclass(frozen=True, slots=True)
class Located:
    """A live message of a box, with the MODB it lives in."""

    modb: DbName
    doc: JsonObject

    @property
    def id(self) -> str:
        return str(self.doc["_id"])


def new_message_id(year: int, month: int) -> str:
    return f"{yyyymm(year, month)}-{secrets.token_hex(16)}"


def message_time(doc: JsonObject) -> int | None:
    """docs/decisions.md D-9: the first present, non-zero of utc_seconds, metadata.timestamp,
    pvt_created."""
    metadata = doc.get("metadata")
    candidates = (
        doc.get("utc_seconds"),
        metadata.get("timestamp") if isinstance(metadata, dict) else None,
        doc.get("pvt_created"),
    )
    for value in candidates:
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and value:
            return int(value)
        if isinstance(value, str) and value.strip().isdigit() and int(value):
            return int(value)
    return None


def is_older_than(doc: JsonObject, retention_timestamp: int) -> bool:
    time = message_time(doc)
    return time is not None and time < retention_timestamp


def message_name(mailbox: Any, gregorian_s: int, zone_name: str) -> str:
    """`mailbox 3001 message 2017-10-02 17:6:59`: time unpadded; unknown zone → UTC + " UTC"."""
    moment, known = local_time(gregorian_s, zone_name)
    name = (f"mailbox {mailbox} message {moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
            f"{moment.hour}:{moment.minute}:{moment.second}")
    return name if known else name + " UTC"


def with_realm(value: str, realm: str | None) -> str:
    """docs/decisions.md D-2: append the account realm only when the value has no `@`."""
    return value if "@" in value else f"{value}@{realm or 'nodomain'}"


def split_address(value: str) -> tuple[str, str]:
    user, _, realm = value.partition("@")
    return user, realm


def document_hash(doc: JsonObject) -> str:
    public = {k: v for k, v in doc.items() if not is_private(k)}
    public["id"] = doc["_id"]
    return hashlib.md5(
        json.dumps({"public": public}, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def set_name(doc: JsonObject, name: str) -> None:
    doc["name"] = name
    doc["pvt_alphanum_name"] = alphanum_name(name)


# Set on a message whose metadata.length piston_vm measured from its audio (docs/audio.md): a
# new recording may then measure it again, where a length a client or the callflow gave stays.
LENGTH_MEASURED = "pvt_length_measured"
# The platform's length when nobody gave one (docs/api.md 9.9).
DEFAULT_LENGTH = 1


def length_is_given(doc: JsonObject) -> bool:
    """True when the stored metadata.length came from a client or the callflow."""
    metadata = doc.get("metadata")
    length = metadata.get("length") if isinstance(metadata, dict) else None
    if doc.get(LENGTH_MEASURED) is True or length is None:
        return False
    return not (isinstance(length, int) and length in (0, DEFAULT_LENGTH))


def set_measured_length(doc: JsonObject, duration_ms: int | None) -> None:
    """New audio's duration as metadata.length, unless a client or the callflow gave one.

    A duration that cannot be read leaves the platform's default: a length measured from
    earlier audio says nothing about this one.
    """
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict) or length_is_given(doc):
        return
    metadata = dict(metadata)
    if duration_ms:
        metadata["length"] = duration_ms
        doc[LENGTH_MEASURED] = True
    elif doc.pop(LENGTH_MEASURED, None) is not None:
        metadata["length"] = DEFAULT_LENGTH
    doc["metadata"] = metadata


def public_metadata(doc: JsonObject, retention_timestamp: int) -> JsonObject:
    """What a single-message answer shows: metadata + transcription + retention marks."""
    metadata = doc.get("metadata")
    data = dict(metadata) if isinstance(metadata, dict) else {}
    data.pop("id", None)
    if "transcription" in doc and "transcription" not in data:
        data["transcription"] = doc["transcription"]
    if is_older_than(doc, retention_timestamp):
        add_retention_marks(data)
    return data


def add_retention_marks(target: JsonObject) -> None:
    """Shown on old messages, never written (docs/decisions.md P-9)."""
    target["folder"] = "deleted"
    target["retention"] = "enforced"
    target["retention_message"] = RETENTION_MESSAGE


def summary_row(value: JsonObject, retention_timestamp: int) -> JsonObject:
    row = dict(value)
    timestamp = row.get("timestamp")
    if isinstance(timestamp, int | float) and timestamp and timestamp < retention_timestamp:
        add_retention_marks(row)
    return row


def copy_for_box(
    source: JsonObject,
    new_id: str,
    modb: DbName,
    box: JsonObject,
    zone_name: str,
    realm: str | None,
    now: int,
) -> JsonObject:
    """The document a move or copy writes into box `box` (docs/storage.md 5.7)."""
    doc = {k: v for k, v in source.items()
           if k not in ("_rev", "id", "_attachments", "pvt_attachments")}
    doc["_id"] = new_id
    metadata = dict(source.get("metadata") or {})
    metadata["folder"] = "new"
    metadata["media_id"] = new_id
    metadata["timestamp"] = now
    mailbox = box.get("mailbox")
    metadata["to"] = with_realm(str(mailbox), realm)
    doc["metadata"] = metadata
    previous_box = source.get("source_id")
    history = source.get("history")
    doc["history"] = [*(history if isinstance(history, list) else []),
                      *([previous_box] if previous_box else [])]
    source_time = message_time(source) or now
    set_name(doc, message_name(mailbox, source_time, zone_name))
    doc["source_id"] = box["_id"]
    doc["utc_seconds"] = now
    doc["pvt_account_db"] = modb.encoded
    doc["pvt_modified"] = now
    copy_transcription(doc)
    return doc
