"""Voicemail box documents in the account database (docs/storage.md 4) and the `vmboxes` views."""

from __future__ import annotations

from typing import Any

from piston_vm.core import errors
from piston_vm.core.listing import Cursor
from piston_vm.storage.couch import CouchClient, DocConflict
from piston_vm.storage.databases import Databases
from piston_vm.storage.names import DbName
from piston_vm.storage.views import page_params

JsonObject = dict[str, Any]

DESIGN = "vmboxes"


def is_live_box(doc: JsonObject | None) -> bool:
    return doc is not None and doc.get("pvt_type") == "vmbox" and not doc.get("pvt_deleted")


class VmboxStore:
    def __init__(self, couch: CouchClient, databases: Databases) -> None:
        self.couch = couch
        self.databases = databases

    async def get(self, account_db: DbName, box_id: str) -> JsonObject | None:
        """The live box document, or None when missing, soft-deleted or not a box."""
        doc = await self.couch.get_doc(account_db.unencoded, box_id)
        return doc if is_live_box(doc) else None

    async def get_many(self, account_db: DbName, box_ids: list[str]) -> dict[str, JsonObject]:
        rows = await self.couch.all_docs(account_db.unencoded, box_ids)
        return {
            row["id"]: row["doc"] for row in rows if is_live_box(row.get("doc"))
        }

    async def save(self, account_db: DbName, doc: JsonObject) -> str:
        """Create or update; a create over an existing id (even soft-deleted) is a 409."""
        await self.databases.ensure_account_db(account_db)
        try:
            return await self.couch.put_doc(account_db.unencoded, doc)
        except DocConflict:
            raise errors.datastore_conflict() from None

    async def mailbox_holders(self, account_db: DbName, number: int) -> list[str]:
        await self.databases.ensure_account_db(account_db)
        result = await self.couch.view(
            account_db.unencoded, DESIGN, "listing_by_mailbox", {"key": number}
        )
        return [str(row["id"]) for row in result.get("rows", [])]

    async def listing(
        self,
        account_db: DbName,
        cursor: Cursor | None,
        limit: int,
        descending: bool,
        include_docs: bool,
    ) -> list[JsonObject]:
        """Rows of `crossbar_listing` in name order, starting at `cursor` (0 = no limit)."""
        await self.databases.ensure_account_db(account_db)
        params = page_params(cursor, limit, descending, include_docs)
        result = await self.couch.view(account_db.unencoded, DESIGN, "crossbar_listing", params)
        return [dict(row) for row in result.get("rows", [])]
