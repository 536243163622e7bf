"""Voicemail message use cases (docs/api.md 9.7–9.17): create, list, fetch, change, move, delete.

Nothing is lost: a move writes the copy (audio included and verified) before it removes the
source, and a retried move finds its earlier copy by its deterministic id instead of making a
second one.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from piston_vm.core import errors, gregorian
from piston_vm.core.call import Call
from piston_vm.core.documents import (
    copy_transcription,
    mark_deleted,
    stamp_auth,
    stamp_folder_change,
)
from piston_vm.core.listing import Cursor, build_filters, descending, paging, passes
from piston_vm.services import message_docs as docs
from piston_vm.services.audio import AudioInput, AudioService, examine_upload
from piston_vm.services.base import ListPage, Service, modb_cursor
from piston_vm.services.message_docs import Located
from piston_vm.services.timezones import box_timezone
from piston_vm.storage.accounts import Account
from piston_vm.storage.couch import DocConflict, StorageError
from piston_vm.storage.names import DbName, is_box_id, message_month, previous_month, yyyymm

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

SCHEMA = "vmbox_messages"
MAX_IDEMPOTENCY_KEY_CHARS = 255
# A create retried with the same Idempotency-Key within this long returns the first message.
IDEMPOTENCY_WINDOW_S = 24 * 3600
# Read-modify-write updates re-read and retry this many times on a CouchDB 409 (docs/storage.md 10).
SAVE_ATTEMPTS = 3
_MAX_ID_CHARS = 200


@dataclass(frozen=True, slots=True)
class BulkResult:
    succeeded: list[str]
    failed: list[tuple[str, str]]

    def as_data(self) -> JsonObject:
        """docs/decisions.md D-1: `failed` is a list of one-key objects; empty lists are omitted."""
        data: JsonObject = {}
        if self.succeeded:
            data["succeeded"] = self.succeeded
        if self.failed:
            data["failed"] = [{doc_id: reason} for doc_id, reason in self.failed]
        return data


def folder_value(value: Any) -> str:
    """docs/decisions.md D-7: a missing folder means `saved`; an unknown one is a 400."""
    if value is None or value == "":
        return "saved"
    if value not in docs.FOLDERS:
        raise errors.validation_error("folder", "enum", {
            "message": "Value not found in enumerated list of values",
            "target": list(docs.FOLDERS), "value": value})
    return str(value)


def message_ids(data: Any) -> list[str]:
    """`data.messages`: a non-empty array of ids, else 400 messages.required (docs/api.md 9.10)."""
    ids = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(ids, list) or not ids:
        raise errors.validation_error("messages", "required", {
            "message": "No array of message ids are specified"})
    return [str(i) for i in ids]


def destinations(value: Any) -> str | list[str] | None:
    """`source_id`: a box id (move), a list of box ids (copy), or absent (folder change)."""
    if value is None:
        return None
    if value == "" or value == [] or (isinstance(value, list) and "" in value):
        raise errors.validation_error("source_id", "required", {
            "message": "empty source_id is specified. please set a single or a list of "
                       "source_ids."})
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(dict.fromkeys(value))
    raise errors.validation_error("source_id", "type", {
        "message": "Value did not match type(s): string, array",
        "target": "string, array", "value": value})


class MessageService(Service):
    # -- shared lookups ------------------------------------------------------------------

    async def load_box(self, account: Account, box_id: str) -> JsonObject:
        """The box (404 otherwise), with its legacy messages migrated first (docs/decisions.md
        D-13)."""
        return await self.migrator.prepare_box(account, await self.live_box(account, box_id))

    async def prepare(self, account: Account, box_id: str) -> None:
        """Before any message operation on a box: settle moves a crash left unfinished, and
        migrate the box's legacy messages (docs/decisions.md D-13)."""
        await self.repair_moves(account)
        if not is_box_id(box_id) or self.migrator.box_known_clean(account, box_id):
            return
        box = await self.stores.vmboxes.get(account.db, box_id)
        if box is not None:
            await self.migrator.prepare_box(account, box)

    async def current_id(self, account: Account, box_id: str, message_id: str) -> str:
        """docs/decisions.md P-25: an old media id (no YYYYMM- prefix) names the message it was
        migrated into."""
        if message_month(message_id) is not None or len(message_id) > _MAX_ID_CHARS:
            return message_id
        return await self.migrator.resolve_old_id(account, box_id, message_id) or message_id

    async def retention_timestamp(self, account: Account) -> int:
        return gregorian.now() - await self.stores.accounts.retention_s(account, self.settings)

    async def locate(self, account: Account, box_id: str, message_id: str) -> Located:
        """The fetch rule of docs/api.md 9.13: live, a message, and owned by the box; else 404."""
        await self.prepare(account, box_id)
        message_id = await self.current_id(account, box_id, message_id)
        month = message_month(message_id) if len(message_id) <= _MAX_ID_CHARS else None
        if month is None:
            raise errors.bad_identifier(message_id)
        modb = account.db.modb(*month)
        doc = await self.stores.messages.get(modb, message_id)
        if (
            doc is None
            or doc.get("pvt_type") != "mailbox_message"
            or doc.get("pvt_deleted")
            or doc.get("source_id", box_id) != box_id
        ):
            raise errors.bad_identifier(message_id)
        return Located(modb, doc)

    async def fix_folder(self, found: Located) -> Located:
        """docs/decisions.md D-11 and P-26: a message without a folder (or metadata) gets one,
        and is saved."""
        doc = found.doc
        metadata = doc.get("metadata")
        if isinstance(metadata, dict) and metadata.get("folder"):
            return found
        fixed = dict(doc)
        new_metadata = dict(metadata) if isinstance(metadata, dict) else {}
        if not isinstance(metadata, dict):
            new_metadata["media_id"] = doc["_id"]
            time = docs.message_time(doc)
            if time is not None:
                new_metadata["timestamp"] = time
        new_metadata["folder"] = "new"
        fixed["metadata"] = new_metadata
        try:
            await self.stores.messages.save(found.modb, fixed)
        except DocConflict:
            return found  # someone else changed it; the next read fixes it
        return Located(found.modb, fixed)

    async def _update(
        self, found: Located, change: Callable[[JsonObject], None]
    ) -> JsonObject:
        """Apply `change` and save, re-reading on conflict (docs/storage.md 10); 409 after
        retries."""
        doc = dict(found.doc)
        for _ in range(SAVE_ATTEMPTS):
            change(doc)
            try:
                await self.stores.messages.save(found.modb, doc)
                return doc
            except DocConflict:
                fresh = await self.stores.messages.get(found.modb, found.id)
                if fresh is None or fresh.get("pvt_deleted"):
                    raise errors.bad_identifier(found.id) from None
                doc = fresh
        raise errors.datastore_conflict()

    # -- create ----------------------------------------------------------------------------

    def validate_metadata(self, data: Any) -> JsonObject:
        fields = data if isinstance(data, dict) else {}
        known = {k: v for k, v in fields.items()
                 if k in self.validator.schemas[SCHEMA]["properties"] and v != ""}
        cleaned, problems = self.validator.validate(SCHEMA, known)
        if problems:
            raise errors.ValidationFailed(problems)
        return cleaned

    async def build_new(
        self, call: Call, account: Account, box: JsonObject, fields: JsonObject
    ) -> tuple[DbName, JsonObject]:
        """The document of an API create (docs/storage.md 5.1–5.5, docs/api.md 9.9)."""
        now = gregorian.now()
        time = fields.get("timestamp") or now
        month = gregorian.utc_month(time)
        modb = account.db.modb(*month)
        message_id = docs.new_message_id(*month)
        anonymous = self.settings.anonymous_caller_id
        caller_number = fields.get("caller_id_number") or anonymous
        realm = account.realm
        sender = docs.with_realm(str(fields.get("from") or caller_number), realm)
        recipient = docs.with_realm(str(fields.get("to") or box.get("mailbox")), realm)
        from_user, from_realm = docs.split_address(sender)
        to_user, to_realm = docs.split_address(recipient)
        metadata: JsonObject = {
            "media_id": message_id,
            "call_id": fields.get("call_id") or secrets.token_hex(12),
            "caller_id_name": fields.get("caller_id_name") or anonymous,
            "caller_id_number": caller_number,
            "from": sender, "from_user": from_user, "from_realm": from_realm,
            "length": fields.get("length") or 1,
            "timestamp": time,
            "to": recipient, "to_user": to_user, "to_realm": to_realm,
            "folder": fields.get("folder") or "new",
        }
        zone_name = await box_timezone(self.stores, account, box, self.settings.default_timezone)
        doc: JsonObject = {
            "_id": message_id,
            "description": "voicemail message with media",
            "source_type": "voicemail",
            "source_id": box["_id"],
            "media_source": "recording",
            "streamable": True,
            "utc_seconds": time,
            "metadata": metadata,
            "pvt_type": "mailbox_message",
            "pvt_account_id": account.id,
            "pvt_account_db": modb.encoded,
            "pvt_created": now,
            "pvt_modified": now,
            "pvt_vsn": "1",
            "pvt_node": self.settings.node_name,
        }
        docs.set_name(doc, docs.message_name(box.get("mailbox"), time, zone_name))
        stamp_auth(doc, call)
        doc["pvt_document_hash"] = docs.document_hash(doc)
        return modb, doc

    async def create(
        self,
        call: Call,
        account: Account,
        box: JsonObject,
        audio: AudioInput | None,
        idempotency_key: str | None,
    ) -> JsonObject:
        """A new message, with its audio when given, in one CouchDB write: a crash at any
        moment leaves no message or a whole one (docs/integrity.md, "Creates")."""
        fields = self.validate_metadata(call.data)
        duration_ms = None
        if audio is not None:
            examined = await examine_upload(audio, self.transcoder, self.settings.require_audio)
            audio, duration_ms = examined.audio, examined.duration_ms
        modb, doc = await self.build_new(call, account, box, fields)
        if audio is not None:
            docs.set_measured_length(doc, duration_ms)
            doc["pvt_document_hash"] = docs.document_hash(doc)
        if idempotency_key is not None:
            earlier = await self._earlier_create(account, box, idempotency_key, modb, doc)
            if earlier is not None:
                return earlier
        try:
            if audio is None:
                await self.stores.messages.create(modb, doc)
            else:
                await self.stores.messages.create_with_audio(
                    modb, doc, lambda: [audio.attachment()])
        except DocConflict:
            # Only keyed ids can collide: a request with the same key stored it first.
            if idempotency_key is not None:
                earlier = await self._earlier_create(account, box, idempotency_key, modb, doc)
                if earlier is not None:
                    return earlier
            raise errors.datastore_conflict() from None
        return doc

    async def _earlier_create(
        self, account: Account, box: JsonObject, key: str, modb: DbName, doc: JsonObject
    ) -> JsonObject | None:
        """The message an earlier create with this key stored, or None; on None, `doc` takes
        the key's id (derived from account, box and key, so every instance agrees on it)."""
        if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
            raise errors.validation_error("Idempotency-Key", "maxLength", {
                "message": f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} "
                           "printable characters", "target": MAX_IDEMPOTENCY_KEY_CHARS})
        now = gregorian.now()
        months = [modb]
        if (modb.month is not None
                and now - gregorian.month_start(*modb.month) < IDEMPOTENCY_WINDOW_S):
            months.append(modb.modb(*previous_month(*modb.month)))
        expired = False
        for candidate in months:
            keyed_id = _keyed_id(account, box["_id"], key, candidate)
            for leaf in await self.stores.messages.leaves(candidate, keyed_id):
                created = leaf.get("pvt_created")
                if isinstance(created, int) and now - created > IDEMPOTENCY_WINDOW_S:
                    expired = expired or candidate == modb
                    continue
                if leaf.get("_deleted"):
                    # Stored, then moved away: the first create happened; never recreate it.
                    raise errors.datastore_conflict()
                return leaf
        if expired:
            return None  # the key's day is over: a new message, under a random id
        keyed_id = _keyed_id(account, box["_id"], key, modb)
        doc["_id"] = keyed_id
        doc["metadata"]["media_id"] = keyed_id
        doc["pvt_document_hash"] = docs.document_hash(doc)
        return None

    async def replace_audio(self, call: Call, found: Located, audio: AudioInput) -> JsonObject:
        """docs/api.md 9.17: the message's new recording, looked at first like any upload."""
        examined = await examine_upload(audio, self.transcoder, self.settings.require_audio)
        return await AudioService(self.stores).replace(
            call, found, examined.audio, examined.duration_ms)

    # -- single message --------------------------------------------------------------------

    async def fetch(self, account: Account, box_id: str, message_id: str) -> JsonObject:
        found = await self.fix_folder(await self.locate(account, box_id, message_id))
        return docs.public_metadata(found.doc, await self.retention_timestamp(account))

    async def check_changeable(self, account: Account, found: Located) -> None:
        """docs/decisions.md D-8: only deletes may touch a message older than retention."""
        cutoff = await self.retention_timestamp(account)
        if docs.is_older_than(found.doc, cutoff):
            raise errors.validation_error(found.id, "date_range", {
                "message": "cannot make changes to messages prior to retention duration",
                "cause": cutoff})

    async def change(
        self, call: Call, account: Account, box_id: str, message_id: str
    ) -> tuple[JsonObject, bool]:
        """POST one message: (data, is_bulk_result) for folder change, move or copy."""
        found = await self.locate(account, box_id, message_id)
        await self.check_changeable(account, found)
        target = destinations(call.value("source_id"))
        if target is None:
            folder = folder_value(call.value("folder"))
            updated = await self._update(found, lambda doc: _set_folder(doc, folder, call))
            return docs.public_metadata(updated, await self.retention_timestamp(account)), False
        boxes = await self._destination_boxes(account, target)
        if isinstance(target, str):
            moved = await self.mover.move(call, account, found, boxes[target])
            return docs.public_metadata(moved, await self.retention_timestamp(account)), False
        new_ids = [(await self.mover.copy(call, account, found, boxes[b]))["_id"] for b in target]
        return BulkResult(new_ids, []).as_data(), True

    async def delete(
        self, call: Call, account: Account, box_id: str, message_id: str
    ) -> JsonObject:
        found = await self.locate(account, box_id, message_id)
        deleted = await self._update(found, lambda doc: mark_deleted(doc, call))
        return docs.public_metadata(deleted, 0)

    # -- move and copy ---------------------------------------------------------------------

    async def _destination_boxes(
        self, account: Account, target: str | list[str]
    ) -> dict[str, JsonObject]:
        """docs/decisions.md P-12: every destination box is loaded before anything changes."""
        ids = [target] if isinstance(target, str) else target
        return {box_id: await self.load_box(account, box_id) for box_id in ids}

    # -- lists -----------------------------------------------------------------------------

    async def listing(
        self, call: Call, account: Account, box_id: str | None
    ) -> ListPage:
        """A box's messages (box_id) or the whole account's, across MODBs (docs/api.md 9.7, 9.8)."""
        page = paging(call, self.settings.page_size)
        window = await self.window(call, account)
        if box_id is None:
            await self.repair_moves(account)
            await self.migrator.prepare_account(account)
        else:
            await self.prepare(account, box_id)
        desc = descending(call.query, default=True)
        filters = build_filters(call.query, prefix="metadata.", created_filters=False)
        cutoff = await self.retention_timestamp(account)
        modbs = self.stores.messages.window_months(account.db, window.start, window.end)
        if desc:
            modbs.reverse()
        low: list[Any]
        high: list[Any]
        if box_id is None:
            view = "listing_by_timestamp"
            low, high = [window.start], [window.end, {}]
        else:
            view = "listing_by_mailbox"
            low, high = [box_id, window.start], [box_id, window.end]
        first, last = (high, low) if desc else (low, high)
        accept = (lambda row: passes(row.get("doc") or {}, filters)) if filters else None
        wanted = page.page_size + 1 if page.paginate else None

        async def fetch(modb: DbName, at: Cursor | None, limit: int) -> list[JsonObject]:
            return await self.stores.messages.listing(
                modb, view, first, last, at, limit, desc, include_docs=bool(filters))

        collected = await self.scan_modbs(modbs, fetch, page.cursor, wanted, accept, desc)
        next_cursor = None
        if page.paginate and len(collected) > page.page_size:
            next_cursor = modb_cursor(*collected.pop())
        rows_out = []
        for _, row in collected:
            summary = docs.summary_row(row["value"], cutoff)
            rows_out.append(summary if box_id is not None else {str(row["key"][1]): summary})
        return ListPage(rows_out, next_cursor, page.start_key, page.paginate)

    # -- bulk ------------------------------------------------------------------------------

    async def _locate_many(
        self, account: Account, box_id: str, ids: list[str]
    ) -> tuple[dict[str, Located], list[tuple[str, str]]]:
        """Load the listed ids by MODB, keyed by the id as requested (an old legacy id maps to
        its migrated message); unknown, deleted or foreign ids are not_found."""
        by_month: dict[tuple[int, int], list[tuple[str, str]]] = {}
        missing: list[tuple[str, str]] = []
        for requested in dict.fromkeys(ids):
            current = await self.current_id(account, box_id, requested)
            month = message_month(current) if len(current) <= _MAX_ID_CHARS else None
            if month is None:
                missing.append((requested, "not_found"))
            else:
                by_month.setdefault(month, []).append((requested, current))
        found: dict[str, Located] = {}
        for month, pairs in by_month.items():
            modb = account.db.modb(*month)
            stored = {d["_id"]: d for d in await self.stores.messages.get_docs(
                modb, [current for _, current in pairs])}
            for requested, current in pairs:
                doc = stored.get(current)
                if (doc is None or doc.get("pvt_type") != "mailbox_message"
                        or doc.get("pvt_deleted") or doc.get("source_id", box_id) != box_id):
                    missing.append((requested, "not_found"))
                else:
                    found[requested] = Located(modb, doc)
        return found, missing

    async def bulk_change(
        self, call: Call, account: Account, box_id: str
    ) -> JsonObject:
        ids = message_ids(call.data)
        await self.load_box(account, box_id)
        target = destinations(call.value("source_id"))
        boxes = await self._destination_boxes(account, target) if target is not None else {}
        folder = folder_value(call.value("folder")) if target is None else None
        found, failed = await self._locate_many(account, box_id, ids)
        filters = build_filters(call.query, prefix="metadata.", created_filters=False)
        cutoff = await self.retention_timestamp(account)
        succeeded: list[str] = []
        to_change: list[Located] = []
        for message_id in dict.fromkeys(ids):
            located = found.get(message_id)
            if located is None or not passes(located.doc, filters):
                continue
            if docs.is_older_than(located.doc, cutoff):
                failed.append((message_id, "prior_to_retention_duration"))
                continue
            if folder is not None:
                to_change.append(located)
                continue
            assert target is not None
            try:
                if isinstance(target, str):
                    moved = await self.mover.move(call, account, located, boxes[target])
                    succeeded.append(str(moved["_id"]))
                else:
                    for destination in target:
                        copied = await self.mover.copy(call, account, located, boxes[destination])
                        succeeded.append(str(copied["_id"]))
            except errors.ApiError as problem:
                failed.append((message_id, _failure_reason(problem)))
            except StorageError as problem:
                failed.append((message_id, type(problem).__name__))
        if folder is not None:
            saved, save_failures = await self._bulk_apply(
                box_id, to_change, lambda doc: _set_folder(doc, folder, call))
            succeeded += saved
            failed += save_failures
        return _ordered(ids, succeeded, failed, folder is not None)

    async def bulk_delete(self, call: Call, account: Account, box_id: str) -> JsonObject:
        data = call.data
        listed = data.get("messages") if isinstance(data, dict) else None
        filters = build_filters(call.query, prefix="metadata.", created_filters=False)
        failed: list[tuple[str, str]] = []
        targets: list[Located]
        await self.prepare(account, box_id)
        if isinstance(listed, list):
            ids = [str(i) for i in listed]
            found, failed = await self._locate_many(account, box_id, ids)
            targets = [found[i] for i in dict.fromkeys(ids) if i in found]
        else:
            raw_folder = call.value("folder")
            folder = None if raw_folder in (None, "") else folder_value(raw_folder)
            targets = await self.box_messages(account, box_id, folder)
        targets = [t for t in targets if passes(t.doc, filters)]
        succeeded, save_failures = await self._bulk_apply(
            box_id, targets, lambda doc: mark_deleted(doc, call))
        return BulkResult(succeeded, failed + save_failures).as_data()

    async def box_messages(
        self, account: Account, box_id: str, folder: str | None = None
    ) -> list[Located]:
        """Every live message of the box in every MODB, whatever its age (docs/decisions.md P-11,
        docs/decisions.md P-30)."""
        found: list[Located] = []
        for modb in await self.stores.messages.all_modbs(account.db):
            ids = await self.stores.messages.box_message_ids(modb, box_id)
            for doc in await self.stores.messages.get_docs(modb, ids):
                metadata = doc.get("metadata")
                in_folder = isinstance(metadata, dict) and metadata.get("folder") == folder
                if folder is None or in_folder:
                    found.append(Located(modb, doc))
        return found

    async def delete_all_of_box(self, call: Call, account: Account, box_id: str) -> None:
        """Box delete takes every message of the box with it (docs/decisions.md D-16,
        docs/decisions.md P-30).

        Legacy entries are migrated first; any that fail stay inside the soft-deleted box.
        """
        await self.prepare(account, box_id)
        targets = await self.box_messages(account, box_id)
        _, failed = await self._bulk_apply(box_id, targets, lambda doc: mark_deleted(doc, call))
        if failed:
            # The box stays until its messages are gone: retrying the delete finishes it.
            raise errors.datastore_fault(f"could not delete {len(failed)} messages")

    async def _bulk_apply(
        self, box_id: str, targets: list[Located], change: Callable[[JsonObject], None]
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """Apply `change` with `_bulk_docs` per MODB; conflicts are re-read and retried."""
        succeeded: list[str] = []
        failed: list[tuple[str, str]] = []
        pending: dict[DbName, list[JsonObject]] = {}
        for located in targets:
            pending.setdefault(located.modb, []).append(dict(located.doc))
        for modb, modb_docs in pending.items():
            for attempt in range(SAVE_ATTEMPTS):
                for doc in modb_docs:
                    change(doc)
                outcome = await self.stores.messages.bulk_save(modb, modb_docs)
                retry = []
                for doc in modb_docs:
                    error = outcome.get(doc["_id"])
                    if error is None:
                        succeeded.append(doc["_id"])
                    elif error == "conflict" and attempt + 1 < SAVE_ATTEMPTS:
                        retry.append(doc["_id"])
                    else:
                        failed.append((doc["_id"], error))
                if not retry:
                    break
                modb_docs = []
                refetched = await self.stores.messages.get_docs(modb, retry)
                gone = set(retry) - {str(doc["_id"]) for doc in refetched}
                failed += [(doc_id, "not_found") for doc_id in retry if doc_id in gone]
                for fresh in refetched:
                    if (fresh.get("pvt_deleted")
                            or fresh.get("source_id", box_id) != box_id):
                        failed.append((fresh["_id"], "not_found"))
                    else:
                        modb_docs.append(fresh)
        return succeeded, failed

    async def for_zip(self, account: Account, box_id: str, ids: list[str]) -> list[Located]:
        """Validate every id before a byte is sent (docs/api.md 9.12); duplicates once."""
        found, missing = await self._locate_many(account, box_id, ids)
        if missing:
            raise errors.bad_identifier(missing[0][0])
        return [found[i] for i in dict.fromkeys(ids)]


def _failure_reason(problem: errors.ApiError) -> str:
    """A bulk answer's reason for one message (docs/api.md 9.10): not_found or conflict when
    that is what happened, else what the error says."""
    if problem.status == HTTPStatus.NOT_FOUND:
        return "not_found"
    if problem.status == HTTPStatus.CONFLICT:
        return "conflict"
    return str(problem.data.get("cause", problem.message))


def _keyed_id(account: Account, box_id: str, key: str, modb: DbName) -> str:
    seed = f"{account.id}\n{box_id}\n{key}".encode()
    month = yyyymm(*modb.month) if modb.month else ""
    return f"{month}-{hashlib.sha256(seed).hexdigest()[:32]}"


def _set_folder(doc: JsonObject, folder: str, call: Call) -> None:
    metadata = doc.get("metadata")
    doc["metadata"] = {**(metadata if isinstance(metadata, dict) else {}), "folder": folder}
    copy_transcription(doc)
    stamp_auth(doc, call, request_id=False)
    stamp_folder_change(doc, folder, call)


def _ordered(
    ids: list[str], succeeded: list[str], failed: list[tuple[str, str]], keep_order: bool
) -> JsonObject:
    if keep_order:
        position = {message_id: n for n, message_id in enumerate(ids)}
        succeeded = sorted(succeeded, key=lambda i: position.get(i, len(ids)))
    return BulkResult(succeeded, failed).as_data()

