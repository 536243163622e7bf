"""Moves and copies of messages between boxes, with compare-and-swap and crash repair.

A move is three writes, and only the middle one decides (docs/integrity.md, "Moves"):

1. the copy is written into the destination (document and audio in one write), marked
   `pvt_move_pending` with `pvt_moved_from` naming the source revision it copies;
2. the source is deleted **at that revision**, its tombstone naming the copy (`pvt_moved_to`).
   CouchDB accepts exactly one write per revision, so exactly one of many concurrent moves
   wins; a source changed by anything else (a folder change, a delete, new audio) makes the
   move fail instead of losing that change, and the failed move removes its copy;
3. the pending mark is removed from the copy.

The message is visible in its source box until step 2 and in the destination from step 1, so
at every instant it is in one box or (briefly) both, never in neither. A crash between steps
leaves a pending copy; `settle` finishes or undoes it from what is stored: the tombstone names
it → clear the mark; the source is still at the copied revision → carry the move on from
step 2; anything else (the source changed, was deleted, or another move won) → remove it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from piston_vm.core import errors, gregorian
from piston_vm.core.call import Call
from piston_vm.core.documents import stamp_auth
from piston_vm.services import message_docs as docs
from piston_vm.services.audio import AudioService, AudioSource
from piston_vm.services.message_docs import Located
from piston_vm.services.timezones import box_timezone
from piston_vm.storage.accounts import Account
from piston_vm.storage.couch import DbNotFound, DocConflict, DocNotFound, StorageError
from piston_vm.storage.names import DbName, previous_month, yyyymm
from piston_vm.storage.stores import Stores

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

MOVED_FROM = "pvt_moved_from"
MOVED_TO = "pvt_moved_to"
PENDING = "pvt_move_pending"
# Showing the copy re-reads and retries this often when the copy changed under it.
SHOW_ATTEMPTS = 3


def copy_id(source: JsonObject, box_id: str, month: tuple[int, int]) -> str:
    """A copy's id, deterministic per (source message, destination box, month): a retried copy
    finds the one it already made instead of writing a second one."""
    seed = f"{source['_id']}\n{box_id}".encode()
    return f"{yyyymm(*month)}-{hashlib.md5(seed).hexdigest()}"


def move_id(source: JsonObject, box_id: str, month: tuple[int, int]) -> str:
    """A move's copy id also names the source revision: a retried move of the same state finds
    its pending copy, and a move after a copy to the same box is a message of its own."""
    seed = f"{source['_id']}\n{box_id}\n{source['_rev']}\nmove".encode()
    return f"{yyyymm(*month)}-{hashlib.md5(seed).hexdigest()}"


@dataclass(slots=True)
class RepairSchedule:
    """When each account's unfinished moves were last looked for, in this process."""

    interval_s: float
    _last: dict[str, float] = field(default_factory=dict)

    def due(self, account_id: str) -> bool:
        now = time.monotonic()
        last = self._last.get(account_id)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[account_id] = now
        return True


class Mover:
    def __init__(self, stores: Stores, default_timezone: str) -> None:
        self.stores = stores
        self.default_timezone = default_timezone
        self.audio = AudioService(stores)

    async def _copy_doc(
        self, call: Call, account: Account, found: Located, box: JsonObject,
        new_id: str, modb: DbName, now: int,
    ) -> JsonObject:
        zone_name = await box_timezone(self.stores, account, box, self.default_timezone)
        doc = docs.copy_for_box(found.doc, new_id, modb, box, zone_name, account.realm, now)
        for mark in (MOVED_FROM, MOVED_TO, PENDING):
            doc.pop(mark, None)
        stamp_auth(doc, call, request_id=False)
        return doc

    async def _write(
        self, modb: DbName, doc: JsonObject, audio: AudioSource | None
    ) -> JsonObject:
        """Write a copy (document and audio in one request) and read back what was stored.

        A copy that does not hold the source's exact audio is removed before the error.
        """
        try:
            if audio is None:
                await self.stores.messages.create(modb, doc)  # a new doc, or one at its `_rev`
            else:
                await self.stores.messages.create_with_audio(
                    modb, doc, lambda: [self.audio.copy_attachment(audio)])
        except (DocNotFound, DbNotFound) as exc:
            # The source's audio (at the copied revision) is gone: the source changed.
            raise errors.datastore_conflict() from exc
        stored = await self.stores.messages.get(modb, doc["_id"])
        if stored is None:
            raise errors.datastore_fault("copy vanished after it was written")
        if not self.audio.holds(stored, audio):
            await self._discard(modb, stored)
            raise errors.datastore_fault("audio copy could not be verified")
        return stored

    async def _discard(self, modb: DbName, copy: JsonObject) -> None:
        """Remove a copy that must not stay (a lost move's, or one that failed verification).

        Only the copy as written is removed: one that somebody changed since is kept (with its
        mark cleared), because a duplicate can be deleted by its owner and a lost change can't.
        """
        try:
            await self.stores.messages.remove(modb, copy["_id"], copy["_rev"])
        except DocConflict:
            fresh = await self.stores.messages.get(modb, copy["_id"])
            if fresh is not None and fresh.get(PENDING):
                log.warning("copy %s was changed during its move; kept", copy["_id"])
                await self._show(modb, fresh)

    # -- copy ------------------------------------------------------------------------------

    async def copy(
        self, call: Call, account: Account, found: Located, box: JsonObject
    ) -> JsonObject:
        """A live copy in `box`, in the current month; a retry returns the copy made before."""
        now = gregorian.now()
        month = gregorian.utc_month(now)
        modb = account.db.modb(*month)
        new_id = copy_id(found.doc, box["_id"], month)
        audio = await self.audio.source(found)

        def usable(stored: JsonObject) -> bool:
            return not stored.get("pvt_deleted") and self.audio.holds(stored, audio)

        async def fresh_doc() -> JsonObject:
            return await self._copy_doc(call, account, found, box, new_id, modb, now)

        return await self._write_once(modb, new_id, audio, usable, fresh_doc)

    # -- move ------------------------------------------------------------------------------

    async def move(
        self, call: Call, account: Account, found: Located, box: JsonObject
    ) -> JsonObject:
        """Move one message to `box`: 409 when the source changed or another move won, 404 when
        it is gone; either way nothing of this move stays behind."""
        now = gregorian.now()
        month = gregorian.utc_month(now)
        modb = account.db.modb(*month)
        new_id = move_id(found.doc, box["_id"], month)
        audio = await self.audio.source(found)
        copy = await self._pending_copy(call, account, found, box, new_id, modb, now, audio)
        await self._commit(found, Located(modb, copy))
        return await self._show(modb, copy)

    async def _pending_copy(
        self, call: Call, account: Account, found: Located, box: JsonObject,
        new_id: str, modb: DbName, now: int, audio: AudioSource | None,
    ) -> JsonObject:
        def usable(stored: JsonObject) -> bool:
            # An earlier attempt at this very move (same source revision) wrote it.
            return self._pending_for(stored, found) and self.audio.holds(stored, audio)

        async def fresh_doc() -> JsonObject:
            doc = await self._copy_doc(call, account, found, box, new_id, modb, now)
            doc[MOVED_FROM] = {"database": found.modb.encoded, "id": found.id,
                               "rev": found.doc["_rev"], "box": found.doc.get("source_id")}
            doc[PENDING] = True
            return doc

        return await self._write_once(modb, new_id, audio, usable, fresh_doc)

    async def _write_once(
        self, modb: DbName, new_id: str, audio: AudioSource | None,
        usable: Callable[[JsonObject], bool], fresh_doc: Callable[[], Awaitable[JsonObject]],
    ) -> JsonObject:
        """The copy `new_id`: the stored one when `usable`, else a newly written one. A
        concurrent request that wrote the same copy first is as good as this one."""
        existing = await self.stores.messages.get(modb, new_id)
        if existing is not None and usable(existing):
            return existing
        doc = await fresh_doc()
        if existing is not None:
            doc["_rev"] = existing["_rev"]
        try:
            return await self._write(modb, doc, audio)
        except DocConflict:
            fresh = await self.stores.messages.get(modb, new_id)
            if fresh is not None and usable(fresh):
                return fresh
            raise errors.datastore_conflict() from None

    @staticmethod
    def _pending_for(copy: JsonObject, found: Located) -> bool:
        mark = copy.get(MOVED_FROM)
        return (bool(copy.get(PENDING)) and isinstance(mark, dict)
                and mark.get("id") == found.id and mark.get("rev") == found.doc["_rev"])

    async def _commit(self, found: Located, copy: Located) -> None:
        """Step 2: delete the source at the copied revision, naming the copy; else undo."""
        source = found.doc
        tombstone = {
            "_id": found.id, "_rev": source["_rev"],
            "pvt_type": source.get("pvt_type"), "pvt_account_id": source.get("pvt_account_id"),
            "source_id": source.get("source_id"),
            MOVED_TO: {"database": copy.modb.encoded, "id": copy.id,
                       "box": copy.doc.get("source_id")},
        }
        try:
            await self.stores.messages.tombstone(found.modb, tombstone)
            return
        except (DocConflict, DocNotFound, DbNotFound):
            pass
        if await self._tombstone_names(found, copy):
            return  # a repair (or a retry of this move) finished step 2 for us
        await self._discard(copy.modb, copy.doc)
        fresh = await self.stores.messages.get(found.modb, found.id)
        if (fresh is None or fresh.get("pvt_deleted")
                or fresh.get("source_id") != source.get("source_id")):
            raise errors.bad_identifier(found.id)
        raise errors.datastore_conflict()

    async def _tombstone_names(self, found: Located, copy: Located) -> bool:
        for leaf in await self.stores.messages.leaves(found.modb, found.id):
            mark = leaf.get(MOVED_TO)
            if (leaf.get("_deleted") and isinstance(mark, dict) and mark.get("id") == copy.id
                    and mark.get("database") == copy.modb.encoded):
                return True
        return False

    async def _show(self, modb: DbName, copy: JsonObject) -> JsonObject:
        """Step 3: the copy is an ordinary message of its box from now on."""
        doc = copy
        for _ in range(SHOW_ATTEMPTS):
            if not doc.get(PENDING):
                return doc
            done = {k: v for k, v in doc.items() if k != PENDING}
            try:
                await self.stores.messages.save(modb, done)
                return done
            except DocConflict:
                fresh = await self.stores.messages.get(modb, copy["_id"])
                if fresh is None:
                    # Moved on (or deleted) by someone else already: it is theirs now.
                    return doc
                doc = fresh
        return doc  # still marked: the next repair clears it; the move itself is done

    # -- repair ----------------------------------------------------------------------------

    async def repair(self, account: Account) -> int:
        """Settle the account's unfinished moves; returns how many pending copies were settled.

        Copies are written in the month the move ran, so this month and the one before hold
        every copy a crash can have left (a sweep of older months is `repair_months`).
        """
        now = gregorian.utc_month(gregorian.now())
        return await self.repair_months(account, [previous_month(*now), now])

    async def repair_months(self, account: Account, months: list[tuple[int, int]]) -> int:
        settled = 0
        for month in months:
            modb = account.db.modb(*month)
            if not await self.stores.databases.ensure_modb(modb, create=False):
                continue
            for copy in await self.stores.messages.pending_moves(modb):
                try:
                    await self.settle(modb, copy)
                    settled += 1
                except (errors.ApiError, StorageError) as problem:
                    log.warning("unfinished move %s not settled yet: %r", copy.get("_id"),
                                problem)
        return settled

    async def settle(self, modb: DbName, copy: JsonObject) -> None:
        """Finish or undo one unfinished move from what CouchDB holds (see the module doc)."""
        mark = copy.get(MOVED_FROM)
        if not isinstance(mark, dict):
            return
        try:
            source_db = DbName.parse(str(mark.get("database", "")))
        except ValueError:
            await self._discard(modb, copy)
            return
        if source_db.account_id != modb.account_id:
            log.error("pending copy %s names another account's message; left alone",
                      copy["_id"])
            return
        source_id, copied_rev = str(mark.get("id")), mark.get("rev")
        target = Located(modb, copy)
        for leaf in await self.stores.messages.leaves(source_db, source_id):
            moved_to = leaf.get(MOVED_TO)
            if leaf.get("_deleted"):
                if (isinstance(moved_to, dict) and moved_to.get("id") == copy["_id"]
                        and moved_to.get("database") == modb.encoded):
                    await self._show(modb, copy)  # step 2 happened: finish step 3
                    return
                continue
            if leaf.get("_rev") == copied_rev:
                source = Located(source_db, leaf)
                if not self.audio.holds(copy, await self.audio.source(source)):
                    await self._discard(modb, copy)
                    return
                try:
                    await self._commit(source, target)  # source untouched: carry the move on
                except errors.ApiError:
                    return  # another move won or the source changed; _commit undid ours
                await self._show(modb, copy)
                return
        # The source changed, was deleted, or went elsewhere: this move did not happen.
        await self._discard(modb, copy)
