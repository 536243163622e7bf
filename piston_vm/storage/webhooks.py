"""Webhook documents (account database) and their delivery attempts (MODB): the only code that
touches them (docs/webhooks.md, "Stored documents")."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from piston_vm.core import errors, gregorian
from piston_vm.core.listing import Cursor
from piston_vm.storage.accounts import Account
from piston_vm.storage.couch import CouchClient, DbNotFound, DocConflict
from piston_vm.storage.databases import Databases
from piston_vm.storage.names import DbName
from piston_vm.storage.views import page_params

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

HOOK_TYPE = "webhook"
ATTEMPT_TYPE = "webhook_attempt"
DESIGN = "piston_vm_webhooks"
# Account database: every live hook, keyed by id, valued with the platform's list summary.
LISTING_VIEW = "crossbar_listing"
# MODB: attempts keyed `pvt_created`, and `[hook_id, pvt_created]` (the platform's keys).
ATTEMPTS_BY_TIME = "attempts_by_time"
ATTEMPTS_BY_HOOK = "attempts_by_hook"
# Where the platform keeps why a hook was disabled; answers call it `disable_reason`.
DISABLED_MESSAGE = "pvt_disabled_message"
# A worker's read-modify-write races API saves of the same hook; a few re-reads settle it
# (docs/storage.md 10).
UPDATE_ATTEMPTS = 3


def is_live_hook(doc: JsonObject | None) -> bool:
    return doc is not None and doc.get("pvt_type") == HOOK_TYPE and not doc.get("pvt_deleted")


def is_auto_disabled(doc: JsonObject) -> bool:
    """Disabled with a reason: the platform's test for which hooks a re-enable brings back."""
    return doc.get("enabled") is False and DISABLED_MESSAGE in doc


class WebhookStore:
    def __init__(self, couch: CouchClient, databases: Databases) -> None:
        self.couch = couch
        self.databases = databases

    # -- hooks -----------------------------------------------------------------------------

    async def hooks(self, account: Account) -> list[JsonObject]:
        """Every hook document of the account, enabled or not (soft-deleted ones left out), as
        stored, in id order."""
        rows = await self.listing(account, None, 0, descending=False, include_docs=True)
        return [dict(row["doc"]) for row in rows if is_live_hook(row.get("doc"))]

    async def get(self, account: Account, hook_id: str) -> JsonObject | None:
        """The live hook, or None when it is missing, soft-deleted or not a hook."""
        doc = await self.couch.get_doc(account.db.unencoded, hook_id)
        return doc if is_live_hook(doc) else None

    async def listing(
        self,
        account: Account,
        cursor: Cursor | None,
        limit: int,
        descending: bool,
        include_docs: bool,
    ) -> list[JsonObject]:
        """Rows of the listing view in id order, starting at `cursor` (limit 0 = no limit). An
        account whose database is gone (a worker may ask after it was removed) has none."""
        params = page_params(cursor, limit, descending, include_docs)
        try:
            await self.databases.ensure_account_db(account.db)
            result = await self.couch.view(account.db.unencoded, DESIGN, LISTING_VIEW, params)
        except DbNotFound:
            self.databases.forget(account.db)
            return []
        return [dict(row) for row in result.get("rows", [])]

    async def save(self, account: Account, doc: JsonObject) -> str:
        """Create or update; another writer's save in between (or an existing id) is a 409."""
        await self.databases.ensure_account_db(account.db)
        try:
            return await self.couch.put_doc(account.db.unencoded, doc)
        except DocConflict:
            raise errors.datastore_conflict() from None

    async def disable(self, account: Account, hook_id: str, reason: str) -> None:
        """`enabled: false` with the platform's disable reason (the auto-disable of too many
        failed attempts). A hook that is gone meanwhile is left alone."""
        def change(doc: JsonObject) -> bool:
            doc["enabled"] = False
            doc[DISABLED_MESSAGE] = reason
            return True

        if await self._update(account, hook_id, change):
            log.info("disabled webhook %s of account %s: %s", hook_id, account.id, reason)

    async def reenable(self, account: Account) -> list[str]:
        """Enable every hook of the account that was disabled with a reason, clearing it; hooks
        their owner disabled stay so. The ids of the hooks enabled."""
        def change(doc: JsonObject) -> bool:
            if not is_auto_disabled(doc):
                return False
            doc["enabled"] = True
            doc.pop(DISABLED_MESSAGE, None)
            return True

        enabled = []
        for hook in await self.hooks(account):
            if is_auto_disabled(hook) and await self._update(account, hook["_id"], change):
                enabled.append(str(hook["_id"]))
        return enabled

    async def _update(
        self, account: Account, hook_id: str, change: Callable[[JsonObject], bool]
    ) -> bool:
        """Apply `change` to a fresh read and save it, again after a conflict; False when the
        hook is gone or `change` says there is nothing to do."""
        for attempt in range(UPDATE_ATTEMPTS):
            doc = await self.get(account, hook_id)
            if doc is None or not change(doc):
                return False
            doc["pvt_modified"] = gregorian.now()
            try:
                await self.couch.put_doc(account.db.unencoded, doc)
                return True
            except DocConflict:
                if attempt + 1 == UPDATE_ATTEMPTS:
                    raise errors.datastore_conflict() from None
        return False

    # -- attempts --------------------------------------------------------------------------

    async def add_attempt(self, account: Account, modb: DbName, attempt: JsonObject) -> None:
        """Write one attempt into `modb`, creating the MODB (and its design documents) when it
        does not exist yet. An attempt that carries an `_id` already stored (a delivery logged
        again after a crash) is kept as it was."""
        now = gregorian.now()
        doc = {
            "_id": secrets.token_hex(16),
            **attempt,
            "pvt_type": ATTEMPT_TYPE,
            "pvt_account_db": modb.encoded,
            "pvt_modified": now,
        }
        doc.setdefault("pvt_account_id", account.id)
        doc.setdefault("pvt_created", now)
        try:
            await self.databases.write_to_modb(
                modb, lambda: self.couch.put_doc(modb.unencoded, doc))
        except DocConflict:
            log.debug("attempt %s is already in %s", doc["_id"], modb.unencoded)

    async def attempts(
        self,
        modb: DbName,
        hook_id: str | None,
        start: int,
        end: int,
        cursor: Cursor | None,
        limit: int,
        descending: bool,
    ) -> list[JsonObject]:
        """Attempt rows (with their documents) of one MODB with start <= pvt_created <= end, of
        one hook or all, in time order from `cursor`; a MODB that is gone has none."""
        low: Any = start if hook_id is None else [hook_id, start]
        high: Any = end if hook_id is None else [hook_id, end]
        first, last = (high, low) if descending else (low, high)
        params = page_params(cursor, limit, descending, True, first, last)
        view = ATTEMPTS_BY_TIME if hook_id is None else ATTEMPTS_BY_HOOK
        try:
            result = await self.couch.view(modb.unencoded, DESIGN, view, params)
        except DbNotFound:
            self.databases.forget(modb)
            return []
        return [dict(row) for row in result.get("rows", [])]
