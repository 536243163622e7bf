"""Logins that issue tokens (docs/api.md 6.3–6.4)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from piston_vm.core import errors, tokens
from piston_vm.core.config import Settings
from piston_vm.storage.accounts import Account
from piston_vm.storage.stores import Stores
from piston_vm.storage.users import HashMethod, UserStore, name_key, realm_key

JsonObject = dict[str, Any]

DEFAULT_LANGUAGE = "en-us"
_HASH_RE: dict[HashMethod, re.Pattern[str]] = {
    "md5": re.compile(r"[0-9a-f]{32}"),
    "sha": re.compile(r"[0-9a-f]{40}"),
}


async def reseller_id(stores: Stores, account: Account) -> str:
    """`pvt_reseller_id`, else the nearest reseller ancestor, else the tree's root (docs/api.md
    6.3)."""
    explicit = account.doc.get("pvt_reseller_id")
    if isinstance(explicit, str) and explicit:
        return explicit
    for ancestor_id in reversed(account.tree):
        ancestor = await stores.accounts.get(ancestor_id)
        if ancestor is not None and ancestor.doc.get("pvt_reseller") is True:
            return ancestor_id
    return account.tree[0] if account.tree else account.id


def _language(*candidates: Any) -> str:
    for language in candidates:
        if isinstance(language, str) and language:
            return language
    return DEFAULT_LANGUAGE


async def account_reply(
    stores: Stores, account: Account, user: JsonObject | None = None
) -> JsonObject:
    """The login reply (docs/api.md 6.3); with `user`, its `owner_id` and language come first."""
    reply: JsonObject = {"account_id": account.id}
    if user is not None:
        reply["owner_id"] = user["_id"]
    reply.update({
        "account_name": account.name,
        "language": _language(user.get("language") if user else None,
                              account.doc.get("language")),
        "is_reseller": account.doc.get("pvt_reseller") is True,
        "reseller_id": await reseller_id(stores, account),
        "apps": [],
    })
    return reply


async def login_with_api_key(
    stores: Stores, settings: Settings, api_key: Any
) -> tuple[str, JsonObject]:
    if not isinstance(api_key, str) or not api_key:
        raise errors.invalid_credentials()
    account_id = await stores.accounts.find_by_api_key(api_key)
    account = await stores.accounts.get(account_id) if account_id else None
    if account is None or not account.usable or account.doc.get("pvt_api_key") != api_key:
        raise errors.invalid_credentials()
    token = tokens.issue(settings.token_secret, account.id, "cb_api_auth", settings.token_expiry_s)
    return token, await account_reply(stores, account)


@dataclass(frozen=True, slots=True)
class UserLogin:
    """A `user_auth` request: the credentials hash and how to find the account (docs/api.md 6.3)."""

    credentials: str
    method: HashMethod | None  # None: a method the platform does not know, which cannot match
    realm: str | None
    name: str | None

    @property
    def well_formed(self) -> bool:
        if self.method is None:
            return False
        return _HASH_RE[self.method].fullmatch(self.credentials) is not None

    def throttle_account(self) -> tuple[str, ...]:
        """The tenant a failure counts against, as the request names it (realm or name)."""
        return (
            "user_auth",
            realm_key(self.realm) if self.realm else "",
            name_key(self.name) if self.name else "",
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_user_login(data: Any) -> UserLogin:
    """Read the request; only missing credentials are a 400, anything else fails as a 401."""
    fields = data if isinstance(data, dict) else {}
    credentials = fields.get("credentials")
    if credentials is None:
        raise errors.validation_error("credentials", "required", {
            "message": "Field is required but missing", "value": "credentials"})
    method = fields.get("method")
    method = "md5" if method is None else str(method).lower()
    # phone_number is not supported (docs/decisions.md P-24): it never finds an account, so realm
    # and name decide.
    return UserLogin(
        credentials=credentials.lower() if isinstance(credentials, str) else "",
        method="md5" if method == "md5" else "sha" if method == "sha" else None,
        realm=_text(fields.get("account_realm")) or _text(fields.get("realm")),
        name=_text(fields.get("account_name")),
    )


async def candidate_accounts(users: UserStore, login: UserLogin) -> list[str]:
    """Accounts by realm, else (when the realm finds none) by name; either may find several."""
    if login.realm:
        found = await users.account_ids_by_realm(login.realm)
        if found:
            return found
    if login.name:
        return await users.account_ids_by_name(login.name)
    return []


async def login_with_credentials(
    stores: Stores, settings: Settings, login: UserLogin
) -> tuple[str, JsonObject]:
    """The first usable candidate account with an enabled user of that hash wins; else 401."""
    if not login.well_formed or login.method is None:
        raise errors.invalid_credentials()
    users = stores.users
    for candidate in await candidate_accounts(users, login):
        # The account is checked before its database is touched: a deleted or disabled
        # account (name listings can lag its own doc) is never searched.
        account = await stores.accounts.get(candidate)
        if account is None or not account.usable:
            continue
        match = await users.find_by_credentials(account.id, login.method, login.credentials)
        if match is None:
            continue
        user = await users.get(account.id, match.owner_id)
        if user is None or user.get("pvt_deleted") or not user.get("enabled"):
            continue
        token = tokens.issue(settings.token_secret, account.id, "cb_user_auth",
                             settings.token_expiry_s, owner_id=match.owner_id)
        return token, await account_reply(stores, account, user)
    raise errors.invalid_credentials()
