"""Webhook use cases: the available hooks, hooks in the platform's shapes, the bulk re-enable
and the delivery log (docs/webhooks.md, "The webhooks API")."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from piston_vm.core import errors, gregorian
from piston_vm.core.call import Call
from piston_vm.core.documents import client_fields, deep_merge, is_private, stamp_save
from piston_vm.core.listing import Cursor, build_filters, descending, fill_page, paging, passes
from piston_vm.core.validation import merge_errors
from piston_vm.core.webhook_catalog import (
    available_hooks,
    is_client_url,
    modifier_errors,
    new_signing_secret,
)
from piston_vm.services.base import ListPage, Service, modb_cursor, retry_on_conflict
from piston_vm.storage.accounts import Account
from piston_vm.storage.names import DbName, is_box_id
from piston_vm.storage.webhooks import DISABLED_MESSAGE, HOOK_TYPE

JsonObject = dict[str, Any]

SCHEMA = "webhooks"
SECRET_FIELD = "pvt_signing_secret"
ROTATE = "rotate_signing_secret"
REENABLE = "re-enable"
# The platform's answer to a collection PATCH.
REENABLED = "hooks updated"
# Keys of answers and of commands, never stored from a client: clients send a GET's answer
# back on POST, and the id, the secret and the disable reason live in `_id` and private fields.
_NOT_FROM_CLIENT = ("id", "signing_secret", "disable_reason", ROTATE)


@dataclass(frozen=True, slots=True)
class SavedHook:
    doc: JsonObject
    # The secret is the hook's account's alone: a parent's token manages the hook without it.
    shows_secret: bool

    @property
    def public(self) -> JsonObject:
        return public_hook(self.doc, self.shows_secret)

    @property
    def rev(self) -> str:
        return str(self.doc["_rev"])


def public_hook(doc: JsonObject, with_secret: bool) -> JsonObject:
    """What clients see: public keys and `id`, the platform's `disable_reason` when the hook was
    disabled for one, and (beyond the platform) `signing_secret`."""
    public = {k: v for k, v in doc.items() if not is_private(k)}
    if isinstance(doc.get("_read_only"), dict):
        public["_read_only"] = doc["_read_only"]
    public["id"] = doc["_id"]
    if DISABLED_MESSAGE in doc:
        public["disable_reason"] = doc[DISABLED_MESSAGE]
    if with_secret and isinstance(doc.get(SECRET_FIELD), str):
        public["signing_secret"] = doc[SECRET_FIELD]
    return public


def attempt_row(doc: JsonObject) -> JsonObject:
    """A delivery log row as the platform lists it: the attempt's public fields and its
    `timestamp` (`pvt_created`)."""
    row = {k: v for k, v in doc.items() if not is_private(k)}
    row["timestamp"] = doc.get("pvt_created")
    return row


def _uri_errors(uri: Any) -> JsonObject:
    if isinstance(uri, str) and not is_client_url(uri):
        return {"uri": {"error": {"message": "invalid client URL", "value": uri}}}
    return {}


def _is_true(value: Any) -> bool:
    return value is True or value == "true"


def _is_boolean(value: Any) -> bool:
    """A boolean or its string form (what the schema coercion takes), not 1 or 0."""
    return isinstance(value, bool) or value in ("true", "false")


class WebhookService(Service):
    def available(self) -> list[JsonObject]:
        return available_hooks()

    def _shows_secret(self, call: Call, account: Account) -> bool:
        return call.claims is not None and call.claims.account_id == account.id

    def _saved(self, call: Call, account: Account, doc: JsonObject) -> SavedHook:
        return SavedHook(doc, self._shows_secret(call, account))

    def _validate(self, public: JsonObject) -> JsonObject:
        """The schema (defaults applied) and the uri rule together; the modifiers only once
        those pass, as the platform checks them (docs/webhooks.md, "Creating a hook")."""
        cleaned, schema_errors = self.validator.validate(SCHEMA, public)
        found = merge_errors(schema_errors, _uri_errors(cleaned.get("uri")))
        if not found:
            found = modifier_errors(str(cleaned["hook"]), cleaned.get("custom_data"))
        if found:
            raise errors.ValidationFailed(found)
        return cleaned

    def _stamp(self, doc: JsonObject, account: Account, call: Call) -> None:
        stamp_save(doc, HOOK_TYPE, account.id, account.db.encoded, call, gregorian.now())
        if doc.get("enabled") is not False:
            # Enabling a hook clears why it was disabled (the platform's maybe_update_hook).
            doc.pop(DISABLED_MESSAGE, None)

    async def load(self, call: Call, account: Account, hook_id: str) -> SavedHook:
        return self._saved(call, account, await self._live(account, hook_id))

    async def _live(self, account: Account, hook_id: str) -> JsonObject:
        # Ids have the shape of box ids (docs/storage.md 1.5), checked before any CouchDB path.
        doc = await self.stores.webhooks.get(account, hook_id) if is_box_id(hook_id) else None
        if doc is None:
            raise errors.bad_identifier(hook_id)
        return doc

    async def create(self, call: Call, account: Account) -> SavedHook:
        public = self._validate(client_fields(call.data, _NOT_FROM_CLIENT))
        doc = {"_id": secrets.token_hex(16), **public, SECRET_FIELD: new_signing_secret()}
        self._stamp(doc, account, call)
        await self.stores.webhooks.save(account, doc)
        return self._saved(call, account, doc)

    async def replace(self, call: Call, account: Account, hook_id: str) -> SavedHook:
        async def attempt() -> SavedHook:
            stored = await self._live(account, hook_id)
            public = self._validate(client_fields(call.data, _NOT_FROM_CLIENT))
            return await self._save_public(call, account, stored, public)

        return await retry_on_conflict(attempt)

    async def patch(self, call: Call, account: Account, hook_id: str) -> SavedHook:
        """Merge into the hook; `rotate_signing_secret: true` also replaces its secret."""
        data = call.data
        raw = data.get(ROTATE) if isinstance(data, dict) else None

        async def attempt() -> SavedHook:
            stored = await self._live(account, hook_id)
            if raw is not None and not _is_boolean(raw):
                raise errors.validation_error(ROTATE, "type", {
                    "message": "Value did not match type(s): boolean", "target": "boolean",
                    "value": raw})
            merged = deep_merge(client_fields(stored, _NOT_FROM_CLIENT),
                                client_fields(data, _NOT_FROM_CLIENT))
            public = self._validate(merged)
            secret = new_signing_secret() if _is_true(raw) else None
            return await self._save_public(call, account, stored, public, secret)

        return await retry_on_conflict(attempt)

    async def _save_public(
        self, call: Call, account: Account, stored: JsonObject, public: JsonObject,
        secret: str | None = None,
    ) -> SavedHook:
        # Every private key survives: the secret, the disable reason, the platform's own fields.
        doc = {k: v for k, v in stored.items() if is_private(k)}
        doc.update(public)
        if secret is not None:
            doc[SECRET_FIELD] = secret
        self._stamp(doc, account, call)
        await self.stores.webhooks.save(account, doc)
        return self._saved(call, account, doc)

    async def delete(self, call: Call, account: Account, hook_id: str) -> SavedHook:
        """A soft delete, as the platform's: the hook leaves every list and stops firing."""
        async def attempt() -> SavedHook:
            doc = dict(await self._live(account, hook_id))
            doc["pvt_deleted"] = True
            self._stamp(doc, account, call)
            await self.stores.webhooks.save(account, doc)
            return SavedHook(doc, False)

        return await retry_on_conflict(attempt)

    async def reenable(self, call: Call, account: Account) -> str:
        """`PATCH …/webhooks {"data":{"re-enable":true}}`: the account's auto-disabled hooks
        run again (the platform's answer is the text "hooks updated")."""
        value = call.value(REENABLE)
        if value is None:
            raise errors.validation_error(REENABLE, "required", {
                "message": "re-enable is required to patch collections"})
        if not _is_true(value):
            raise errors.validation_error(REENABLE, "enum", {
                "message": "value not found in enumerated list of values", "target": [True]})
        await self.stores.webhooks.reenable(account)
        return REENABLED

    async def listing(self, call: Call, account: Account) -> ListPage:
        """The account's hooks as the platform lists them (summaries, id order), paged and
        filtered like every list (docs/api.md 8)."""
        page = paging(call, self.settings.page_size)
        filters = build_filters(call.query)
        desc = descending(call.query, default=False)

        async def fetch(cursor: Cursor | None, limit: int) -> list[JsonObject]:
            return await self.stores.webhooks.listing(
                account, cursor, limit, desc, include_docs=bool(filters))

        accept = (lambda row: passes(row.get("doc") or {}, filters)) if filters else None
        wanted = page.page_size + 1 if page.paginate else None
        rows = await fill_page(fetch, page.cursor, wanted, accept, desc)
        next_cursor = None
        if page.paginate and len(rows) > page.page_size:
            extra = rows.pop()
            next_cursor = Cursor(extra["key"], str(extra["id"]))
        values = [dict(row["value"]) for row in rows]
        return ListPage(values, next_cursor, page.start_key, page.paginate)

    async def attempts(self, call: Call, account: Account, hook_id: str | None) -> ListPage:
        """The delivery log, of the account or of one hook: newest first across the MODBs of
        the window (the retention window by default), paged like every list."""
        page = paging(call, self.settings.page_size)
        window = await self.window(call, account)
        desc = descending(call.query, default=True)
        filters = build_filters(call.query, created_filters=False)
        modbs = self.stores.messages.window_months(account.db, window.start, window.end)
        if desc:
            modbs.reverse()

        async def fetch(modb: DbName, at: Cursor | None, limit: int) -> list[JsonObject]:
            return await self.stores.webhooks.attempts(
                modb, hook_id, window.start, window.end, at, limit, desc)

        accept = (lambda row: passes(row.get("doc") or {}, filters)) if filters else None
        wanted = page.page_size + 1 if page.paginate else None
        collected = await self.scan_modbs(
            modbs, fetch, _own_cursor(page.cursor, hook_id), wanted, accept, desc)
        next_cursor = None
        if page.paginate and len(collected) > page.page_size:
            next_cursor = modb_cursor(*collected.pop())
        rows = [attempt_row(row["doc"]) for _, row in collected if isinstance(row.get("doc"), dict)]
        return ListPage(rows, next_cursor, page.start_key, page.paginate)


def _own_cursor(cursor: Cursor | None, hook_id: str | None) -> Cursor | None:
    """A cursor of this log, or a 400: one naming another hook's rows (or another list's keys)
    would page through rows this list does not hold."""
    if cursor is None or cursor.month is None:
        return cursor
    key = cursor.key
    if hook_id is None:
        fits = isinstance(key, int) and not isinstance(key, bool)
    else:
        fits = isinstance(key, list) and len(key) == 2 and key[0] == hook_id
    if not fits:
        raise errors.validation_error("start_key", "invalid", {
            "message": "start_key is not a cursor of this list", "value": cursor.encode()})
    return cursor
