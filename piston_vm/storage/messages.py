"""Voicemail message documents in the monthly databases (docs/storage.md 5, 7.2, 9)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiohttp

from piston_vm.core import gregorian
from piston_vm.core.listing import Cursor
from piston_vm.storage.couch import Attachment, CouchClient, DbNotFound, DocNotFound
from piston_vm.storage.count_cache import NO_MESSAGES, CountCache, FolderSums, MonthCounts
from piston_vm.storage.databases import Databases
from piston_vm.storage.names import DbName, months_between
from piston_vm.storage.views import page_params

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

DESIGN = "mailbox_messages"
COUNTS_DESIGN = "piston_vm_counts"
# Key [box id, timestamp], value [new, saved, deleted] as 0/1, reduce `_sum` (docs/storage.md 7.3).
COUNTS_VIEW = "by_box_time"
MOVES_DESIGN = "piston_vm_moves"
FOLDERS = ("new", "saved", "deleted")
# Soft deletes go to CouchDB in batches of this many documents.
BULK_BATCH_DOCS = 500


class MessageStore:
    def __init__(
        self, couch: CouchClient, databases: Databases, count_cache: CountCache | None = None
    ) -> None:
        self.couch = couch
        self.databases = databases
        self.count_cache = count_cache or CountCache(0, 0)

    async def get(self, modb: DbName, message_id: str) -> JsonObject | None:
        """The stored document, deleted or not, or None (missing doc or missing MODB)."""
        return await self.couch.get_doc(modb.unencoded, message_id)

    async def create(self, modb: DbName, doc: JsonObject) -> None:
        """Save a new message, creating its MODB (and design docs) first when needed
        (docs/decisions.md D-12)."""
        await self.databases.write_to_modb(modb, lambda: self.couch.put_doc(modb.unencoded, doc))

    async def create_with_audio(
        self, modb: DbName, doc: JsonObject, audio: Callable[[], list[Attachment]]
    ) -> None:
        """Save a new message and its audio in one write (creating its MODB when needed).

        `audio` makes fresh streams of the attachments: a retry needs its own.
        """
        await self.databases.write_to_modb(
            modb, lambda: self.couch.put_doc_with_attachments(modb.unencoded, doc, audio()))

    async def save_with_audio(
        self, modb: DbName, doc: JsonObject, audio: list[Attachment]
    ) -> str:
        """Update a message and replace all its attachments with `audio`, in one revision."""
        return await self.couch.put_doc_with_attachments(modb.unencoded, doc, audio)

    async def tombstone(self, modb: DbName, tombstone: JsonObject) -> None:
        """Hard-delete `tombstone["_id"]` at `tombstone["_rev"]`, keeping the given fields.

        CouchDB keeps a deleted revision's body: the mark says where a moved message went.
        Raises DocConflict when the message changed since that revision.
        """
        await self.couch.put_doc(modb.unencoded, {**tombstone, "_deleted": True})

    async def leaves(self, modb: DbName, message_id: str) -> list[JsonObject]:
        """The message's leaf revisions, tombstones with their bodies included."""
        return await self.couch.open_revs(modb.unencoded, message_id)

    async def pending_moves(self, modb: DbName) -> list[JsonObject]:
        """Copies of moves that were not finished (see docs/integrity.md)."""
        try:
            result = await self.couch.view(
                modb.unencoded, MOVES_DESIGN, "pending", {"include_docs": True})
        except DbNotFound:
            self.databases.forget(modb)
            return []
        return [dict(row["doc"]) for row in result.get("rows", [])
                if isinstance(row.get("doc"), dict)]

    async def save(self, modb: DbName, doc: JsonObject) -> str:
        """Update; raises DocConflict when someone else saved first."""
        return await self.couch.put_doc(modb.unencoded, doc)

    async def remove(self, modb: DbName, message_id: str, rev: str) -> None:
        """Hard delete of a lost move's copy at `rev`; DocConflict if it changed since."""
        with suppress(DocNotFound, DbNotFound):
            await self.couch.delete_doc(modb.unencoded, message_id, rev)

    async def listing(
        self,
        modb: DbName,
        view: str,
        first_key: list[Any],
        last_key: list[Any],
        cursor: Cursor | None,
        limit: int,
        descending: bool,
        include_docs: bool,
    ) -> list[JsonObject]:
        """Rows of a listing view between two keys (inclusive), starting at `cursor`."""
        params = page_params(cursor, limit, descending, include_docs, first_key, last_key)
        try:
            result = await self.couch.view(modb.unencoded, DESIGN, view, params)
        except DbNotFound:
            self.databases.forget(modb)
            return []
        return [dict(row) for row in result.get("rows", [])]

    @asynccontextmanager
    async def open_audio(
        self, db: DbName, doc_id: str, name: str, byte_range: tuple[int, int] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Stream one attachment; CouchDB answers 206 when it honours the range, else 200."""
        async with self.couch.open_attachment(
            db.unencoded, doc_id, name, byte_range
        ) as response:
            yield response

    async def existing_modbs(
        self, account_db: DbName, first: tuple[int, int], last: tuple[int, int]
    ) -> list[DbName]:
        """The MODBs of the account for months first..last that exist, oldest first."""
        return await self.databases.ready_modbs(
            [account_db.modb(year, month) for year, month in months_between(first, last)])

    async def all_modbs(self, account_db: DbName) -> list[DbName]:
        """Every MODB the account has, oldest first (for box delete and bulk delete-all)."""
        prefix = account_db.unencoded + "-"
        names = await self.couch.all_dbs(prefix, prefix + "\ufff0")
        modbs = []
        for name in names:
            if not name.startswith(prefix):
                continue
            try:
                modb = DbName.parse(name)
            except ValueError:
                continue
            if modb.month is not None and modb.account_id == account_db.account_id:
                await self.databases.ensure_modb(modb, create=False)
                modbs.append(modb)
        return sorted(modbs, key=lambda m: m.month or (0, 0))

    def window_months(self, account_db: DbName, start: int, end: int) -> list[DbName]:
        """The MODB names (existing or not) whose month overlaps start..end, oldest first.

        No message predates 1970 (message times are validated), so earlier bounds are clamped;
        that also keeps absurd query values from reaching the calendar arithmetic.
        """
        start = max(start, gregorian.UNIX_EPOCH_GREGORIAN_S)
        end = min(end, gregorian.LATEST_GREGORIAN_S)
        if end < start:
            return []
        first, last = gregorian.utc_month(start), gregorian.utc_month(end)
        return [account_db.modb(y, m) for y, m in months_between(first, last)]

    async def window_modbs(self, account_db: DbName, start: int, end: int) -> list[DbName]:
        return await self.existing_modbs(
            account_db, gregorian.utc_month(start), gregorian.utc_month(end)
        )

    async def month_seqs(self, modbs: list[DbName]) -> dict[str, str | None]:
        """What folder_counts checks its cached months against (empty: no cache). Asked
        before the counts, it may run side by side with other reads of the same request."""
        if not modbs or not self.count_cache.enabled:
            return {}
        return await self.couch.update_seqs([modb.unencoded for modb in modbs])

    async def folder_counts(
        self, modbs: list[DbName], start: int, end: int, box_ids: list[str],
        seqs: dict[str, str | None] | None = None,
    ) -> dict[str, Counter[str]]:
        """Per folder, the live messages of each listed box with start <= timestamp <= end, in
        `modbs` (the existing MODBs of the window's months, see window_modbs).

        Only stored reductions are read (docs/storage.md 7.3): CouchDB answers from its b-tree's
        inner nodes, so the cost follows boxes × months, not the number of messages; and a month
        whose `update_seq` has not moved since it was last counted is not asked again.
        """
        counts: dict[str, Counter[str]] = {folder: Counter() for folder in FOLDERS}
        if not box_ids or not modbs:
            return counts
        if seqs is None:
            # Read before counting: counts are filed under a sequence no newer than they are.
            seqs = await self.month_seqs(modbs)

        async def count(modb: DbName) -> None:
            whole = modb.month is not None and gregorian.month_start(*modb.month) >= start
            bounds = None if whole else (start, end)
            seq = seqs.get(modb.unencoded)
            try:
                if self.count_cache.enabled and seq is None:
                    raise DbNotFound(modb.unencoded)
                month = await self._month_counts(modb, seq, bounds, box_ids)
            except DbNotFound:
                self.databases.forget(modb)
                self.count_cache.forget(modb.unencoded)
                return
            for box_id in box_ids:
                for folder, number in zip(FOLDERS, month.of(box_id), strict=True):
                    if number:
                        counts[folder][box_id] += number

        # Months are independent queries: ask for them side by side.
        await asyncio.gather(*(count(m) for m in modbs))
        return counts

    async def _month_counts(
        self, modb: DbName, seq: str | None, bounds: tuple[int, int] | None, box_ids: list[str]
    ) -> MonthCounts:
        """The MODB's counts for `bounds`, from the cache when its sequence is unchanged."""
        db = modb.unencoded
        cached = self.count_cache.get(db, seq, bounds) if seq is not None else None
        if cached is not None and cached.has(box_ids):
            return cached
        if bounds is None:
            month = MonthCounts(seq or "", None, await self._count_whole_month(modb), True)
        elif cached is not None:
            # Same sequence, bounds still equivalent: count only the boxes it lacks, with the
            # bounds it was made for, so every box of the entry is counted alike.
            made_start, made_end = cached.bounds or bounds
            missing = [box_id for box_id in box_ids if box_id not in cached.boxes]
            cached.boxes.update(await self._count_since(modb, made_start, made_end, missing))
            return cached
        elif seq is None:
            month = MonthCounts("", bounds, await self._count_since(modb, *bounds, box_ids), False)
        else:
            boxes, (stable_start, stable_end) = await asyncio.gather(
                self._count_since(modb, *bounds, box_ids), self._stable_until(modb, *bounds))
            month = MonthCounts(seq, bounds, boxes, False, stable_start, stable_end)
        if seq is not None:
            self.count_cache.put(db, month)
        return month

    async def _count_whole_month(self, modb: DbName) -> dict[str, FolderSums]:
        # One grouped query (a row per box of the account) costs O(boxes) from the stored
        # reductions; asking for the page's boxes one by one costs more round trips.
        result = await self.couch.view(
            modb.unencoded, COUNTS_DESIGN, COUNTS_VIEW, {"group_level": 1})
        boxes: dict[str, FolderSums] = {}
        for row in result.get("rows", []):
            key = row.get("key")
            if isinstance(key, list) and len(key) == 1:
                boxes[str(key[0])] = _folder_sums(row.get("value"))
        return boxes

    async def _count_since(
        self, modb: DbName, start: int, end: int, box_ids: list[str]
    ) -> dict[str, FolderSums]:
        # The month the window starts in: per box, the reduction of the key range
        # [box, start] … [box, end], all boxes of the page in one multi-query request.
        if not box_ids:
            return {}
        queries = [{"startkey": [box_id, start], "endkey": [box_id, end]} for box_id in box_ids]
        results = await self.couch.view_queries(
            modb.unencoded, COUNTS_DESIGN, COUNTS_VIEW, queries)
        boxes: dict[str, FolderSums] = {}
        for box_id, result in zip(box_ids, results, strict=True):
            new = saved = deleted = 0
            for row in result.get("rows", []):
                more_new, more_saved, more_deleted = _folder_sums(row.get("value"))
                new, saved, deleted = new + more_new, saved + more_saved, deleted + more_deleted
            boxes[box_id] = (new, saved, deleted)
        return boxes

    async def _stable_until(self, modb: DbName, start: int, end: int) -> tuple[float, float]:
        """The first message time at or after `start`, and the first after `end` (any box,
        any folder: a superset of what is counted); infinity where there is none."""

        async def first(startkey: list[Any]) -> float:
            result = await self.couch.view(
                modb.unencoded, DESIGN, "listing_by_timestamp",
                {"startkey": startkey, "limit": 1})
            for row in result.get("rows", []):
                key = row.get("key")
                moment = key[0] if isinstance(key, list) and key else None
                # Times that are not numbers sort after every number: they are never counted.
                if isinstance(moment, int | float) and not isinstance(moment, bool):
                    return float(moment)
            return math.inf

        after_start, after_end = await asyncio.gather(first([start]), first([end, {}]))
        return after_start, after_end

    async def box_message_ids(self, modb: DbName, box_id: str) -> list[str]:
        """Ids of the box's live messages in one MODB, whatever their folder or time."""
        try:
            result = await self.couch.view(
                modb.unencoded, DESIGN, "count_per_box_folder",
                {"startkey": [box_id], "endkey": [box_id, {}]},
            )
        except DbNotFound:
            return []
        return [str(row["id"]) for row in result.get("rows", [])]

    async def get_docs(self, modb: DbName, ids: list[str]) -> list[JsonObject]:
        try:
            rows = await self.couch.all_docs(modb.unencoded, ids)
        except DbNotFound:
            return []
        return [row["doc"] for row in rows if isinstance(row.get("doc"), dict)]

    async def bulk_save(self, modb: DbName, docs: list[JsonObject]) -> dict[str, str | None]:
        """Save docs with `_bulk_docs`; id → None on success, else CouchDB's error string."""
        outcome: dict[str, str | None] = {}
        for start in range(0, len(docs), BULK_BATCH_DOCS):
            batch = docs[start : start + BULK_BATCH_DOCS]
            for result in await self.couch.bulk_docs(modb.unencoded, batch):
                doc_id = str(result.get("id"))
                outcome[doc_id] = str(result["error"]) if "error" in result else None
                if "rev" in result and "error" not in result:
                    for doc in batch:
                        if doc.get("_id") == doc_id:
                            doc["_rev"] = result["rev"]
        return outcome


def _folder_sums(value: Any) -> FolderSums:
    """A `[new, saved, deleted]` sum of the count view, as integers; zeros when malformed."""
    if not isinstance(value, list) or len(value) != len(FOLDERS):
        return NO_MESSAGES
    new, saved, deleted = (int(n) if isinstance(n, int | float) else 0 for n in value)
    return new, saved, deleted
