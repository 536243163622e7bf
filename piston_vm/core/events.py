"""Voicemail events as every consumer sees them (webhooks, the live stream, e-mail).

The event engine (services/events/) derives them from CouchDB's changes; docs/events.md says
how. An event is plain data: consumers never need to know which database it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The platform's names (its `notifications` webhook modifiers).
VOICEMAIL_NEW = "voicemail_new"
VOICEMAIL_SAVED = "voicemail_saved"
VOICEMAIL_DELETED = "voicemail_deleted"
VOICEMAIL_FULL = "voicemail_full"
VOICEMAIL_EVENTS = (VOICEMAIL_NEW, VOICEMAIL_SAVED, VOICEMAIL_DELETED, VOICEMAIL_FULL)

# The platform's `object` webhook actions and the document types they are about here.
DOC_CREATED = "doc_created"
DOC_EDITED = "doc_edited"
DOC_DELETED = "doc_deleted"
OBJECT_ACTIONS = (DOC_CREATED, DOC_EDITED, DOC_DELETED)
OBJECT_TYPES = ("vmbox", "mailbox_message")

NOTIFICATION = "notification"
OBJECT = "object"


@dataclass(frozen=True, slots=True)
class Event:
    """One event. `id` is stable: the same change derived again (after a restart, by another
    worker) has the same id, so receivers can drop a redelivery."""

    id: str
    # `notification` (voicemail_*) or `object` (doc_*).
    category: str
    # voicemail_new … voicemail_full, or doc_created / doc_edited / doc_deleted.
    name: str
    account_id: str
    # The platform's webhook payload for this event, without hook `custom_data`.
    payload: Mapping[str, Any]
    # Gregorian seconds at which the engine derived it.
    timestamp: int
    box_id: str | None = None
    # The message's id (`YYYYMM-…`) for message events.
    message_id: str | None = None
    # Ancestors of `account_id`, nearest last (for hooks with include_subaccounts).
    tree: tuple[str, ...] = field(default_factory=tuple)

    def as_doc(self) -> dict[str, Any]:
        return {
            "event_id": self.id, "category": self.category, "name": self.name,
            "account_id": self.account_id, "payload": dict(self.payload),
            "timestamp": self.timestamp, "box_id": self.box_id,
            "message_id": self.message_id, "tree": list(self.tree),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Event:
        return cls(
            id=str(doc["event_id"]), category=str(doc["category"]), name=str(doc["name"]),
            account_id=str(doc["account_id"]), payload=dict(doc.get("payload") or {}),
            timestamp=int(doc.get("timestamp") or 0), box_id=doc.get("box_id"),
            message_id=doc.get("message_id"), tree=tuple(doc.get("tree") or ()),
        )
