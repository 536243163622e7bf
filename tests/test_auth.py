"""Tokens and account scoping (docs/api.md 6): api_auth, token sources, 401s and 403s."""

from __future__ import annotations

import base64
import json

from piston_vm.core import tokens
from piston_vm.storage.stores import Stores
from tests.conftest import TEST_TOKEN_SECRET, MakeAccount, Tenant
from tests.helpers import Api, assert_error, assert_success


def boxes(account: Tenant) -> str:
    return f"/v2/accounts/{account.id}/vmboxes"


async def test_api_auth_issues_a_jwt(api: Api, account: Tenant) -> None:
    resp, body = await api.call("PUT", "/v2/api_auth", data={"api_key": account.api_key},
                                headers={"X-Auth-Token": ""})
    data = assert_success(resp, body, 201)
    token = body["auth_token"]
    assert token.count(".") == 2
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["account_id"] == account.id
    assert claims["method"] == "cb_api_auth"
    assert claims["exp"] - claims["iat"] == 3600
    assert data["account_id"] == account.id
    assert data["account_name"] == "Test Account"
    assert data["language"] == "en-us"
    assert data["is_reseller"] is False
    assert data["reseller_id"] == account.id
    resp, body = await api.call("GET", boxes(account), token)
    assert_success(resp, body)


async def test_api_auth_with_a_bad_key_is_401(api: Api, account: Tenant) -> None:
    for key in ("0" * 64, ""):
        resp, body = await api.call("PUT", "/v2/api_auth", data={"api_key": key})
        assert assert_error(resp, body, 401, "invalid_credentials") == {
            "message": "invalid credentials"}


async def test_no_token_bad_token_and_expired_token(api: Api, account: Tenant) -> None:
    resp, body = await api.call("GET", boxes(account))
    assert assert_error(resp, body, 401, "invalid_credentials") == {
        "message": "invalid credentials"}
    forged = tokens.issue("another-secret", account.id, "cb_api_auth", 3600)
    for bad in ("garbage", forged, account.token[:-2] + "xx"):
        resp, body = await api.call("GET", boxes(account), bad)
        assert_error(resp, body, 401, "invalid_credentials")
        assert body["auth_token"] == bad
    expired = tokens.issue(TEST_TOKEN_SECRET, account.id, "cb_api_auth", -10)
    resp, body = await api.call("GET", boxes(account), expired)
    assert assert_error(resp, body, 401, "invalid credentials") == {}


async def test_token_of_a_deleted_account_is_401(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    parent = await make_account(name="Parent")
    child = await make_account(name="Child", parent=parent)
    doc = await stores.couch.get_doc(parent.db, parent.id)
    assert doc is not None
    doc["pvt_deleted"] = True
    await stores.couch.put_doc(parent.db, doc)
    resp, body = await api.call("GET", boxes(child), parent.token)
    assert assert_error(resp, body, 401, "invalid credentials") == {}


async def test_token_sources(api: Api, account: Tenant) -> None:
    resp, body = await api.call("GET", boxes(account) + f"?auth_token={account.token}")
    assert_success(resp, body)
    resp, body = await api.call("GET", boxes(account),
                                headers={"Authorization": f"Bearer {account.token}"})
    assert_success(resp, body)
    resp, body = await api.call("GET", boxes(account), headers={"X-Auth-Token": ""},
                                params={"auth_token": account.token})
    assert_success(resp, body)


async def test_account_scoping(api: Api, make_account: MakeAccount) -> None:
    parent = await make_account(name="Parent")
    child = await make_account(name="Child", parent=parent)
    grandchild = await make_account(name="Grandchild", parent=child)
    sibling = await make_account(name="Sibling", parent=parent)
    stranger = await make_account(name="Stranger")
    admin = await make_account(name="Admin", superduper=True)

    async def status(token_of: Tenant, target: Tenant) -> int:
        resp, body = await api.call("GET", boxes(target), token_of.token)
        if resp.status == 403:
            assert assert_error(resp, body, 403, "forbidden") == {"message": "forbidden"}
        return resp.status

    assert await status(parent, child) == 200
    assert await status(parent, grandchild) == 200
    assert await status(child, child) == 200
    assert await status(child, parent) == 403
    assert await status(child, sibling) == 403
    assert await status(stranger, child) == 403
    assert await status(admin, child) == 200
    assert await status(admin, stranger) == 200


async def test_scoping_applies_to_writes(api: Api, make_account: MakeAccount,
                                         stores: Stores) -> None:
    victim = await make_account(name="Victim")
    attacker = await make_account(name="Attacker")
    resp, body = await api.call("PUT", boxes(victim), attacker.token,
                                {"name": "Evil", "mailbox": "1"})
    assert_error(resp, body, 403, "forbidden")
    result = await stores.couch.view(victim.db, "vmboxes", "crossbar_listing")
    assert result["rows"] == []
