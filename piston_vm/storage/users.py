"""User documents and the login lookups over them (docs/storage.md 3): realm, name, credential
hash."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from piston_vm.core import gregorian
from piston_vm.storage.couch import CouchClient, DbNotFound
from piston_vm.storage.names import account_db, is_account_id

JsonObject = dict[str, Any]

HashMethod = Literal["md5", "sha"]

ACCOUNTS_DB = "accounts"
_CREDS_VIEWS: Mapping[HashMethod, str] = {"md5": "creds_by_md5", "sha": "creds_by_sha"}
_NOT_ALPHANUM_RE = re.compile(r"[^a-z0-9]")


def credential_hashes(username: str, password: str) -> tuple[str, str]:
    """(md5, sha1) hex of "username:password": the platform's `pvt_md5_auth`/`pvt_sha1_auth`."""
    creds = f"{username}:{password}".encode()
    # Not password storage we chose: these are the platform's login hashes, compared verbatim.
    md5 = hashlib.md5(creds, usedforsecurity=False).hexdigest()
    sha1 = hashlib.sha1(creds, usedforsecurity=False).hexdigest()
    return md5, sha1


def name_key(name: str) -> str:
    """`listing_by_name`'s key: lowercased, everything outside [a-z0-9] removed."""
    return _NOT_ALPHANUM_RE.sub("", name.lower())


def realm_key(realm: str) -> str:
    """`listing_by_realm`'s key: the realm lowercased."""
    return realm.lower()


@dataclass(frozen=True, slots=True)
class CredentialMatch:
    """One row of `users/creds_by_*`: the user (`owner_id`) and the account it belongs to."""

    owner_id: str
    account_id: str


class UserStore:
    def __init__(self, couch: CouchClient) -> None:
        self.couch = couch

    async def account_ids_by_realm(self, realm: str) -> list[str]:
        key = realm_key(realm)
        return await self._account_ids("listing_by_realm", key) if key else []

    async def account_ids_by_name(self, name: str) -> list[str]:
        key = name_key(name)
        # A name of only punctuation has the empty key, shared by every such account: no match.
        return await self._account_ids("listing_by_name", key) if key else []

    async def _account_ids(self, view: str, key: str) -> list[str]:
        try:
            result = await self.couch.view(ACCOUNTS_DB, "accounts", view, {"key": key})
        except DbNotFound:
            return []
        ids: list[str] = []
        for row in result.get("rows", []):
            value = row.get("value")
            account_id = value.get("account_id") if isinstance(value, dict) else None
            account_id = account_id or row.get("id")
            if isinstance(account_id, str) and is_account_id(account_id) and account_id not in ids:
                ids.append(account_id)
        return ids

    async def find_by_credentials(
        self, account_id: str, method: HashMethod, credentials: str
    ) -> CredentialMatch | None:
        """The first enabled, non-deleted user of the account whose hash is `credentials`."""
        view = _CREDS_VIEWS[method]
        try:
            result = await self.couch.view(
                account_db(account_id).unencoded, "users", view, {"key": credentials}
            )
        except DbNotFound:
            return None
        for row in result.get("rows", []):
            value = row.get("value")
            if not isinstance(value, dict):
                continue
            owner_id = value.get("owner_id") or row.get("id")
            row_account = value.get("account_id") or account_id
            if isinstance(owner_id, str) and owner_id and row_account == account_id:
                return CredentialMatch(owner_id, account_id)
        return None

    async def get(self, account_id: str, user_id: str) -> JsonObject | None:
        doc = await self.couch.get_doc(account_db(account_id).unencoded, user_id)
        if doc is None or doc.get("pvt_type") != "user":
            return None
        return doc

    async def create(
        self,
        account_id: str,
        username: str,
        password: str,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        timezone: str | None = None,
        language: str | None = None,
        email: str | None = None,
        extra: JsonObject | None = None,
    ) -> JsonObject:
        """Save a user doc as the platform stores it; the password itself is never stored."""
        db = account_db(account_id)
        md5, sha1 = credential_hashes(username, password)
        now = gregorian.now()
        doc: JsonObject = {"_id": secrets.token_hex(16), "username": username}
        optional = {"first_name": first_name, "last_name": last_name, "timezone": timezone,
                    "language": language, "email": email}
        doc.update({k: v for k, v in optional.items() if v is not None})
        doc.update({
            "enabled": True,
            "pvt_type": "user",
            "pvt_md5_auth": md5,
            "pvt_sha1_auth": sha1,
            "pvt_account_id": account_id,
            "pvt_account_db": db.encoded,
            "pvt_created": now,
            "pvt_modified": now,
            "pvt_vsn": "1",
        })
        doc.update(extra or {})
        await self.couch.put_doc(db.unencoded, doc)
        return doc
