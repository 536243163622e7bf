"""Legacy (pre-4.0) box `messages` entries moved into MODB messages (docs/storage.md 6;
docs/decisions.md D-13, P-25)."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from piston_vm.core import errors, gregorian
from piston_vm.core.config import Settings
from piston_vm.core.media import content_type_for_extension
from piston_vm.services import message_docs as docs
from piston_vm.services.audio import AudioService, AudioSource
from piston_vm.services.timezones import box_timezone
from piston_vm.services.transcoding import Transcoder
from piston_vm.storage.accounts import Account
from piston_vm.storage.couch import DbNotFound, DocConflict, StorageError
from piston_vm.storage.names import DbName, message_month, yyyymm
from piston_vm.storage.stores import Stores

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

# Read-modify-write of the box re-reads and retries this many times on a 409 (docs/storage.md 10).
SAVE_ATTEMPTS = 3
# Boxes of one account migrated at once by migrate_account: enough to hide round-trip latency,
# few enough not to crowd out the requests the service is answering meanwhile.
BOX_CONCURRENCY = 4
# MODBs probed at once when looking for an already migrated message.
LOOKUP_CONCURRENCY = 8
DEFAULT_EXTENSION = "mp3"
# Ids longer than this are never message ids (the API refuses them the same way).
MAX_OLD_ID_CHARS = 200

NO_MEDIA_ID = "no_media_id"
NO_MEDIA = "no_media"
DB_ERROR = "db_error"
CONFLICT = "conflict"

_INTEGER_RE = re.compile(r"^[+-]?\d+$")
_EXTENSION_RE = re.compile(r"^[A-Za-z0-9]{1,16}$")
_BOOKKEEPING_KEYS = ("migration_error", "migration_tries")


@dataclass(slots=True)
class MigrationReport:
    """Counts of one run; processed == migrated + sum(failed) + skipped."""

    processed: int = 0
    migrated: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    skipped: int = 0

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def merge(self, other: MigrationReport) -> None:
        self.processed += other.processed
        self.migrated += other.migrated
        self.failed.update(other.failed)
        self.skipped += other.skipped

    def as_dict(self) -> JsonObject:
        """The command's summary; `succeeded` and `no_id` are the names docs/api.md 9.18 uses."""
        return {
            "processed": self.processed,
            "migrated": self.migrated,
            "succeeded": self.migrated,
            "failed": dict(sorted(self.failed.items())),
            "failed_total": self.failed_total,
            "no_id": self.failed.get(NO_MEDIA_ID, 0),
            "skipped": self.skipped,
        }


@dataclass(slots=True)
class _Planned:
    """One legacy element on its way to a MODB."""

    index: int
    old_id: str
    modb: DbName
    doc: JsonObject
    # False when the time came from the box or the clock: a re-run may compute another month.
    stable_time: bool


# -- pure helpers ---------------------------------------------------------------------------


def as_time(value: Any) -> int | None:
    """A gregorian time if `value` parses as an integer naming a real UTC month, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _INTEGER_RE.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        return None
    if number <= 0:
        return None
    try:
        year, _ = gregorian.utc_month(number)
    except (ValueError, OverflowError, OSError):
        return None
    # A MODB name has a 4-digit year.
    return number if 1 <= year <= 9999 else None


def legacy_media_id(element: Any) -> str | None:
    if not isinstance(element, dict):
        return None
    value = element.get("media_id")
    return value if isinstance(value, str) and value else None


def migration_tries(element: Any) -> int:
    """`migration_tries`, a missing or malformed value counting as 0."""
    value = element.get("migration_tries") if isinstance(element, dict) else None
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER_RE.fullmatch(value.strip()):
        return int(value.strip())
    return 0


def lazily_exhausted(element: Any, retry_limit: int) -> bool:
    """docs/decisions.md P-25: a lazy pass leaves a failed element alone once it has used its
    tries."""
    return (
        isinstance(element, dict)
        and bool(element.get("migration_error"))
        and migration_tries(element) >= retry_limit
    )


def message_time(
    element: JsonObject, media: JsonObject | None, box: JsonObject, now: int
) -> tuple[int, bool]:
    """docs/storage.md 6.2 step 1: (T, whether a re-run is sure to compute the same T)."""
    if (time := as_time(element.get("timestamp"))) is not None:
        return time, True
    if media is not None:
        for key in ("pvt_modified", "pvt_created"):
            if (time := as_time(media.get(key))) is not None:
                return time, True
    for key in ("pvt_modified", "pvt_created"):
        if (time := as_time(box.get(key))) is not None:
            return time, False
    return now, False


def media_extension(box: JsonObject) -> str:
    value = box.get("media_extension")
    return value if isinstance(value, str) and _EXTENSION_RE.fullmatch(value) else (
        DEFAULT_EXTENSION)


def migrated_id(time: int, old_id: str) -> str:
    return f"{yyyymm(*gregorian.utc_month(time))}-{old_id}"


def lacks_length(element: JsonObject) -> bool:
    """A legacy element whose `length` nobody wrote: its audio is measured (docs/audio.md)."""
    return element.get("length") in (None, "")


def migrated_document(
    account: Account,
    box: JsonObject,
    element: JsonObject,
    old_id: str,
    time: int,
    zone_name: str,
    node_name: str,
    length_ms: int | None = None,
) -> tuple[DbName, JsonObject]:
    """docs/storage.md 6.2 steps 2–4: the MODB and the document one legacy element becomes;
    `length_ms` is the measured duration of an element without a length."""
    modb = account.db.modb(*gregorian.utc_month(time))
    new_id = migrated_id(time, old_id)
    metadata = {k: v for k, v in element.items() if k not in _BOOKKEEPING_KEYS}
    metadata["media_id"] = new_id
    metadata["timestamp"] = time
    if length_ms:
        metadata["length"] = length_ms
    extension = media_extension(box)
    attachment = f"{secrets.token_hex(16)}.{extension}"
    doc: JsonObject = {
        "_id": new_id,
        # Set directly, not with set_name(): migration writes no pvt_alphanum_name (6.2 step 3).
        "name": docs.message_name(box.get("mailbox"), time, zone_name),
        "description": "voicemail message with media",
        "source_type": "voicemail",
        "source_id": box["_id"],
        "media_source": "recording",
        "media_filename": attachment,
        "streamable": True,
        "utc_seconds": time,
        "metadata": metadata,
        "pvt_attachments": {
            attachment: {
                "content_type": content_type_for_extension(extension),
                "length": 0,
                "stub": False,
                "handler": {"kz_att_link": {
                    "att_dbname": account.db.encoded, "att_docid": old_id}},
            }
        },
        "pvt_type": "mailbox_message",
        "pvt_account_id": account.id,
        "pvt_account_db": modb.encoded,
        "pvt_created": time,
        "pvt_modified": time,
        "pvt_node": node_name,
        # A string, as the original writes it; readers compare with "true".
        "pvt_moved_to_modb": "true",
        "pvt_previous_id": old_id,
    }
    if length_ms:
        doc[docs.LENGTH_MEASURED] = True
    doc["pvt_document_hash"] = docs.document_hash(doc)
    return modb, doc


def with_failure(element: JsonObject, reason: str) -> JsonObject:
    return {**element, "migration_error": reason, "migration_tries": migration_tries(element) + 1}


def failure_reason(error: Exception) -> str:
    """CouchDB's error text when it gave one (`forbidden`), else `db_error` (6.2 step 7)."""
    cause = error.data.get("cause") if isinstance(error, errors.DatastoreError) else None
    if isinstance(cause, str) and cause and not cause.isdigit():
        return cause
    return DB_ERROR


def remaining_messages(
    current: list[Any], removed_ids: set[str], failures: list[tuple[JsonObject, str]]
) -> list[Any]:
    """The box's `messages` after a pass: migrated ids gone, failed elements annotated.

    Works on a re-read array too: removal goes by media id, and an annotation applies only to
    an element still equal to the one this pass tried (a concurrent pass may have annotated it).
    """
    pending = list(failures)
    result: list[Any] = []
    for element in current:
        if legacy_media_id(element) in removed_ids:
            continue
        for position, (original, reason) in enumerate(pending):
            if element == original:
                result.append(with_failure(original, reason))
                del pending[position]
                break
        else:
            result.append(element)
    return result


# -- the migrator ---------------------------------------------------------------------------


class LegacyMigrator:
    """Migrates legacy entries lazily (before message operations) or in bulk (the command).

    Build one per process (app or command): its per-box locks only save wasted work between
    concurrent requests; correctness across processes comes from the deterministic ids,
    conflict-as-success, and the re-reading box update.
    """

    def __init__(
        self, stores: Stores, settings: Settings, transcoder: Transcoder | None = None
    ) -> None:
        self.stores = stores
        self.settings = settings
        # Measures the audio of elements without a length; the app shares its pool.
        self.transcoder = transcoder if transcoder is not None else Transcoder(
            settings.transcode_workers)
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary())
        self._clean_accounts: dict[str, float] = {}
        self._clean_boxes: dict[tuple[str, str], float] = {}

    async def prepare_box(self, account: Account, box: JsonObject) -> JsonObject:
        """Before a message operation: migrate the loaded box's pending entries (docs/decisions.md
        D-13).

        Returns the box as it is afterwards. Costs nothing when the box has no legacy array.
        """
        elements = box.get("messages")
        limit = self.settings.migration_retry_limit
        if (not isinstance(elements, list) or not elements
                or all(lazily_exhausted(e, limit) for e in elements)):
            self._clean_boxes[(account.id, str(box["_id"]))] = (
                time.monotonic() + self.settings.account_cache_ttl_s)
            return box
        await self.migrate_box(account, str(box["_id"]), lazy=True)
        fresh = await self.stores.vmboxes.get(account.db, str(box["_id"]))
        return fresh if fresh is not None else box

    def box_known_clean(self, account: Account, box_id: str) -> bool:
        """True when this process saw the box without pending entries a moment ago."""
        return self._clean_boxes.get((account.id, box_id), 0.0) > time.monotonic()

    async def prepare_account(self, account: Account) -> None:
        """Before the account-wide listing (docs/decisions.md P-25); remembered briefly when
        nothing is pending."""
        now = time.monotonic()
        if self._clean_accounts.get(account.id, 0.0) > now:
            return
        report = await self.migrate_account(account, lazy=True)
        if report.migrated == 0 and report.failed_total == 0:
            # Legacy entries are only ever written by pre-4.0 platforms, so a short memory of
            # "nothing pending" spares the listing a view query without hiding real work.
            self._clean_accounts[account.id] = now + self.settings.account_cache_ttl_s

    def _lock(self, account: Account, box_id: str) -> asyncio.Lock:
        key = (account.id, box_id)
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    # -- one box ----------------------------------------------------------------------------

    async def migrate_box(
        self, account: Account, box_id: str, *, lazy: bool, dry_run: bool = False
    ) -> MigrationReport:
        """Migrate the box's pending legacy entries; one GET when there is nothing to do."""
        async with self._lock(account, box_id):
            box = await self.stores.vmboxes.get(account.db, box_id)
            report = MigrationReport()
            elements = box.get("messages") if box is not None else None
            if box is None or not isinstance(elements, list) or not elements:
                return report
            return await self._migrate_elements(account, box, elements, lazy, dry_run)

    async def _migrate_elements(
        self, account: Account, box: JsonObject, elements: list[Any], lazy: bool, dry_run: bool
    ) -> MigrationReport:
        report = MigrationReport(processed=len(elements))
        limit = self.settings.migration_retry_limit
        failures: dict[int, str] = {}
        wanted: list[tuple[int, str]] = []
        for index, element in enumerate(elements):
            if lazy and lazily_exhausted(element, limit):
                report.skipped += 1
            elif (old_id := legacy_media_id(element)) is None:
                failures[index] = NO_MEDIA_ID
            else:
                wanted.append((index, old_id))
        if not wanted and not failures:
            return report

        planned: list[_Planned] = []
        if wanted:
            media = await self._media_docs(account, [old_id for _, old_id in wanted])
            zone_name = await box_timezone(
                self.stores, account, box, self.settings.default_timezone)
            now = gregorian.now()
            lengths = {} if dry_run else await self._measured_lengths(
                account, [(i, old_id) for i, old_id in wanted
                          if isinstance(elements[i], dict) and lacks_length(elements[i])],
                media)
            for index, old_id in wanted:
                media_doc = media.get(old_id)
                if media_doc is not None and not media_doc.get("_attachments"):
                    # The doc is there but its audio is not (the issue's "media missing its
                    # attachment"): a link would make a message without audio, so the entry
                    # waits in the box; a missing doc is not a failure (6.2 step 7).
                    failures[index] = NO_MEDIA
                    continue
                time, stable = message_time(elements[index], media_doc, box, now)
                modb, doc = migrated_document(account, box, elements[index], old_id, time,
                                              zone_name, self.settings.node_name,
                                              lengths.get(index))
                planned.append(_Planned(index, old_id, modb, doc, stable))

        if dry_run:
            report.migrated = len(planned)
            report.failed.update(failures.values())
            return report

        succeeded = await self._save(account, box, planned, failures)
        # Two elements naming one media id leave only together; a kept one shares the failure.
        failed_ids = {old_id: failures[i] for i in failures
                      if (old_id := legacy_media_id(elements[i])) is not None}
        for index in succeeded:
            old_id = str(elements[index]["media_id"])
            if old_id in failed_ids:
                failures[index] = failed_ids[old_id]
        succeeded -= failures.keys()
        removed_ids = {str(elements[i]["media_id"]) for i in succeeded}
        # A bulk retry that fails again as recorded leaves the entry alone: only lazy passes
        # need the count (docs/decisions.md P-25), and re-running the command must change nothing.
        annotate = [(elements[i], reason) for i, reason in failures.items()
                    if isinstance(elements[i], dict)
                    and (lazy or elements[i].get("migration_error") != reason)]
        if not await self._update_box(account, box, removed_ids, annotate):
            # The entries are migrated but still listed; the next pass finds the existing
            # documents (conflict = success) and removes them.
            failures.update((i, CONFLICT) for i in succeeded)
            succeeded = set()
        report.migrated = len(succeeded)
        report.failed.update(failures.values())
        return report

    async def _measured_lengths(
        self, account: Account, wanted: list[tuple[int, str]],
        media: dict[str, JsonObject | None],
    ) -> dict[int, int]:
        """Durations of the elements' audio, by element index (docs/audio.md); an element
        whose audio cannot be read or measured keeps no length, as before."""
        audio = AudioService(self.stores)

        async def measure(old_id: str) -> int | None:
            media_doc = media.get(old_id) or {}
            attachments = media_doc.get("_attachments")
            if not isinstance(attachments, dict) or not attachments:
                return None
            # The link form's rule (docs/storage.md 5.4): the media document's first attachment.
            name = next(iter(attachments))
            stub = attachments[name] if isinstance(attachments[name], dict) else {}
            source = AudioSource(account.db, old_id, name, str(stub.get("content_type")),
                                 int(stub.get("length", 0)), stub.get("digest"), name,
                                 media_doc.get("_rev"))
            try:
                measured = await self.transcoder.measure_source(audio.byte_source(source))
            except (errors.ApiError, StorageError) as error:
                log.warning("legacy audio %s of account %s not measured: %r", old_id,
                            account.id, error)
                return None
            return measured.duration_ms

        found = await asyncio.gather(*(measure(old_id) for _, old_id in wanted))
        return {index: length for (index, _), length in zip(wanted, found, strict=True)
                if length}

    async def _media_docs(
        self, account: Account, old_ids: list[str]
    ) -> dict[str, JsonObject | None]:
        """The legacy media docs in one request; a missing or deleted doc maps to None.

        A CouchDB failure propagates: falling back to another time because of a timeout
        could give the entry a different id than a run that read the doc.
        """
        rows = await self.stores.couch.all_docs(account.db.unencoded, list(dict.fromkeys(old_ids)))
        found: dict[str, JsonObject | None] = {}
        for row in rows:
            doc = row.get("doc")
            found[str(row.get("key"))] = doc if isinstance(doc, dict) else None
        return found

    async def _save(
        self, account: Account, box: JsonObject, planned: list[_Planned], failures: dict[int, str]
    ) -> set[int]:
        """Write the new documents, one `_bulk_docs` per MODB; returns the migrated indexes."""
        succeeded: set[int] = set()
        unstable = [p for p in planned if not p.stable_time]
        if unstable:
            # Their month may differ from an interrupted earlier run's: look for that run's doc
            # before writing a second one.
            earlier = await self._find_migrated(
                account, str(box["_id"]), {p.old_id for p in unstable}, live_only=False)
            for item in unstable:
                if item.old_id in earlier:
                    succeeded.add(item.index)
            planned = [p for p in planned if p.index not in succeeded]
        by_modb: dict[DbName, list[_Planned]] = {}
        for item in planned:
            by_modb.setdefault(item.modb, []).append(item)
        for modb, items in by_modb.items():
            try:
                outcome = await self._bulk_create(modb, [item.doc for item in items])
            except (errors.ApiError, StorageError) as error:
                log.warning("legacy migration into %s failed: %r", modb.unencoded, error)
                for item in items:
                    failures[item.index] = failure_reason(error)
                continue
            for item in items:
                result = outcome.get(item.doc["_id"], DB_ERROR)
                # A conflict is an earlier (or concurrent) run's document: already migrated.
                if result is None or result == CONFLICT:
                    succeeded.add(item.index)
                else:
                    failures[item.index] = result or DB_ERROR
        return succeeded

    async def _bulk_create(self, modb: DbName, new_docs: list[JsonObject]) -> dict[str, str | None]:
        await self.stores.databases.ensure_modb(modb, create=True)
        try:
            return await self.stores.messages.bulk_save(modb, new_docs)
        except DbNotFound:
            # The MODB vanished since it was cached as ready: create it again, once.
            self.stores.databases.forget(modb)
            await self.stores.databases.ensure_modb(modb, create=True)
            return await self.stores.messages.bulk_save(modb, new_docs)

    async def _update_box(
        self,
        account: Account,
        box: JsonObject,
        removed_ids: set[str],
        failures: list[tuple[JsonObject, str]],
    ) -> bool:
        """Save the box changing only `messages` (6.2 step 6), re-reading on 409 (section 10)."""
        db = account.db.unencoded
        current: JsonObject | None = box
        for _ in range(SAVE_ATTEMPTS):
            if current is None:
                return True  # the box document is gone: nothing left to keep consistent
            messages = current.get("messages")
            if not isinstance(messages, list):
                return True  # someone else already emptied it
            remaining = remaining_messages(messages, removed_ids, failures)
            if remaining == messages:
                return True
            try:
                await self.stores.couch.put_doc(db, {**current, "messages": remaining})
                return True
            except DocConflict:
                current = await self.stores.couch.get_doc(db, str(box["_id"]))
        log.warning("box %s of account %s kept changing: migrated entries stay listed until "
                    "the next pass", box["_id"], account.id)
        return False

    # -- lookups of migrated messages -------------------------------------------------------

    async def _find_migrated(
        self, account: Account, box_id: str, old_ids: Iterable[str], *, live_only: bool
    ) -> dict[str, str]:
        """old id → id of its migrated message in any MODB of the account (newest month first).

        One `_all_docs` per MODB, a few MODBs at a time, stopping once every id is found.
        """
        wanted = set(old_ids)
        found: dict[str, str] = {}
        modbs = list(reversed(await self.stores.messages.all_modbs(account.db)))

        async def probe(modb: DbName) -> list[tuple[str, str]]:
            assert modb.month is not None
            keys = {f"{yyyymm(*modb.month)}-{old_id}": old_id for old_id in wanted}
            try:
                rows = await self.stores.couch.all_docs(modb.unencoded, list(keys))
            except DbNotFound:
                return []
            hits = []
            for row in rows:
                doc = row.get("doc")
                if not isinstance(doc, dict) or doc.get("source_id") != box_id:
                    continue
                if doc.get("pvt_type") != "mailbox_message":
                    continue
                if live_only and doc.get("pvt_deleted"):
                    continue
                hits.append((keys[str(doc["_id"])], str(doc["_id"])))
            return hits

        for start in range(0, len(modbs), LOOKUP_CONCURRENCY):
            batch = modbs[start : start + LOOKUP_CONCURRENCY]
            for hits in await asyncio.gather(*(probe(modb) for modb in batch)):
                for old_id, new_id in hits:
                    found.setdefault(old_id, new_id)
            wanted -= found.keys()
            if not wanted:
                break
        return found

    async def resolve_old_id(self, account: Account, box_id: str, old_id: str) -> str | None:
        """docs/decisions.md P-25: the live message of the box whose id is `YYYYMM-<old_id>`, or
        None.

        Call it after migrate_box. An id already of the current format comes back unchanged.
        """
        if not old_id or len(old_id) > MAX_OLD_ID_CHARS:
            return None
        if message_month(old_id) is not None:
            return old_id
        found = await self._find_migrated(account, box_id, [old_id], live_only=True)
        return found.get(old_id)

    # -- one account ------------------------------------------------------------------------

    async def migrate_account(
        self,
        account: Account,
        *,
        lazy: bool,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> MigrationReport:
        """Migrate every box with legacy entries; `progress(done, total)` counts entries.

        Candidates come from `crossbar_listing` (its `messages` is the legacy count), not from
        `legacy_msg_by_timestamp`, which leaves out entries that already failed once. When
        `stop` is set, boxes already started finish and no new one starts.
        """
        report = MigrationReport()
        rows = await self.stores.vmboxes.listing(account.db, None, 0, False, False)
        counts: dict[str, int] = {}
        for row in rows:
            value = row.get("value") or {}
            count = value.get("messages") if isinstance(value, dict) else None
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                counts[str(row["id"])] = count
        if lazy and counts:
            # Boxes whose every entry used up its lazy tries need no lock and no second read.
            boxes = await self.stores.vmboxes.get_many(account.db, list(counts))
            limit = self.settings.migration_retry_limit
            for box_id in list(counts):
                elements = (boxes.get(box_id) or {}).get("messages")
                if isinstance(elements, list) and elements and all(
                        lazily_exhausted(e, limit) for e in elements):
                    report.processed += len(elements)
                    report.skipped += len(elements)
                    del counts[box_id]
        total = sum(counts.values())
        done = 0
        if progress is not None:
            progress(done, total)
        gate = asyncio.Semaphore(BOX_CONCURRENCY)

        async def one_box(box_id: str) -> None:
            nonlocal done
            async with gate:
                if stop is not None and stop.is_set():
                    return
                try:
                    box_report = await self.migrate_box(
                        account, box_id, lazy=lazy, dry_run=dry_run)
                except (errors.ApiError, StorageError) as error:
                    # One unreachable box must not stop the account; its entries stay put.
                    log.warning("legacy migration of box %s in account %s failed: %r",
                                box_id, account.id, error)
                    box_report = MigrationReport(processed=counts[box_id])
                    box_report.failed[failure_reason(error)] += counts[box_id]
                report.merge(box_report)
                done += counts[box_id]
                if progress is not None:
                    progress(min(done, total), total)

        async with asyncio.TaskGroup() as group:
            for box_id in counts:
                group.create_task(one_box(box_id))
        return report
