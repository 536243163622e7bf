"""Webhook documents (account database) and webhook attempts (MODBs), as the platform keeps
them (docs/webhooks.md)."""

from __future__ import annotations

from typing import Any

from piston_vm.storage.accounts import Account
from piston_vm.storage.couch import CouchClient, DocConflict
from piston_vm.storage.databases import Databases
from piston_vm.storage.names import DbName

JsonObject = dict[str, Any]

WEBHOOK_TYPE = "webhook"
ATTEMPT_TYPE = "webhook_attempt"
DISABLE_ATTEMPTS = 5


class WebhookStore:
    def __init__(self, couch: CouchClient, databases: Databases) -> None:
        self.couch = couch
        self.databases = databases

    async def hooks(self, account: Account) -> list[JsonObject]:
        """Every webhook document of the account, enabled or not (not deleted ones)."""
        await self.databases.ensure_account_db(account.db)
        result = await self.couch.view(account.db.unencoded, "piston_vm_webhooks", "by_id")
        return [dict(row["value"]) for row in result.get("rows") or []]

    async def disable(self, account: Account, hook_id: str, reason: str) -> None:
        db = account.db.unencoded
        for _ in range(DISABLE_ATTEMPTS):
            doc = await self.couch.get_doc(db, hook_id)
            if doc is None or doc.get("enabled") is False:
                return
            doc["enabled"] = False
            doc["disable_reason"] = reason
            try:
                await self.couch.put_doc(db, doc)
                return
            except DocConflict:
                continue

    async def add_attempt(self, account: Account, modb: DbName, attempt: JsonObject) -> None:
        await self.databases.ensure_modb(modb, create=True)
        doc = {**attempt, "pvt_type": ATTEMPT_TYPE, "pvt_account_id": account.id,
               "pvt_account_db": modb.encoded}
        await self.couch.bulk_docs(modb.unencoded, [doc])
