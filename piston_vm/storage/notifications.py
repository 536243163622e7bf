"""Notification documents: delivery attempts of a message (email and webhook), kept in the
message's own MODB, and an account's email templates (docs/email.md, "What is stored")."""

from __future__ import annotations

from typing import Any

from piston_vm.storage.couch import CouchClient, DbNotFound
from piston_vm.storage.databases import Databases
from piston_vm.storage.names import DbName

JsonObject = dict[str, Any]

DESIGN = "piston_vm_notifications"
# Key [pvt_message_id, pvt_created, attempt] over `notify_attempt` and `webhook_attempt` docs.
VIEW = "by_message"
EMAIL_ATTEMPT = "notify_attempt"
WEBHOOK_ATTEMPT = "webhook_attempt"
# An account's own templates for the voicemail_new email, in its account database.
TEMPLATES_DOC_ID = "piston_vm_email.voicemail_new"
TEMPLATES_TYPE = "piston_vm_email_template"


class NotificationStore:
    def __init__(self, couch: CouchClient, databases: Databases) -> None:
        self.couch = couch
        self.databases = databases

    async def for_message(self, modb: DbName, message_id: str) -> list[JsonObject]:
        """Every attempt document of the message, newest first (both channels)."""
        # The MODB may predate this view, or this process may not have used it yet.
        if not await self.databases.ensure_modb(modb, create=False):
            return []
        params = {"startkey": [message_id, {}], "endkey": [message_id],
                  "descending": True, "include_docs": True}
        try:
            result = await self.couch.view(modb.unencoded, DESIGN, VIEW, params)
        except DbNotFound:
            self.databases.forget(modb)
            return []
        return [dict(row["doc"]) for row in result.get("rows", [])
                if isinstance(row.get("doc"), dict)]

    async def create(self, modb: DbName, doc: JsonObject) -> None:
        """Save a new attempt; DocConflict when its (deterministic) id exists already."""
        await self.couch.put_doc(modb.unencoded, doc)

    async def save(self, modb: DbName, doc: JsonObject) -> None:
        """Update an attempt at its `_rev`; DocConflict when someone saved it since."""
        await self.couch.put_doc(modb.unencoded, doc)

    async def get(self, modb: DbName, attempt_id: str) -> JsonObject | None:
        return await self.couch.get_doc(modb.unencoded, attempt_id)

    async def account_templates(self, account_db: DbName) -> JsonObject | None:
        """The account's template overrides, or None when it has none."""
        doc = await self.couch.get_doc(account_db.unencoded, TEMPLATES_DOC_ID)
        if doc is None or doc.get("pvt_type") != TEMPLATES_TYPE or doc.get("pvt_deleted"):
            return None
        return doc
