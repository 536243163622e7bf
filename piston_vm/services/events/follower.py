"""Following CouchDB: which databases changed (`_db_updates`), then each one's `_changes` from
its checkpoint (docs/events.md "Following CouchDB").

The cost follows the databases that change: one long poll of `_db_updates` per shard, and a
`_changes` read only of a database that changed. A thousand idle accounts cost nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from piston_vm.core import gregorian
from piston_vm.core.config import Settings
from piston_vm.core.events import Event
from piston_vm.core.metrics import Metrics
from piston_vm.services.events.derive import Origin, full_event, message_change, vmbox_change
from piston_vm.storage.accounts import Account
from piston_vm.storage.couch import DbNotFound, DocConflict
from piston_vm.storage.names import DbName
from piston_vm.storage.stores import Stores

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

FEED_WAIT_S = 10.0
CHANGES_BATCH = 200
# Databases of one shard read side by side.
PARALLEL_DBS = 4
# With nothing of its own to record, a shard still moves its `_db_updates` position on now and
# then, so that a restart does not re-read a long stretch of other shards' changes.
IDLE_CHECKPOINT_S = 60.0
ENGINE_DOC = "engine"


class LostShard(Exception):
    """Another worker wrote this shard's checkpoint: it owns the shard now."""


def shard_of(account_id: str, shards: int) -> int:
    return int(hashlib.sha256(account_id.encode()).hexdigest()[:8], 16) % shards


def followed_db(name: str) -> DbName | None:
    """Account databases and MODBs (by their real names); every other database is not ours."""
    if not name.startswith("account/"):
        return None
    try:
        return DbName.parse(name)
    except ValueError:
        return None


def _seq_number(seq: str) -> int:
    head = seq.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


async def baseline_time(stores: Stores) -> int:
    """When the engine first started on this CouchDB (stored once, by whoever is first)."""
    doc = await stores.events.get(ENGINE_DOC)
    if doc is None:
        await stores.events.try_save({"_id": ENGINE_DOC, "started_at": gregorian.now()})
        doc = await stores.events.get(ENGINE_DOC)
    assert doc is not None
    return int(doc["started_at"])


class Follower:
    """One shard's reader of CouchDB's changes; the events it derives go to the engine's
    database (their delivery is the dispatcher's work)."""

    def __init__(self, stores: Stores, settings: Settings, shard: int, baseline: int,
                 metrics: Metrics | None = None) -> None:
        self.stores = stores
        self.metrics = metrics or Metrics()
        self.settings = settings
        self.shard = shard
        self.baseline = baseline
        self.derived = 0
        # Set once the shard's position in `_db_updates` is known: changes from then on are
        # followed (tests and `piston-vm events` wait for it).
        self.ready = asyncio.Event()

    def mine(self, db: DbName) -> bool:
        return shard_of(db.account_id, self.settings.event_shards) == self.shard

    async def _feed_doc(self) -> JsonObject:
        doc_id = f"feed:{self.shard}"
        doc = await self.stores.events.get(doc_id)
        _, now_seq = await self.stores.events.db_updates("now", 0)
        if doc is None:
            doc = {"_id": doc_id, "since": now_seq}
            if not await self.stores.events.try_save(doc):
                raise LostShard(doc_id)
        elif _seq_number(str(doc["since"])) > _seq_number(now_seq):
            # The server's sequence went backwards (a bundled server started afresh): read
            # from its beginning rather than wait for numbers it will take long to reach.
            log.warning("CouchDB's _db_updates restarted; shard %d reads it again", self.shard)
            doc["since"] = "0"
        return doc

    async def run(self) -> None:
        feed = await self._feed_doc()
        self.ready.set()
        last_saved = time.monotonic()
        while True:
            rows, last_seq = await self.stores.events.db_updates(str(feed["since"]), FEED_WAIT_S)
            names = _changed(rows, self.mine)
            if names:
                await self._follow_all(names)
            if last_seq == feed["since"]:
                continue
            feed["since"] = last_seq
            if names or time.monotonic() - last_saved > IDLE_CHECKPOINT_S:
                try:
                    await self.stores.events.save(feed)
                except DocConflict:
                    raise LostShard(feed["_id"]) from None
                last_saved = time.monotonic()

    async def _follow_all(self, names: list[str]) -> None:
        limit = asyncio.Semaphore(PARALLEL_DBS)

        async def one(name: str) -> None:
            async with limit:
                await self.follow(name)

        await asyncio.gather(*(one(name) for name in names))

    async def follow(self, name: str) -> None:
        """Read one database's changes since its checkpoint; store their events, then the
        checkpoint (a crash in between derives the same events, with the same ids, again)."""
        db = DbName.parse(name)
        doc_id = f"follow:{name}"
        state = await self.stores.events.get(doc_id) or {"_id": doc_id, "since": "0",
                                                         "known": {}}
        account = await self.stores.accounts.get(db.account_id)
        tree = tuple(account.tree) if account is not None else ()
        while True:
            try:
                rows, last_seq = await self.stores.events.changes(
                    name, str(state["since"]), CHANGES_BATCH)
            except DbNotFound:
                return
            if not rows:
                return
            origin = Origin(db, tree, self.baseline, gregorian.now(),
                            self.settings.version, self.settings.node_name)
            known = state.setdefault("known", {})
            events: list[Event] = []
            causes: dict[str, str] = {}
            for row in rows:
                if db.month is None:
                    events += vmbox_change(origin, row, known)
                else:
                    derived = message_change(origin, row, known)
                    for event in derived:
                        if event.box_id:
                            causes[event.box_id] = f"{row.get('id')}@{event.id}"
                    events += derived
            if account is not None and causes:
                events += await self._full_events(origin, account, causes)
            await self._store(events)
            state["since"] = last_seq
            try:
                await self.stores.events.save(state)
            except DocConflict:
                raise LostShard(doc_id) from None
            if len(rows) < CHANGES_BATCH:
                return

    async def _store(self, events: list[Event]) -> None:
        if not events:
            return
        stored_at = int(time.time() * 1000)
        docs = [{"_id": e.id, "pvt_type": "event", "t": stored_at, **e.as_doc()}
                for e in events]
        await self.stores.events.add_events(docs)
        self.derived += len(events)
        for event in events:
            self.metrics.event_derived(event.name)

    async def _full_events(
        self, origin: Origin, account: Account, causes: dict[str, str]
    ) -> list[Event]:
        """`voicemail_full` for boxes whose new + saved messages reached their limit; once,
        and again only after the count fell below it."""
        doc_id = f"boxes:{origin.account_id}"
        flags = await self.stores.events.get(doc_id) or {"_id": doc_id, "full": {}}
        full: dict[str, Any] = flags.setdefault("full", {})
        boxes = await self.stores.vmboxes.get_many(account.db, sorted(causes))
        start = origin.now - await self.stores.accounts.retention_s(account, self.settings)
        modbs = await self.stores.messages.window_modbs(account.db, start, origin.now)
        counts = await self.stores.messages.folder_counts(modbs, start, origin.now,
                                                          sorted(boxes))
        events = []
        changed = False
        for box_id, box in boxes.items():
            limit = box.get("max_message_count")
            if not isinstance(limit, int) or isinstance(limit, bool):
                limit = self.settings.max_message_count
            if limit <= 0:
                continue
            count = counts["new"][box_id] + counts["saved"][box_id]
            if count >= limit and not full.get(box_id):
                events.append(full_event(origin, box_id, count, limit, causes[box_id]))
                full[box_id] = True
                changed = True
            elif count < limit and full.get(box_id):
                del full[box_id]
                changed = True
        if changed:
            # Events first: a crash before the flag is saved derives the same event again.
            await self._store(events)
            events = []
            await self.stores.events.try_save(flags)
        return events


def _changed(rows: Iterable[JsonObject], mine: Callable[[DbName], bool]) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for row in rows:
        name = str(row.get("db_name", ""))
        if row.get("type") == "deleted" or name in seen:
            continue
        db = followed_db(name)
        if db is not None and mine(db):
            seen.add(name)
            names.append(name)
    return names
