"""Voicemail box use cases: validate, shape stored documents, list with counts (docs/api.md
9.1–9.6)."""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from typing import Any

from piston_vm.core import errors, gregorian
from piston_vm.core.call import Call
from piston_vm.core.documents import (
    alphanum_name,
    client_fields,
    deep_merge,
    is_private,
    stamp_save,
)
from piston_vm.core.listing import Cursor, build_filters, descending, fill_page, paging, passes
from piston_vm.core.validation import merge_errors
from piston_vm.services.base import Service, retry_on_conflict
from piston_vm.services.messages import MessageService
from piston_vm.storage.accounts import Account
from piston_vm.storage.names import BOX_ID_RE, DbName, is_box_id

JsonObject = dict[str, Any]

SCHEMA = "vmboxes"
LEGACY_MESSAGE = "Please migrate your voicemail box messages to MODB"
_MAILBOX_NUMBER_RE = re.compile(r"^[+-]?[0-9]+$")
MAILBOX_MAX_CHARS = 30
# Keys a client can never set on a box: the id lives in `_id`, legacy messages are private-like.
_NOT_FROM_CLIENT = ("id", "messages")


@dataclass(frozen=True, slots=True)
class SavedBox:
    doc: JsonObject
    has_legacy_messages: bool

    @property
    def public(self) -> JsonObject:
        return public_box(self.doc)

    @property
    def rev(self) -> str:
        return str(self.doc["_rev"])


def public_box(doc: JsonObject) -> JsonObject:
    """What clients see: public keys, `id`, and a stored `_read_only` object (docs/api.md 9.3)."""
    public = {k: v for k, v in doc.items() if not is_private(k) and k != "messages"}
    if isinstance(doc.get("_read_only"), dict):
        public["_read_only"] = doc["_read_only"]
    public["id"] = doc["_id"]
    return public


def has_legacy_messages(doc: JsonObject) -> bool:
    messages = doc.get("messages")
    return isinstance(messages, list) and len(messages) > 0


def _client_data(data: Any) -> JsonObject:
    return client_fields(data, _NOT_FROM_CLIENT)


def mailbox_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    # The schema caps a mailbox at 30 characters; longer strings are never numbers here.
    if isinstance(value, str) and len(value) <= MAILBOX_MAX_CHARS and _MAILBOX_NUMBER_RE.fullmatch(
            value):
        return int(value)
    return None


class VmboxService(Service):
    @property
    def messages(self) -> MessageService:
        """The message use cases a box delete takes its messages with."""
        return MessageService(self.stores, self.validator, self.settings, self.migrator,
                              self.repairs, self.transcoder)

    async def load(self, account: Account, box_id: str) -> JsonObject:
        return await self.live_box(account, box_id)

    async def _validate(
        self, account: Account, public: JsonObject, box_id: str | None
    ) -> JsonObject:
        """Uniqueness first, then the schema; every error is reported in one 400 (docs/api.md
        9.2)."""
        unique_errors: JsonObject = {}
        if "mailbox" in public:
            number = mailbox_number(public["mailbox"])
            holders = (
                [] if number is None
                else await self.stores.vmboxes.mailbox_holders(account.db, number)
            )
            if number is None or any(holder != box_id for holder in holders):
                unique_errors = {"mailbox": {"unique": {
                    "message": "Invalid mailbox number or already exists"}}}
        cleaned, schema_errors = self.validator.validate(SCHEMA, public)
        all_errors = merge_errors(unique_errors, schema_errors)
        if all_errors:
            raise errors.ValidationFailed(all_errors)
        return cleaned

    def _stamp(self, doc: JsonObject, account: Account, call: Call) -> None:
        stamp_save(doc, "vmbox", account.id, account.db.encoded, call, gregorian.now())
        if isinstance(doc.get("name"), str):
            doc["pvt_alphanum_name"] = alphanum_name(doc["name"])

    async def create(self, call: Call, account: Account) -> SavedBox:
        data = call.data
        chosen = data.get("id") if isinstance(data, dict) else None
        if chosen is not None and (not isinstance(chosen, str) or not is_box_id(chosen)):
            raise errors.ValidationFailed({"id": {"pattern": {
                "message": f"Failed to match pattern '{BOX_ID_RE.pattern}'",
                "target": BOX_ID_RE.pattern, "value": chosen}}})
        public = await self._validate(account, _client_data(data), None)
        doc = {"_id": chosen or secrets.token_hex(16), **public}
        self._stamp(doc, account, call)
        await self.stores.vmboxes.save(account.db, doc)
        return SavedBox(doc, False)

    async def replace(self, call: Call, account: Account, box_id: str) -> SavedBox:
        async def attempt() -> SavedBox:
            stored = await self.load(account, box_id)
            public = await self._validate(account, _client_data(call.data), box_id)
            return await self._save_public(call, account, stored, public)

        return await retry_on_conflict(attempt)

    async def patch(self, call: Call, account: Account, box_id: str) -> SavedBox:
        async def attempt() -> SavedBox:
            stored = await self.load(account, box_id)
            merged = deep_merge(_client_data(stored), _client_data(call.data))
            public = await self._validate(account, merged, box_id)
            return await self._save_public(call, account, stored, public)

        return await retry_on_conflict(attempt)

    async def _save_public(
        self, call: Call, account: Account, stored: JsonObject, public: JsonObject
    ) -> SavedBox:
        # Every private key survives, and so does the legacy `messages` array (docs/storage.md 4.4).
        doc = {k: v for k, v in stored.items() if is_private(k) or k == "messages"}
        doc.update(public)
        self._stamp(doc, account, call)
        await self.stores.vmboxes.save(account.db, doc)
        return SavedBox(doc, has_legacy_messages(doc))

    async def delete(self, call: Call, account: Account, box_id: str) -> SavedBox:
        await self.load(account, box_id)
        await self.messages.delete_all_of_box(call, account, box_id)

        async def attempt() -> SavedBox:
            doc = dict(await self.load(account, box_id))
            doc["pvt_deleted"] = True
            self._stamp(doc, account, call)
            await self.stores.vmboxes.save(account.db, doc)
            return SavedBox(doc, has_legacy_messages(doc))

        return await retry_on_conflict(attempt)

    async def listing(
        self, call: Call, account: Account
    ) -> tuple[list[JsonObject], Cursor | None, str | None, bool]:
        """(rows, next cursor, echoed start_key, paginated) in name order (docs/decisions.md
        D-6)."""
        page = paging(call, self.settings.page_size)
        filters = build_filters(call.query)
        desc = descending(call.query, default=False)

        async def fetch(cursor: Cursor | None, limit: int) -> list[JsonObject]:
            return await self.stores.vmboxes.listing(
                account.db, cursor, limit, desc, include_docs=bool(filters)
            )

        accept = (lambda row: passes(row.get("doc") or {}, filters)) if filters else None
        wanted = page.page_size + 1 if page.paginate else None
        # Which months hold messages to count does not depend on the page: find out meanwhile.
        window = asyncio.ensure_future(self._count_window(account))
        try:
            rows = await fill_page(fetch, page.cursor, wanted, accept, desc)
        except BaseException:
            window.cancel()
            raise
        next_cursor = None
        if page.paginate and len(rows) > page.page_size:
            extra = rows.pop()
            next_cursor = Cursor(extra["key"], extra["id"])
        values = [dict(row["value"]) for row in rows]
        await self._add_counts(values, *await window)
        return values, next_cursor, page.start_key, page.paginate

    async def _count_window(
        self, account: Account
    ) -> tuple[int, int, list[DbName], dict[str, str | None]]:
        """The retention window, the MODBs of its months that exist, and what their cached
        counts are checked against (read while the page is fetched)."""
        now = gregorian.now()
        start = now - await self.stores.accounts.retention_s(account, self.settings)
        modbs = await self.stores.messages.window_modbs(account.db, start, now)
        return start, now, modbs, await self.stores.messages.month_seqs(modbs)

    async def _add_counts(
        self, rows: list[JsonObject], start: int, end: int, modbs: list[DbName],
        seqs: dict[str, str | None],
    ) -> None:
        """`messages` and `folders` from the MODBs inside the retention window (docs/api.md 9.1)."""
        if not rows:
            return
        counts = await self.stores.messages.folder_counts(
            modbs, start, end, [str(row.get("id")) for row in rows], seqs)
        for row in rows:
            box_id = str(row.get("id"))
            if not any(counts[folder][box_id] for folder in counts):
                continue
            new, saved = counts["new"][box_id], counts["saved"][box_id]
            legacy = row.get("messages")
            row["messages"] = (legacy if isinstance(legacy, int) else 0) + new + saved
            row["folders"] = {"new": new, "saved": saved}
