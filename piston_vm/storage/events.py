"""The event engine's storage: CouchDB's feeds, and the engine's own database (docs/events.md).

The engine's database (`piston_vm_events` unless PISTON_VM_EVENTS_DB says otherwise) holds
four kinds of document, none of which ever produce events:

- `follow:<database>`: how far the engine has read one account database or MODB, with what
  it knows of that database's messages or boxes (to tell a change of folder from an edit);
- `feed:<shard>` and `dispatch:<shard>`: how far a shard has read `_db_updates` and how far it
  has delivered the events below;
- `lease:<shard>`: which worker owns a shard, until when;
- one document per event (`pvt_type` `event`, id = the event id), kept for the live stream's
  `Last-Event-ID` and pruned after PISTON_VM_EVENTS_KEEP_H hours.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from piston_vm.storage.couch import CouchClient, DocConflict
from piston_vm.storage.design import install

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

DESIGN = "piston_vm_events"
EVENT_TYPE = "event"
PRUNE_BATCH = 500
GLOBAL_CHANGES = "_global_changes"


class EventStore:
    def __init__(self, couch: CouchClient, db: str, design: Sequence[JsonObject]) -> None:
        self.couch = couch
        self.db = db
        self.design = design

    async def ensure(self) -> None:
        """Create the engine's database and its views (safe when several workers race), and
        `_global_changes`, which Apache CouchDB serves `_db_updates` from: its single-node
        and cluster setups create it, a bare `couchdb` start does not."""
        if not await self.couch.db_exists(GLOBAL_CHANGES):
            log.info("creating %s (CouchDB's _db_updates needs it)", GLOBAL_CHANGES)
            await self.couch.create_db(GLOBAL_CHANGES)
        if not await self.couch.db_exists(self.db):
            await self.couch.create_db(self.db)
        for doc in self.design:
            await install(self.couch, self.db, doc)

    # -- CouchDB's feeds -------------------------------------------------------------------

    async def db_updates(self, since: str, wait_s: float) -> tuple[list[JsonObject], str]:
        return await self.couch.db_updates(since, wait_s)

    async def changes(
        self, db: str, since: str, limit: int, wait_s: float = 0.0
    ) -> tuple[list[JsonObject], str]:
        return await self.couch.changes(db, since, limit, wait_s)

    async def event_changes(
        self, since: str, limit: int, wait_s: float
    ) -> tuple[list[JsonObject], str]:
        """The engine database's own changes: new events, in the order they were stored."""
        return await self.couch.changes(self.db, since, limit, wait_s)

    # -- the engine's documents ------------------------------------------------------------

    async def get(self, doc_id: str) -> JsonObject | None:
        return await self.couch.get_doc(self.db, doc_id)

    async def save(self, doc: JsonObject) -> str:
        """Write at the document's `_rev` (MVCC): DocConflict when someone else wrote first."""
        return await self.couch.put_doc(self.db, doc)

    async def try_save(self, doc: JsonObject) -> bool:
        try:
            await self.save(doc)
        except DocConflict:
            return False
        return True

    async def add_events(self, events: Sequence[JsonObject]) -> None:
        """Store events; one already stored (derived before a crash) is kept as it was."""
        results = await self.couch.bulk_docs(self.db, events)
        for result in results:
            if result.get("error") not in (None, "conflict"):
                raise RuntimeError(f"event {result.get('id')} not stored: {result}")

    async def events_of(
        self, account_id: str, after_t: int, limit: int, subaccounts: bool
    ) -> list[JsonObject]:
        """Voicemail events of an account (and its descendants when asked) stored at or after
        `after_t` (ms), oldest first."""
        result = await self.couch.view(self.db, DESIGN, "by_account", {
            "startkey": [account_id, after_t], "endkey": [account_id, {}],
            "include_docs": True, "limit": limit,
        })
        return [dict(row["doc"]) for row in result.get("rows") or []
                if row.get("doc") and (subaccounts or row.get("value") == 0)]

    async def prune(self, before_t: int) -> int:
        """Delete events stored before `before_t` (ms); returns how many."""
        result = await self.couch.view(self.db, DESIGN, "by_time", {
            "endkey": before_t, "include_docs": True, "limit": PRUNE_BATCH,
        })
        old = [{"_id": row["doc"]["_id"], "_rev": row["doc"]["_rev"], "_deleted": True}
               for row in result.get("rows") or [] if row.get("doc")]
        if old:
            await self.couch.bulk_docs(self.db, old)
        return len(old)
