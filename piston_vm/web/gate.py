"""The gate in front of every account path: account check, token, scope (docs/api.md 2, 6)."""

from __future__ import annotations

from aiohttp import web

from piston_vm.core import errors, tokens
from piston_vm.storage.accounts import Account
from piston_vm.storage.names import is_account_id
from piston_vm.web.keys import CONTEXT, SETTINGS, STORES


def token_of(request: web.Request) -> str | None:
    """X-Auth-Token, else the request value auth_token, else a Bearer token (docs/api.md 6.1)."""
    ctx = request[CONTEXT]
    header = request.headers.get("X-Auth-Token", "").strip()
    if header:
        return header
    value = ctx.value("auth_token")
    if isinstance(value, str) and value.strip():
        return value.strip()
    for raw in (request.headers.get("Authorization"), ctx.value("authorization")):
        if isinstance(raw, str) and raw[:7].lower() == "bearer " and raw[7:].strip():
            return raw[7:].strip()
    return None


async def load_target_account(request: web.Request) -> Account:
    """The account named in the path; malformed, unknown or deleted accounts are 404s."""
    ctx = request[CONTEXT]
    account_id = request.match_info.get("account_id", "")
    if not is_account_id(account_id):
        raise errors.invalid_account_id(account_id)
    account = await request.app[STORES].accounts.get(account_id)
    if account is None or account.doc.get("pvt_deleted"):
        raise errors.bad_identifier(account_id)
    ctx.account = account
    return account


async def authenticate(request: web.Request) -> None:
    ctx = request[CONTEXT]
    settings = request.app[SETTINGS]
    token = token_of(request)
    ctx.token = token
    if token is None:
        raise errors.invalid_credentials()
    try:
        claims = tokens.verify(token, settings.token_secrets)
    except tokens.TokenInvalid:
        raise errors.invalid_credentials() from None
    except tokens.TokenExpired:
        raise errors.expired_credentials() from None
    if not is_account_id(claims.account_id):
        raise errors.invalid_credentials()
    if ctx.account is not None and ctx.account.id == claims.account_id:
        auth_account: Account | None = ctx.account
    else:
        auth_account = await request.app[STORES].accounts.get(claims.account_id)
    if auth_account is None or auth_account.doc.get("pvt_deleted"):
        raise errors.expired_credentials()
    ctx.claims = claims
    ctx.auth_account = auth_account


def authorize(request: web.Request) -> None:
    """Own account, a descendant (the token's account is in its pvt_tree), or superduper."""
    ctx = request[CONTEXT]
    target, auth = ctx.account, ctx.auth_account
    if target is None or auth is None:
        raise errors.forbidden()
    if target.id == auth.id or auth.id in target.tree or auth.is_superduper_admin:
        return
    raise errors.forbidden()
