"""Accounts: the read side the API needs, plus creation for the CLI and tests (docs/storage.md
3)."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from piston_vm.core import gregorian
from piston_vm.core.config import Settings
from piston_vm.storage.couch import CouchClient, DbNotFound
from piston_vm.storage.databases import Databases
from piston_vm.storage.design import install_all
from piston_vm.storage.names import DbName, account_db

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

ACCOUNTS_DB = "accounts"
SYSTEM_CONFIG_DB = "system_config"


@dataclass(frozen=True, slots=True)
class Readiness:
    """What /readyz reports of CouchDB (docs/operations.md, "Probes")."""

    couchdb: str  # up, unreachable, unauthorized, error
    design_documents: str  # installed, missing, unknown (CouchDB did not say)

    @property
    def ready(self) -> bool:
        return self.couchdb == "up" and self.design_documents == "installed"


def _path(doc: JsonObject | None, *keys: str) -> Any:
    current: Any = doc
    for key in keys:
        if not isinstance(current, dict):
            return None
        current = current.get(key)
    return current


def _positive_int(value: Any) -> int | None:
    # Only a JSON integer counts (docs/storage.md 8): "30" or 30.5 fall through to the next source.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    doc: JsonObject = field(repr=False)

    @property
    def db(self) -> DbName:
        return account_db(self.id)

    @property
    def name(self) -> str | None:
        value = self.doc.get("name")
        return value if isinstance(value, str) else None

    @property
    def realm(self) -> str | None:
        value = self.doc.get("realm")
        return value if isinstance(value, str) and value else None

    @property
    def tree(self) -> list[str]:
        tree = self.doc.get("pvt_tree")
        return [a for a in tree if isinstance(a, str)] if isinstance(tree, list) else []

    @property
    def is_superduper_admin(self) -> bool:
        return self.doc.get("pvt_superduper_admin") is True

    @property
    def usable(self) -> bool:
        return not self.doc.get("pvt_deleted") and self.doc.get("enabled") is not False


class AccountStore:
    def __init__(self, couch: CouchClient, databases: Databases, cache_ttl_s: float) -> None:
        self.couch = couch
        self.databases = databases
        self.cache_ttl_s = cache_ttl_s
        # A short-lived cache: every request checks its account, and CouchDB round trips are
        # the service's whole cost. Deleting an account takes effect within the TTL.
        self._cache: dict[str, tuple[float, Account | None]] = {}
        self._retention_cache: dict[str, tuple[float, int | None]] = {}

    async def get(self, account_id: str) -> Account | None:
        """The account (from its own database, else `accounts`), or None if it does not exist."""
        if self.cache_ttl_s > 0:
            hit = self._cache.get(account_id)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        account = await self._load(account_id)
        if self.cache_ttl_s > 0:
            self._cache[account_id] = (time.monotonic() + self.cache_ttl_s, account)
        return account

    async def _load(self, account_id: str) -> Account | None:
        db = account_db(account_id)
        doc = await self.couch.get_doc(db.unencoded, account_id)
        if doc is None:
            if not await self.couch.db_exists(db.unencoded):
                return None
            doc = await self.couch.get_doc(ACCOUNTS_DB, account_id)
        if doc is None or doc.get("pvt_type", "account") != "account":
            return None
        return Account(account_id, doc)

    async def retention_s(self, account: Account, settings: Settings) -> int:
        """Retention in seconds: account override, else system config, else the default."""
        days = await self._retention_override(account)
        return days * 86_400 + 3_600 if days is not None else settings.retention_s

    async def _retention_override(self, account: Account) -> int | None:
        key = "retention:" + account.id
        if self.cache_ttl_s > 0:
            hit = self._retention_cache.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        days = _positive_int(
            _path(await self.couch.get_doc(account.db.unencoded, "configs_callflow"),
                  "voicemail", "message_retention_duration")
        )
        if days is None:
            days = _positive_int(
                _path(await self.couch.get_doc(SYSTEM_CONFIG_DB, "callflow"),
                      "default", "voicemail", "message_retention_duration")
            )
        if self.cache_ttl_s > 0:
            self._retention_cache[key] = (time.monotonic() + self.cache_ttl_s, days)
        return days

    async def find_by_api_key(self, api_key: str) -> str | None:
        try:
            result = await self.couch.view(
                ACCOUNTS_DB, "accounts", "listing_by_api", {"key": api_key}
            )
        except DbNotFound:
            return None
        for row in result.get("rows", []):
            account_id = (row.get("value") or {}).get("account_id") or row.get("id")
            if isinstance(account_id, str):
                return account_id
        return None

    async def create(
        self,
        name: str,
        realm: str | None = None,
        parent: Account | None = None,
        superduper: bool = False,
        timezone: str | None = None,
        extra: JsonObject | None = None,
    ) -> tuple[Account, str]:
        """Create an account database, its documents and design docs; returns (account, api_key)."""
        account_id = secrets.token_hex(16)
        api_key = secrets.token_hex(32)
        db = account_db(account_id)
        now = gregorian.now()
        doc: JsonObject = {
            "_id": account_id,
            "name": name,
            "enabled": True,
            "pvt_type": "account",
            "pvt_vsn": "1",
            "pvt_account_id": account_id,
            "pvt_account_db": db.encoded,
            "pvt_tree": ([*parent.tree, parent.id] if parent is not None else []),
            "pvt_api_key": api_key,
            "pvt_superduper_admin": superduper,
            "pvt_created": now,
            "pvt_modified": now,
        }
        if realm is not None:
            doc["realm"] = realm
        if timezone is not None:
            doc["timezone"] = timezone
        doc.update(extra or {})
        await self.ensure_accounts_db()
        await self.couch.create_db(db.unencoded)
        await self.couch.put_doc(db.unencoded, dict(doc))
        await self.couch.put_doc(ACCOUNTS_DB, dict(doc))
        await install_all(self.couch, db.unencoded, self.databases.design.account)
        return Account(account_id, doc), api_key

    async def readiness(self) -> Readiness:
        """One GET of the accounts database's first design document: it needs the configured
        credentials (CouchDB databases are admin-only by default) and proves the startup
        installed what every login and account lookup queries."""
        # couchdb/accounts/ ships with the package: logins cannot work without its views.
        status = await self.couch.probe(ACCOUNTS_DB, str(self.databases.design.accounts[0]["_id"]))
        if status is None:
            return Readiness("unreachable", "unknown")
        if status < HTTPStatus.BAD_REQUEST:
            return Readiness("up", "installed")
        if status == HTTPStatus.NOT_FOUND:
            return Readiness("up", "missing")
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            return Readiness("unauthorized", "unknown")
        return Readiness("error", "unknown")

    async def ensure_accounts_db(self) -> None:
        await self.couch.create_db(ACCOUNTS_DB)
        await install_all(self.couch, ACCOUNTS_DB, self.databases.design.accounts)
