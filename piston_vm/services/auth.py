"""Logins that issue tokens (api.md 6.3–6.4)."""

from __future__ import annotations

from typing import Any

from piston_vm import errors, tokens
from piston_vm.config import Settings
from piston_vm.storage.accounts import Account
from piston_vm.storage.stores import Stores

JsonObject = dict[str, Any]


async def reseller_id(stores: Stores, account: Account) -> str:
    """`pvt_reseller_id`, else the nearest reseller ancestor, else the tree's root (api.md 6.3)."""
    explicit = account.doc.get("pvt_reseller_id")
    if isinstance(explicit, str) and explicit:
        return explicit
    for ancestor_id in reversed(account.tree):
        ancestor = await stores.accounts.get(ancestor_id)
        if ancestor is not None and ancestor.doc.get("pvt_reseller") is True:
            return ancestor_id
    return account.tree[0] if account.tree else account.id


async def account_reply(stores: Stores, account: Account) -> JsonObject:
    language = account.doc.get("language")
    return {
        "account_id": account.id,
        "account_name": account.name,
        "language": language if isinstance(language, str) and language else "en-us",
        "is_reseller": account.doc.get("pvt_reseller") is True,
        "reseller_id": await reseller_id(stores, account),
        "apps": [],
    }


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
