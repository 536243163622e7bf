"""Pure helpers for document shapes shared by boxes and messages: private fields, public views."""

from __future__ import annotations

import re
from typing import Any

from piston_vm.core import errors
from piston_vm.core.call import Call

JsonObject = dict[str, Any]

_NON_ALPHANUM_RE = re.compile(r"[^a-z0-9]")


def is_private(key: str) -> bool:
    return key.startswith("pvt_") or key.startswith("_")


def alphanum_name(name: str) -> str:
    """`"VMBox 0"` → `"vmbox0"`: the platform's sortable, searchable form of a name."""
    return _NON_ALPHANUM_RE.sub("", name.lower())


def without_private(data: JsonObject) -> JsonObject:
    return {k: v for k, v in data.items() if not is_private(k)}


def private_part(doc: JsonObject) -> JsonObject:
    return {k: v for k, v in doc.items() if is_private(k)}


def client_fields(data: Any, ignored: tuple[str, ...] = ()) -> JsonObject:
    """The fields a client may set from a request's `data`: an object's public keys but the
    `ignored` ones (ids and read-only answer keys that clients send back); 400 `data.type` for
    anything but an object."""
    if not isinstance(data, dict):
        raise errors.ValidationFailed(
            {"data": {"type": {"message": "Value did not match type(s): object",
                               "target": "object", "value": data}}}
        )
    return {k: v for k, v in without_private(data).items() if k not in ignored}


def stamp_save(
    doc: JsonObject, pvt_type: str, account_id: str, account_db: str, call: Call, now: int
) -> None:
    """The private fields every API save of an account-database document writes: a stored
    `pvt_type` is kept, the account fields are written once, `pvt_created` on create only
    (docs/storage.md 4.2). `account_db` is the encoded name."""
    doc["pvt_type"] = doc.get("pvt_type", pvt_type)
    doc.setdefault("pvt_vsn", "1")
    doc.setdefault("pvt_account_id", account_id)
    doc.setdefault("pvt_account_db", account_db)
    if "_rev" not in doc:
        doc["pvt_created"] = now
    doc["pvt_modified"] = now
    stamp_auth(doc, call)


def stamp_auth(doc: JsonObject, call: Call, request_id: bool = True) -> None:
    """The per-save fields that say who changed a document through the API (docs/storage.md 4.2).

    Message folder changes and deletes leave `pvt_request_id` alone (docs/storage.md 5.5).
    """
    if request_id:
        doc["pvt_request_id"] = call.request_id
    doc["pvt_is_authenticated"] = True
    if call.claims is not None:
        doc["pvt_auth_account_id"] = call.claims.account_id
        if call.claims.owner_id is not None:
            doc["pvt_auth_user_id"] = call.claims.owner_id
        else:
            doc.pop("pvt_auth_user_id", None)


def deep_merge(stored: JsonObject, patch: JsonObject) -> JsonObject:
    """PATCH semantics: objects merge recursively, everything else is replaced, null deletes."""
    merged = dict(stored)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def mark_deleted(message: JsonObject, call: Call) -> None:
    """Message delete: folder `deleted` plus soft delete; `pvt_modified` stays (docs/storage.md
    5.7)."""
    metadata = message.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
        message["metadata"] = metadata
    metadata["folder"] = "deleted"
    copy_transcription(message)
    message["pvt_deleted"] = True
    stamp_auth(message, call, request_id=False)
    stamp_folder_change(message, "deleted", call)


def stamp_folder_change(message: JsonObject, folder: str, call: Call) -> None:
    """Who moved a message to `folder` and why: the event engine reads it to give
    `voicemail_deleted` its `reason` (docs/events.md "Deriving events"). It names the folder it
    is about, so a later change by another writer that leaves it behind is not misread."""
    message["pvt_folder_change"] = {"folder": folder, "reason": call.reason}


def copy_transcription(message: JsonObject) -> None:
    """The original copies a top-level transcription into metadata whenever it rewrites it."""
    transcription = message.get("transcription")
    metadata = message.get("metadata")
    if transcription is not None and isinstance(metadata, dict):
        metadata["transcription"] = transcription
