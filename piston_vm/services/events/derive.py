"""From CouchDB changes to events: pure rules, no I/O (docs/events.md "Deriving events").

CouchDB's `_changes` gives the current revision of each changed document, not what changed,
so the engine remembers a little of every message it has seen (its box, its folder, whether
its `voicemail_new` is behind it) and every box. That memory is kept with the checkpoint of
its database, in one document, so that both always agree.

Every event's id is a hash of the database, the document, the revision the change produced
and the event's name: deriving the same change again (after a crash, or by the worker that
took a dead one's place) gives the same ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from piston_vm.core.events import (
    DOC_CREATED,
    DOC_DELETED,
    DOC_EDITED,
    NOTIFICATION,
    OBJECT,
    VOICEMAIL_DELETED,
    VOICEMAIL_FULL,
    VOICEMAIL_NEW,
    VOICEMAIL_SAVED,
    Event,
)
from piston_vm.storage.names import DbName

JsonObject = dict[str, Any]

MESSAGE_TYPE = "mailbox_message"
VMBOX_TYPE = "vmbox"

# Flags of a remembered message.
NEW_DONE = 1  # its voicemail_new fired, or it will never fire (arrived by a move or copy)
MOVE_PENDING = 2  # a move's copy not yet confirmed: a lost move removes it without an event

# The API's own folder changes say why (core/documents.py stamp_folder_change).
UNKNOWN_REASON = "unknown"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the changes come from, and what every event of theirs carries."""

    db: DbName
    tree: tuple[str, ...]
    # Gregorian seconds: documents last modified before the engine first started are what it
    # found, not news (docs/events.md "The first start").
    baseline_before: int
    now: int
    app_version: str
    node: str

    @property
    def account_id(self) -> str:
        return self.db.account_id


def event_id(db: str, doc_id: str, rev: str, name: str) -> str:
    digest = hashlib.sha256(f"{db}\n{doc_id}\n{rev}\n{name}".encode()).hexdigest()
    return digest[:32]


def _rev_of(row: Mapping[str, Any]) -> str:
    changes = row.get("changes")
    if isinstance(changes, list) and changes and isinstance(changes[0], dict):
        return str(changes[0].get("rev", ""))
    doc = row.get("doc")
    return str(doc.get("_rev", "")) if isinstance(doc, dict) else ""


def _folder(doc: Mapping[str, Any]) -> str:
    metadata = doc.get("metadata")
    folder = metadata.get("folder") if isinstance(metadata, dict) else None
    # docs/decisions.md D-7: a message without a folder is `saved`.
    return folder if isinstance(folder, str) and folder else "saved"


def _modified(doc: Mapping[str, Any]) -> int | None:
    value = doc.get("pvt_modified", doc.get("pvt_created"))
    return value if isinstance(value, int) else None


def _is_baseline(doc: Mapping[str, Any], origin: Origin) -> bool:
    modified = _modified(doc)
    return modified is not None and modified < origin.baseline_before


def _split(address: Any) -> tuple[str | None, str | None]:
    if not isinstance(address, str) or not address:
        return None, None
    user, _, realm = address.partition("@")
    return user, realm or None


def message_payload(origin: Origin, name: str, doc: Mapping[str, Any], box_id: str,
                    message_id: str, eid: str) -> JsonObject:
    """The platform's notification payload (webhooks_notifications samples)."""
    metadata = doc.get("metadata")
    md: Mapping[str, Any] = metadata if isinstance(metadata, dict) else {}
    from_user, from_realm = _split(md.get("from"))
    to_user, to_realm = _split(md.get("to"))
    payload: JsonObject = {
        "account_id": origin.account_id,
        "app_name": "piston_vm",
        "app_version": origin.app_version,
        "event_category": NOTIFICATION,
        "event_name": name,
        "msg_id": eid,
        "node": origin.node,
        "voicemail_box": box_id,
        "voicemail_id": message_id,
    }
    optional = {
        "call_id": md.get("call_id"),
        "caller_id_name": md.get("caller_id_name"),
        "caller_id_number": md.get("caller_id_number"),
        "from_user": md.get("from_user") or from_user,
        "from_realm": md.get("from_realm") or from_realm,
        "to_user": md.get("to_user") or to_user,
        "to_realm": md.get("to_realm") or to_realm,
        "voicemail_length": md.get("length"),
        "voicemail_timestamp": md.get("timestamp"),
    }
    payload.update({k: v for k, v in optional.items() if v is not None})
    transcription = doc.get("transcription", md.get("transcription"))
    if isinstance(transcription, dict):
        transcription = transcription.get("text")
    if isinstance(transcription, str) and transcription:
        payload["voicemail_transcription"] = transcription
    return payload


def _voicemail(origin: Origin, name: str, doc: Mapping[str, Any], box_id: str, doc_id: str,
               rev: str, extra: Mapping[str, Any] | None = None) -> Event:
    eid = event_id(origin.db.unencoded, doc_id, rev, name)
    payload = message_payload(origin, name, doc, box_id, doc_id, eid)
    payload.update(extra or {})
    return Event(id=eid, category=NOTIFICATION, name=name, account_id=origin.account_id,
                 payload=payload, timestamp=origin.now, box_id=box_id, message_id=doc_id,
                 tree=origin.tree)


def _object(origin: Origin, action: str, kind: str, doc_id: str, rev: str,
            box_id: str | None) -> Event:
    eid = event_id(origin.db.unencoded, doc_id, rev, action)
    payload = {"account_id": origin.account_id, "action": action, "id": doc_id, "type": kind}
    return Event(id=eid, category=OBJECT, name=action, account_id=origin.account_id,
                 payload=payload, timestamp=origin.now, box_id=box_id,
                 message_id=doc_id if kind == MESSAGE_TYPE else None, tree=origin.tree)


def _deleted_reason(doc: Mapping[str, Any]) -> str:
    change = doc.get("pvt_folder_change")
    if isinstance(change, dict) and change.get("folder") == "deleted":
        reason = change.get("reason")
        if isinstance(reason, str) and reason:
            return reason
    return UNKNOWN_REASON


def message_change(
    origin: Origin, row: Mapping[str, Any], known: MutableMapping[str, list[Any]]
) -> list[Event]:
    """The events of one change of a MODB; `known` (id -> [box, folder, flags]) is updated."""
    doc_id = str(row.get("id", ""))
    raw = row.get("doc")
    doc: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    rev = _rev_of(row)
    before = known.get(doc_id)
    if row.get("deleted") or doc.get("_deleted"):
        if before is None:
            return []
        del known[doc_id]
        box_id, folder, flags = before
        events = [_object(origin, DOC_DELETED, MESSAGE_TYPE, doc_id, rev, box_id)]
        # A move's source is not deleted voicemail (its tombstone names the copy), and neither
        # is the copy a lost move removes again.
        by_move = bool(doc.get("pvt_moved_to")) or bool(flags & MOVE_PENDING)
        if folder != "deleted" and not by_move:
            events.append(_voicemail(origin, VOICEMAIL_DELETED, doc, box_id, doc_id, rev,
                                     {"reason": UNKNOWN_REASON}))
        return events
    if doc.get("pvt_type") != MESSAGE_TYPE:
        return []
    box_id = str(doc.get("source_id") or "")
    folder = _folder(doc)
    has_audio = bool(doc.get("_attachments"))
    pending = MOVE_PENDING if doc.get("pvt_move_pending") else 0
    if before is None:
        if _is_baseline(doc, origin):
            known[doc_id] = [box_id, folder, NEW_DONE]
            return []
        events = [_object(origin, DOC_CREATED, MESSAGE_TYPE, doc_id, rev, box_id)]
        # A message that arrives by a move or a copy is not new voicemail: the platform's
        # moves and copies (and ours) record where it came from.
        arrived = bool(doc.get("pvt_moved_from")) or bool(doc.get("history"))
        flags = NEW_DONE if arrived else 0
        before_folder = folder
    else:
        events = [_object(origin, DOC_EDITED, MESSAGE_TYPE, doc_id, rev, box_id)]
        _, before_folder, flags = before
        flags &= ~MOVE_PENDING
    if has_audio and not flags & NEW_DONE:
        if folder == "new":
            events.append(_voicemail(origin, VOICEMAIL_NEW, doc, box_id, doc_id, rev))
        flags |= NEW_DONE
    if folder != before_folder:
        if folder == "saved":
            events.append(_voicemail(origin, VOICEMAIL_SAVED, doc, box_id, doc_id, rev))
        elif folder == "deleted":
            events.append(_voicemail(origin, VOICEMAIL_DELETED, doc, box_id, doc_id, rev,
                                     {"reason": _deleted_reason(doc)}))
    known[doc_id] = [box_id, folder, flags | pending]
    return events


def vmbox_change(
    origin: Origin, row: Mapping[str, Any], known: MutableMapping[str, int]
) -> list[Event]:
    """The object events of one change of an account database; `known` holds box ids."""
    doc_id = str(row.get("id", ""))
    raw = row.get("doc")
    doc: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    rev = _rev_of(row)
    if row.get("deleted") or doc.get("_deleted"):
        if known.pop(doc_id, None) is None:
            return []
        return [_object(origin, DOC_DELETED, VMBOX_TYPE, doc_id, rev, doc_id)]
    if doc.get("pvt_type") != VMBOX_TYPE:
        return []
    seen = doc_id in known
    known[doc_id] = 1
    if doc.get("pvt_deleted"):
        # The API's box delete is a soft delete, as the platform's: for object hooks it is the
        # box's deletion.
        del known[doc_id]
        return [_object(origin, DOC_DELETED, VMBOX_TYPE, doc_id, rev, doc_id)] if seen else []
    if not seen and _is_baseline(doc, origin):
        return []
    action = DOC_EDITED if seen else DOC_CREATED
    return [_object(origin, action, VMBOX_TYPE, doc_id, rev, doc_id)]


def full_event(origin: Origin, box_id: str, count: int, limit: int, cause: str) -> Event:
    """`voicemail_full`: the box's new + saved messages reached its limit. `cause` names the
    change that made it so (database, document, revision): the same cause, the same id."""
    eid = event_id(origin.db.unencoded, box_id, cause, VOICEMAIL_FULL)
    payload = {
        "account_id": origin.account_id, "app_name": "piston_vm",
        "app_version": origin.app_version, "event_category": NOTIFICATION,
        "event_name": VOICEMAIL_FULL, "max_message_count": limit, "message_count": count,
        "msg_id": eid, "node": origin.node, "voicemail_box": box_id,
    }
    return Event(id=eid, category=NOTIFICATION, name=VOICEMAIL_FULL,
                 account_id=origin.account_id, payload=payload, timestamp=origin.now,
                 box_id=box_id, tree=origin.tree)
