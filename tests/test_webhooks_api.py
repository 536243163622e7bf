"""The webhooks API through HTTP (docs/webhooks.md, "The webhooks API"), with the stored hook and
attempt documents read back from CouchDB."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest

from piston_vm.core import gregorian
from piston_vm.core.config import DEFAULT_SCHEMAS_DIR
from piston_vm.core.listing import Cursor
from piston_vm.core.webhook_catalog import HOOK_IDS, available_hooks
from piston_vm.storage.accounts import Account
from piston_vm.storage.names import DbName
from piston_vm.storage.stores import Stores
from piston_vm.storage.webhooks import WebhookStore
from tests.conftest import MakeAccount, Tenant
from tests.helpers import HEX32, Api, assert_error, assert_success
from tests.test_message_support import last_month, months_ago, older_than_retention, this_month

JsonObject = dict[str, Any]

NEW_VOICEMAIL = {"name": "New voicemail", "uri": "https://receiver.example.com/hooks",
                 "hook": "notifications", "custom_data": {"type": "voicemail_new"}}
BOX_CHANGES = {"name": "Box changes", "uri": "http://receiver.example.com/objects",
               "hook": "object", "custom_data": {"type": "vmbox", "action": "all"}}
DEFAULTS = {"http_verb": "post", "format": "form-data", "retries": 2, "enabled": True,
            "include_internal_legs": True}
LIST_ROW_KEYS = {"id", "hook", "name", "uri", "enabled"}
ATTEMPT_KEYS = {"hook_id", "result", "reason", "response_code", "client_error", "retries_left",
                "timestamp", "event_id"}


def hooks_path(tenant: Tenant) -> str:
    return f"/v2/accounts/{tenant.id}/webhooks"


def hook_path(tenant: Tenant, hook_id: str) -> str:
    return f"{hooks_path(tenant)}/{hook_id}"


async def create_hook(api: Api, tenant: Tenant, **fields: Any) -> JsonObject:
    resp, body = await api.call("PUT", hooks_path(tenant), tenant.token,
                                {**NEW_VOICEMAIL, **fields})
    data: JsonObject = assert_success(resp, body, 201)
    return data


async def stored_hook(stores: Stores, tenant: Tenant, hook_id: str) -> JsonObject:
    doc = await stores.couch.get_doc(tenant.db, hook_id)
    assert doc is not None
    return doc


def decoded_secret(secret: str) -> bytes:
    assert secret.startswith("whsec_")
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


def read_stale_first(monkeypatch: pytest.MonkeyPatch, stale: JsonObject | None) -> list[str]:
    """The next hook read answers `stale` (a revision another writer has replaced since), later
    ones the stored hook; the ids read are recorded in the list returned."""
    reads: list[str] = []
    real_get = WebhookStore.get

    async def first_read_stale(self: WebhookStore, account: Any, hook_id: str) -> Any:
        reads.append(hook_id)
        return dict(stale or {}) if len(reads) == 1 else await real_get(self, account, hook_id)

    monkeypatch.setattr(WebhookStore, "get", first_read_stale)
    return reads


# -- the available hooks -----------------------------------------------------------------------


async def test_available_hooks_answer_the_platforms_shape_without_a_token(api: Api) -> None:
    resp, body = await api.call("GET", "/v2/webhooks")
    hooks = assert_success(resp, body)
    assert [hook["id"] for hook in hooks] == ["notifications", "object"]
    assert body["page_size"] == 2
    assert "version" not in body  # not an authenticated answer
    for hook in hooks:
        assert set(hook) == {"id", "name", "description", "modifiers"}
    notifications, objects = hooks
    types = notifications["modifiers"]["type"]
    assert types["type"] == "object"
    assert set(types["items"]) == {"all", "voicemail_new", "voicemail_saved",
                                   "voicemail_deleted", "voicemail_full"}
    assert types["items"]["voicemail_new"] == {
        "friendly_name": "New Voicemail Message",
        "description": "This event is triggered any time a voicemail message is left"}
    assert objects["modifiers"]["type"]["type"] == "array"
    assert objects["modifiers"]["type"]["items"] == ["vmbox", "mailbox_message", "all"]
    assert objects["modifiers"]["action"]["items"] == [
        "doc_created", "doc_edited", "doc_deleted", "all"]


async def test_a_bad_token_does_not_hide_the_available_hooks(api: Api) -> None:
    resp, body = await api.call("GET", "/v2/webhooks", token="not-a-token")
    assert [hook["id"] for hook in assert_success(resp, body)] == ["notifications", "object"]


def test_the_schema_enum_of_hook_is_the_catalogue() -> None:
    schema = json.loads((DEFAULT_SCHEMAS_DIR / "webhooks.json").read_text())
    assert schema["properties"]["hook"]["enum"] == list(HOOK_IDS)
    assert set(HOOK_IDS) == {"all"} | {hook["id"] for hook in available_hooks()}


# -- create, read ------------------------------------------------------------------------------


async def test_create_applies_the_defaults_and_stores_the_platforms_document(
    api: Api, account: Tenant, stores: Stores
) -> None:
    resp, body = await api.call("PUT", hooks_path(account), account.token, NEW_VOICEMAIL)
    data = assert_success(resp, body, 201)
    assert HEX32.match(data["id"])
    assert resp.headers["Location"] == hook_path(account, data["id"])
    doc = await stored_hook(stores, account, data["id"])
    assert body["revision"] == doc["_rev"]
    assert resp.headers["ETag"] == f'"{doc["_rev"]}"'
    for key, value in {**NEW_VOICEMAIL, **DEFAULTS}.items():
        assert data[key] == value, key
        assert doc[key] == value, key
    assert doc["pvt_type"] == "webhook"
    assert doc["pvt_vsn"] == "1"
    assert doc["pvt_account_id"] == account.id
    assert doc["pvt_account_db"] == account.account.db.encoded
    assert doc["pvt_created"] == doc["pvt_modified"]
    assert abs(doc["pvt_created"] - gregorian.now()) < 60
    assert doc["pvt_request_id"] == body["request_id"]
    assert doc["pvt_is_authenticated"] is True
    assert doc["pvt_auth_account_id"] == account.id
    assert "pvt_disabled_message" not in doc
    assert not {"id", "signing_secret", "disable_reason"} & set(doc)
    # The secret: Standard Webhooks' form, kept private, answered to the hook's own account.
    assert len(decoded_secret(doc["pvt_signing_secret"])) == 32
    assert data["signing_secret"] == doc["pvt_signing_secret"]
    assert not any(k.startswith("pvt_") or k.startswith("_") for k in data)


async def test_every_hook_gets_its_own_secret(api: Api, account: Tenant) -> None:
    first = await create_hook(api, account)
    second = await create_hook(api, account)
    assert first["signing_secret"] != second["signing_secret"]


async def test_create_keeps_given_values_and_ignores_ids_and_private_keys(
    api: Api, account: Tenant, stores: Stores
) -> None:
    data = await create_hook(
        api, account, http_verb="get", format="json", retries="4", enabled="false",
        include_subaccounts=True, id="chosen", signing_secret="whsec_mine",
        disable_reason="mine", pvt_account_id="f" * 32, ui_metadata={"origin": "ui"})
    assert data["id"] != "chosen"
    doc = await stored_hook(stores, account, data["id"])
    assert (doc["http_verb"], doc["format"], doc["retries"], doc["enabled"]) == (
        "get", "json", 4, False)
    assert doc["include_subaccounts"] is True
    assert doc["ui_metadata"] == {"origin": "ui"}  # unknown keys are kept, as the platform does
    assert doc["pvt_account_id"] == account.id
    assert doc["pvt_signing_secret"] != "whsec_mine"
    assert "disable_reason" not in data
    assert doc["custom_data"] == {"type": "voicemail_new"}


async def test_get_answers_the_hook_with_its_secret_and_revision(
    api: Api, account: Tenant, stores: Stores
) -> None:
    created = await create_hook(api, account)
    resp, body = await api.call("GET", hook_path(account, created["id"]), account.token)
    data = assert_success(resp, body)
    assert data == created
    assert body["revision"] == (await stored_hook(stores, account, created["id"]))["_rev"]


@pytest.mark.parametrize("hook_id", ["0" * 32, "_design%2Fpiston_vm_webhooks", "a.b", "x" * 200])
async def test_unknown_or_malformed_hook_ids_are_404(
    api: Api, account: Tenant, hook_id: str
) -> None:
    await create_hook(api, account)  # the account database exists
    # The hook is looked up first, as on the platform: a bad value for it is never reached.
    for method, data in (("GET", None), ("POST", NEW_VOICEMAIL),
                         ("PATCH", {"rotate_signing_secret": "yes"}), ("DELETE", None)):
        resp, body = await api.call(method, hook_path(account, hook_id), account.token, data)
        assert_error(resp, body, 404, "bad_identifier")


async def test_a_box_id_is_not_a_hook(api: Api, account: Tenant) -> None:
    resp, body = await api.call("PUT", f"/v2/accounts/{account.id}/vmboxes", account.token,
                                {"name": "B", "mailbox": "100"})
    box_id = assert_success(resp, body, 201)["id"]
    resp, body = await api.call("GET", hook_path(account, box_id), account.token)
    assert assert_error(resp, body, 404, "bad_identifier")["cause"] == box_id


# -- the list -----------------------------------------------------------------------------------


async def test_list_answers_summaries_without_secrets_in_id_order_paged(
    api: Api, account: Tenant
) -> None:
    created = [await create_hook(api, account, name=f"Hook {n}") for n in range(3)]
    created.append(await create_hook(api, account, **BOX_CHANGES))
    resp, body = await api.call("GET", hooks_path(account), account.token)
    rows = assert_success(resp, body)
    assert [row["id"] for row in rows] == sorted(hook["id"] for hook in created)
    for row in rows:
        assert set(row) == LIST_ROW_KEYS
        hook = next(h for h in created if h["id"] == row["id"])
        assert {k: hook[k] for k in LIST_ROW_KEYS} == row
    assert body["page_size"] == 4
    assert "next_start_key" not in body
    seen: list[str] = []
    params = {"page_size": "3"}
    while True:
        resp, body = await api.call("GET", hooks_path(account), account.token, params=params)
        seen += [row["id"] for row in assert_success(resp, body)]
        if "next_start_key" not in body:
            break
        params = {"page_size": "3", "start_key": body["next_start_key"]}
    assert seen == [row["id"] for row in rows]


async def test_list_filters_on_stored_fields(api: Api, account: Tenant) -> None:
    await create_hook(api, account)
    objects = await create_hook(api, account, **BOX_CHANGES)
    resp, body = await api.call("GET", hooks_path(account), account.token,
                                params={"filter_custom_data.type": "vmbox"})
    assert [row["id"] for row in assert_success(resp, body)] == [objects["id"]]


async def test_an_account_without_hooks_lists_none(api: Api, account: Tenant) -> None:
    resp, body = await api.call("GET", hooks_path(account), account.token)
    assert assert_success(resp, body) == []


# -- replace, merge, delete ---------------------------------------------------------------------


async def test_post_replaces_the_public_part_and_keeps_the_private_one(
    api: Api, account: Tenant, stores: Stores
) -> None:
    created = await create_hook(api, account, retries=4, include_subaccounts=True)
    before = await stored_hook(stores, account, created["id"])
    # A client sends back what GET gave it, changed: id and secret in it are ignored.
    replacement = {**created, "name": "Renamed", "signing_secret": "whsec_x", "id": "other"}
    del replacement["include_subaccounts"], replacement["retries"]
    resp, body = await api.call("POST", hook_path(account, created["id"]), account.token,
                                replacement)
    data = assert_success(resp, body)
    doc = await stored_hook(stores, account, created["id"])
    assert data["name"] == doc["name"] == "Renamed"
    assert "include_subaccounts" not in doc
    assert doc["retries"] == 2  # a key left out that has a default gets it again
    assert data["signing_secret"] == doc["pvt_signing_secret"] == before["pvt_signing_secret"]
    assert doc["pvt_created"] == before["pvt_created"]
    assert data["id"] == created["id"]
    assert body["revision"] == doc["_rev"] != before["_rev"]


async def test_patch_merges(api: Api, account: Tenant, stores: Stores) -> None:
    created = await create_hook(api, account, **BOX_CHANGES)
    resp, body = await api.call("PATCH", hook_path(account, created["id"]), account.token,
                                {"custom_data": {"action": "doc_deleted"}, "retries": 0})
    data = assert_success(resp, body)
    doc = await stored_hook(stores, account, created["id"])
    assert data["custom_data"] == doc["custom_data"] == {"type": "vmbox", "action": "doc_deleted"}
    assert doc["retries"] == 0
    assert doc["name"] == BOX_CHANGES["name"]
    assert doc["pvt_signing_secret"] == created["signing_secret"]


async def test_patch_with_rotate_signing_secret_replaces_it(
    api: Api, account: Tenant, stores: Stores
) -> None:
    created = await create_hook(api, account)
    path = hook_path(account, created["id"])
    resp, body = await api.call("PATCH", path, account.token, {"rotate_signing_secret": True})
    rotated = assert_success(resp, body)["signing_secret"]
    doc = await stored_hook(stores, account, created["id"])
    assert rotated == doc["pvt_signing_secret"] != created["signing_secret"]
    assert len(decoded_secret(rotated)) == 32
    assert "rotate_signing_secret" not in doc
    resp, body = await api.call("GET", path, account.token)
    assert assert_success(resp, body)["signing_secret"] == rotated
    # false, or a PATCH of other fields, keeps the secret.
    for change in ({"rotate_signing_secret": False}, {"name": "Other"}):
        resp, body = await api.call("PATCH", path, account.token, change)
        assert assert_success(resp, body)["signing_secret"] == rotated


async def test_rotate_signing_secret_must_be_a_boolean(api: Api, account: Tenant) -> None:
    created = await create_hook(api, account)
    for value in ("yes", 1, {"x": 1}):
        resp, body = await api.call("PATCH", hook_path(account, created["id"]), account.token,
                                    {"rotate_signing_secret": value})
        errors = assert_error(resp, body, 400, "validation error")
        assert errors == {"rotate_signing_secret": {"type": {
            "message": "Value did not match type(s): boolean", "target": "boolean",
            "value": value}}}


async def test_delete_is_soft_and_the_hook_is_gone_from_every_answer(
    api: Api, account: Tenant, stores: Stores
) -> None:
    created = await create_hook(api, account)
    kept = await create_hook(api, account, name="Kept")
    path = hook_path(account, created["id"])
    resp, body = await api.call("DELETE", path, account.token)
    data = assert_success(resp, body)
    assert data["_read_only"] == {"deleted": True}
    assert data["id"] == created["id"]
    assert "signing_secret" not in data
    doc = await stored_hook(stores, account, created["id"])
    assert doc["pvt_deleted"] is True
    assert body["revision"] == doc["_rev"]
    resp, body = await api.call("GET", path, account.token)
    assert_error(resp, body, 404, "bad_identifier")
    resp, body = await api.call("DELETE", path, account.token)
    assert_error(resp, body, 404, "bad_identifier")
    resp, body = await api.call("GET", hooks_path(account), account.token)
    assert [row["id"] for row in assert_success(resp, body)] == [kept["id"]]
    assert [hook["_id"] for hook in await stores.webhooks.hooks(account.account)] == [kept["id"]]


# -- validation ---------------------------------------------------------------------------------


async def put_errors(api: Api, tenant: Tenant, data: Any) -> JsonObject:
    resp, body = await api.call("PUT", hooks_path(tenant), tenant.token, data)
    return assert_error(resp, body, 400, "validation error")


async def test_required_fields_are_reported_together(api: Api, account: Tenant) -> None:
    assert await put_errors(api, account, {}) == {
        name: {"required": {"message": "Field is required but missing", "value": name}}
        for name in ("hook", "name", "uri")}


async def test_an_unknown_hook_is_a_400_listing_the_available_ones(
    api: Api, account: Tenant
) -> None:
    errors = await put_errors(api, account, {**NEW_VOICEMAIL, "hook": "channel_create"})
    assert errors == {"hook": {"enum": {"message": "Value not found in enumerated list of values",
                                        "target": ["all", "notifications", "object"],
                                        "value": "channel_create"}}}


@pytest.mark.parametrize("uri", ["ftp://receiver.example.com/", "receiver.example.com/hooks",
                                 "http://", "https://x:port/", "http://[::1", " http://a/",
                                 "javascript:alert(1)", ""])
async def test_a_uri_that_is_not_http_or_https_is_the_platforms_invalid_client_url(
    api: Api, account: Tenant, uri: str
) -> None:
    errors = await put_errors(api, account, {**NEW_VOICEMAIL, "uri": uri})
    assert errors == {"uri": {"error": {"message": "invalid client URL", "value": uri}}}


async def test_schema_rules_are_reported_together(api: Api, account: Tenant) -> None:
    errors = await put_errors(api, account, {
        **NEW_VOICEMAIL, "http_verb": "delete", "format": "xml", "retries": 9, "enabled": "no",
        "uri": "gopher://x", "custom_data": {"type": "voicemail_new", "nested": {"a": 1}}})
    assert set(errors) == {"http_verb", "format", "retries", "enabled", "uri",
                           "custom_data.nested"}
    assert errors["retries"] == {"maximum": {"message": "Value must be at most 4", "target": 4,
                                             "value": 9}}
    assert errors["http_verb"]["enum"]["target"] == ["get", "post", "put"]
    assert errors["custom_data.nested"]["type"]["target"] == "string"


async def test_modifiers_are_checked_as_the_platform_checks_them(
    api: Api, account: Tenant
) -> None:
    cases: list[tuple[JsonObject, JsonObject]] = [
        ({"hook": "notifications", "custom_data": {}},
         {"type": {"required": {"message": "missing required modifier"}}}),
        ({"hook": "notifications", "custom_data": {"type": "voicemail_lost"}},
         {"type": {"enum": {"message": "value not found in enumerated list of values",
                            "cause": "voicemail_lost",
                            "target": ["all", "voicemail_deleted", "voicemail_full",
                                       "voicemail_new", "voicemail_saved"]}}}),
        ({"hook": "object", "custom_data": {"type": "user"}},
         {"type": {"enum": {"message": "value not found in enumerated list of values",
                            "cause": "user", "target": ["vmbox", "mailbox_message", "all"]}},
          "action": {"required": {"message": "missing required modifier"}}}),
    ]
    for fields, expected in cases:
        data = {**NEW_VOICEMAIL, **fields}
        if not fields.get("custom_data"):
            del data["custom_data"]
        assert await put_errors(api, account, data) == expected, fields


async def test_the_all_hook_needs_no_modifier(api: Api, account: Tenant) -> None:
    data = dict(NEW_VOICEMAIL, hook="all")
    del data["custom_data"]
    resp, body = await api.call("PUT", hooks_path(account), account.token, data)
    created = assert_success(resp, body, 201)
    assert created["hook"] == "all"
    assert "custom_data" not in created


async def test_modifiers_wait_for_the_schema(api: Api, account: Tenant) -> None:
    """Like the platform, the modifiers are checked once the schema passes."""
    errors = await put_errors(api, account, {"hook": "object", "name": "n"})
    assert set(errors) == {"uri"}


@pytest.mark.parametrize("data", [[], "text", 7, None, [NEW_VOICEMAIL]])
async def test_data_that_is_not_an_object_is_a_400(api: Api, account: Tenant, data: Any) -> None:
    resp, body = await api.call("PUT", hooks_path(account), account.token,
                                body=json.dumps({"data": data}),
                                headers={"Content-Type": "application/json"})
    assert resp.status == 400, body
    assert_error(resp, body, 400, "validation error")


async def test_post_and_patch_validate_the_result(api: Api, account: Tenant) -> None:
    created = await create_hook(api, account)
    path = hook_path(account, created["id"])
    resp, body = await api.call("POST", path, account.token, {"name": "only a name"})
    assert set(assert_error(resp, body, 400, "validation error")) == {"hook", "uri"}
    resp, body = await api.call("PATCH", path, account.token, {"custom_data": {"type": None}})
    errors = assert_error(resp, body, 400, "validation error")
    assert errors == {"type": {"required": {"message": "missing required modifier"}}}
    resp, body = await api.call("PATCH", path, account.token, {"uri": "file:///etc/passwd"})
    assert set(assert_error(resp, body, 400, "validation error")) == {"uri"}


# -- disable and re-enable ---------------------------------------------------------------------


async def test_an_auto_disabled_hook_shows_its_disable_reason(
    api: Api, account: Tenant, stores: Stores
) -> None:
    created = await create_hook(api, account)
    await stores.webhooks.disable(account.account, created["id"], "too many failed attempts")
    doc = await stored_hook(stores, account, created["id"])
    assert doc["enabled"] is False
    assert doc["pvt_disabled_message"] == "too many failed attempts"
    assert "disable_reason" not in doc
    resp, body = await api.call("GET", hook_path(account, created["id"]), account.token)
    data = assert_success(resp, body)
    assert (data["enabled"], data["disable_reason"]) == (False, "too many failed attempts")
    resp, body = await api.call("GET", hooks_path(account), account.token)
    assert assert_success(resp, body) == [{**{k: created[k] for k in LIST_ROW_KEYS},
                                           "enabled": False,
                                           "disable_reason": "too many failed attempts"}]


async def test_collection_patch_re_enables_the_auto_disabled_hooks_only(
    api: Api, account: Tenant, stores: Stores
) -> None:
    failing = [await create_hook(api, account, name=f"Failing {n}") for n in range(2)]
    switched_off = await create_hook(api, account, enabled=False)
    running = await create_hook(api, account)
    for hook in failing:
        await stores.webhooks.disable(account.account, hook["id"], "too many failed attempts")
    resp, body = await api.call("PATCH", hooks_path(account), account.token, {"re-enable": True})
    assert assert_success(resp, body) == "hooks updated"
    for hook in failing:
        doc = await stored_hook(stores, account, hook["id"])
        assert doc["enabled"] is True
        assert "pvt_disabled_message" not in doc
        resp, body = await api.call("GET", hook_path(account, hook["id"]), account.token)
        assert "disable_reason" not in assert_success(resp, body)
    assert (await stored_hook(stores, account, switched_off["id"]))["enabled"] is False
    assert (await stored_hook(stores, account, running["id"]))["enabled"] is True


async def test_re_enable_is_required_and_must_be_true(api: Api, account: Tenant) -> None:
    resp, body = await api.call("PATCH", hooks_path(account), account.token, {})
    assert assert_error(resp, body, 400, "validation error") == {"re-enable": {"required": {
        "message": "re-enable is required to patch collections"}}}
    for value in (False, "no"):
        resp, body = await api.call("PATCH", hooks_path(account), account.token,
                                    {"re-enable": value})
        assert assert_error(resp, body, 400, "validation error") == {"re-enable": {"enum": {
            "message": "value not found in enumerated list of values", "target": [True]}}}
    # The query string is a request value too (docs/api.md 3.3).
    resp, body = await api.call("PATCH", hooks_path(account), account.token,
                                params={"re-enable": "true"})
    assert assert_success(resp, body) == "hooks updated"


async def test_enabling_a_hook_by_hand_clears_its_disable_reason(
    api: Api, account: Tenant, stores: Stores
) -> None:
    created = await create_hook(api, account)
    await stores.webhooks.disable(account.account, created["id"], "too many failed attempts")
    path = hook_path(account, created["id"])
    resp, body = await api.call("PATCH", path, account.token, {"name": "Still off"})
    assert assert_success(resp, body)["disable_reason"] == "too many failed attempts"
    resp, body = await api.call("PATCH", path, account.token, {"enabled": True})
    assert "disable_reason" not in assert_success(resp, body)
    assert "pvt_disabled_message" not in await stored_hook(stores, account, created["id"])


async def test_disable_retries_after_a_conflict(
    api: Api, account: Tenant, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's disable races an API save of the same hook: it reads again and wins."""
    created = await create_hook(api, account)
    store = stores.webhooks
    stale = await store.get(account.account, created["id"])
    resp, body = await api.call("PATCH", hook_path(account, created["id"]), account.token,
                                {"name": "Saved meanwhile"})
    assert_success(resp, body)
    reads = read_stale_first(monkeypatch, stale)
    await store.disable(account.account, created["id"], "too many failed attempts")
    assert len(reads) == 2
    doc = await stored_hook(stores, account, created["id"])
    assert (doc["enabled"], doc["name"]) == (False, "Saved meanwhile")
    assert doc["pvt_disabled_message"] == "too many failed attempts"


async def test_disable_of_a_deleted_hook_changes_nothing(
    api: Api, account: Tenant, stores: Stores
) -> None:
    created = await create_hook(api, account)
    resp, body = await api.call("DELETE", hook_path(account, created["id"]), account.token)
    assert_success(resp, body)
    before = await stored_hook(stores, account, created["id"])
    await stores.webhooks.disable(account.account, created["id"], "too many failed attempts")
    await stores.webhooks.disable(account.account, "0" * 32, "too many failed attempts")
    assert await stored_hook(stores, account, created["id"]) == before


async def test_hooks_gives_every_live_hook_as_stored(
    api: Api, account: Tenant, stores: Stores
) -> None:
    on = await create_hook(api, account)
    off = await create_hook(api, account, enabled=False)
    gone = await create_hook(api, account)
    await api.call("DELETE", hook_path(account, gone["id"]), account.token)
    hooks = await stores.webhooks.hooks(account.account)
    assert sorted(hook["_id"] for hook in hooks) == sorted([on["id"], off["id"]])
    for hook in hooks:
        assert hook == await stored_hook(stores, account, hook["_id"])


# -- the delivery log ---------------------------------------------------------------------------


def attempt(hook_id: str, created: int, **fields: Any) -> JsonObject:
    return {"hook_id": hook_id, "result": "failure", "reason": "bad response code",
            "response_code": "500", "response_body": "oops", "client_error": "",
            "retries_left": 1, "event_id": secrets.token_hex(16), "attempt": 1,
            "pvt_created": created, "pvt_message_id": "202401-" + "a" * 32,
            "pvt_box_id": "b" * 32, **fields}


def modb_at(tenant: Tenant, timestamp: int) -> DbName:
    return tenant.account.db.modb(*gregorian.utc_month(timestamp))


async def log_attempts(stores: Stores, tenant: Tenant, attempts: list[JsonObject]) -> None:
    for item in attempts:
        await stores.webhooks.add_attempt(tenant.account, modb_at(tenant, item["pvt_created"]),
                                          item)


async def list_log(api: Api, tenant: Tenant, hook_id: str | None = None,
                   **params: str) -> tuple[JsonObject, list[JsonObject]]:
    path = f"{hooks_path(tenant)}/attempts" if hook_id is None else (
        f"{hook_path(tenant, hook_id)}/attempts")
    resp, body = await api.call("GET", path, tenant.token, params=params or None)
    rows: list[JsonObject] = assert_success(resp, body)
    return body, rows


async def test_add_attempt_creates_the_modb_and_stores_the_platforms_attempt(
    account: Tenant, stores: Stores
) -> None:
    created = months_ago(2)
    modb = modb_at(account, created)
    assert not await stores.couch.db_exists(modb.unencoded)
    item = attempt("h" * 32, created, _id="attempt-1")
    await stores.webhooks.add_attempt(account.account, modb, item)
    doc = await stores.couch.get_doc(modb.unencoded, "attempt-1")
    assert doc is not None
    assert doc["pvt_type"] == "webhook_attempt"
    assert doc["pvt_account_id"] == account.id
    assert doc["pvt_account_db"] == modb.encoded
    assert doc["pvt_created"] == created
    assert abs(doc["pvt_modified"] - gregorian.now()) < 60
    for key in ("hook_id", "result", "reason", "response_code", "response_body", "client_error",
                "retries_left", "event_id", "attempt", "pvt_message_id", "pvt_box_id"):
        assert doc[key] == item[key], key
    design = await stores.couch.get_doc(modb.unencoded, "_design/piston_vm_webhooks")
    assert design is not None
    assert set(design["views"]) == {"attempts_by_hook", "attempts_by_time"}
    # The same attempt logged again (after a crash) stays one document.
    await stores.webhooks.add_attempt(account.account, modb, {**item, "result": "success"})
    again = await stores.couch.get_doc(modb.unencoded, "attempt-1")
    assert again is not None
    assert (again["_rev"], again["result"]) == (doc["_rev"], "failure")


async def test_attempts_are_listed_newest_first_across_months(
    api: Api, account: Tenant, stores: Stores
) -> None:
    hook_a, hook_b = "a" * 32, "b" * 32
    items = [attempt(hook_a, this_month(0), result="success", response_code="200",
                     retries_left=2),
             attempt(hook_b, this_month(1)),
             attempt(hook_a, last_month(0), client_error="econnrefused"),
             attempt(hook_b, months_ago(2, 0)),
             attempt(hook_a, older_than_retention())]  # outside the window
    await log_attempts(stores, account, items)
    body, rows = await list_log(api, account)
    listed = items[:4]
    assert [row["event_id"] for row in rows] == [item["event_id"] for item in listed]
    assert body["page_size"] == 4
    for row, item in zip(rows, listed, strict=True):
        assert set(row) >= ATTEMPT_KEYS
        assert row["timestamp"] == item["pvt_created"]
        for key in ATTEMPT_KEYS - {"timestamp"}:
            assert row[key] == item[key], key
        assert not any(k.startswith("pvt_") or k.startswith("_") for k in row)
    assert rows[0]["result"] == "success"
    assert rows[2]["client_error"] == "econnrefused"
    _, oldest_first = await list_log(api, account, ascending="true")
    assert [row["event_id"] for row in oldest_first] == [i["event_id"] for i in reversed(listed)]


async def test_attempts_page_across_months_without_repeats(
    api: Api, account: Tenant, stores: Stores
) -> None:
    times = [this_month(0), this_month(0), this_month(1), last_month(0), last_month(0),
             last_month(1), months_ago(2, 0)]  # equal times: the cursor's doc id tells them apart
    items = [attempt("c" * 32, at) for at in times]
    await log_attempts(stores, account, items)
    _, everything = await list_log(api, account, paginate="false")
    assert len(everything) == len(items)
    seen: list[str] = []
    params = {"page_size": "2"}
    pages = 0
    while True:
        body, rows = await list_log(api, account, **params)
        pages += 1
        assert len(rows) <= 2
        seen += [row["event_id"] for row in rows]
        if "next_start_key" not in body:
            break
        cursor = Cursor.decode(body["next_start_key"])
        assert cursor.month is not None
        params = {"page_size": "2", "start_key": body["next_start_key"]}
    assert seen == [row["event_id"] for row in everything]
    assert pages == 4
    assert [row["timestamp"] for row in everything] == sorted(times, reverse=True)


async def test_a_hooks_log_holds_its_own_attempts_only(
    api: Api, account: Tenant, stores: Stores
) -> None:
    mine, other = "d" * 32, "e" * 32
    items = [attempt(mine, this_month(0)), attempt(other, this_month(1)),
             attempt(mine, last_month(0)), attempt(other, last_month(1))]
    await log_attempts(stores, account, items)
    body, rows = await list_log(api, account, mine)
    assert [row["event_id"] for row in rows] == [items[0]["event_id"], items[2]["event_id"]]
    assert {row["hook_id"] for row in rows} == {mine}
    body, rows = await list_log(api, account, mine, page_size="1")
    assert [row["event_id"] for row in rows] == [items[0]["event_id"]]
    body, rows = await list_log(api, account, mine, page_size="1",
                                start_key=body["next_start_key"])
    assert [row["event_id"] for row in rows] == [items[2]["event_id"]]
    assert "next_start_key" not in body
    # The whole log's cursor does not page a hook's log.
    body, _ = await list_log(api, account, page_size="1")
    resp, body = await api.call("GET", f"{hook_path(account, mine)}/attempts", account.token,
                                params={"start_key": body["next_start_key"]})
    assert set(assert_error(resp, body, 400, "validation error")) == {"start_key"}


async def test_the_window_and_filters_narrow_the_log(
    api: Api, account: Tenant, stores: Stores
) -> None:
    items = [attempt("f" * 32, this_month(0), result="success"),
             attempt("f" * 32, last_month(0)), attempt("f" * 32, months_ago(2, 0))]
    await log_attempts(stores, account, items)
    _, rows = await list_log(api, account, created_from=str(last_month(0) - 10),
                             created_to=str(last_month(0) + 10))
    assert [row["event_id"] for row in rows] == [items[1]["event_id"]]
    _, rows = await list_log(api, account, filter_result="success")
    assert [row["event_id"] for row in rows] == [items[0]["event_id"]]


async def test_an_account_without_attempts_has_an_empty_log(api: Api, account: Tenant) -> None:
    body, rows = await list_log(api, account)
    assert rows == []
    assert body["page_size"] == 0
    _, rows = await list_log(api, account, "0" * 32)
    assert rows == []


async def test_attempts_is_not_a_hook_id(api: Api, account: Tenant) -> None:
    resp, body = await api.call("DELETE", f"{hooks_path(account)}/attempts", account.token)
    assert_error(resp, body, 405)
    assert resp.headers["Allow"] == "GET"


# -- tenants ------------------------------------------------------------------------------------


async def test_tokens_reach_only_their_own_and_their_descendants_hooks(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    parent = await make_account("Hooks parent")
    owner = await make_account("Hooks owner", parent=parent)
    child = await make_account("Hooks child", parent=owner)
    sibling = await make_account("Hooks sibling", parent=parent)
    superduper = await make_account("Hooks admin", superduper=True)
    hook = await create_hook(api, owner)
    await log_attempts(stores, owner, [attempt(hook["id"], this_month(0))])
    sibling_hook = await create_hook(api, sibling)
    paths = [hooks_path(owner), hook_path(owner, hook["id"]), f"{hooks_path(owner)}/attempts",
             f"{hook_path(owner, hook['id'])}/attempts"]
    for intruder in (child, sibling):
        for path in paths:
            resp, body = await api.call("GET", path, intruder.token)
            assert_error(resp, body, 403, "forbidden")
        writes: list[tuple[str, JsonObject]] = [("PUT", NEW_VOICEMAIL),
                                                ("PATCH", {"re-enable": True})]
        for method, write in writes:
            resp, body = await api.call(method, hooks_path(owner), intruder.token, write)
            assert_error(resp, body, 403, "forbidden")
        for method in ("POST", "PATCH", "DELETE"):
            resp, body = await api.call(method, hook_path(owner, hook["id"]), intruder.token,
                                        {"name": "hijacked"})
            assert_error(resp, body, 403, "forbidden")
    # Under its own path, a token never reaches another tenant's hook by its id.
    probes: list[tuple[str, JsonObject | None]] = [
        ("GET", None), ("PATCH", {"name": "hijacked"}), ("DELETE", None)]
    for method, probe in probes:
        resp, body = await api.call(method, hook_path(sibling, hook["id"]), sibling.token, probe)
        assert_error(resp, body, 404, "bad_identifier")
    _, rows = await list_log(api, sibling, hook["id"])
    assert rows == []
    # Ancestors manage the hook, but its secret stays with its own account.
    for manager in (parent, superduper):
        resp, body = await api.call("GET", hook_path(owner, hook["id"]), manager.token)
        data = assert_success(resp, body)
        assert data["id"] == hook["id"]
        assert "signing_secret" not in data
        resp, body = await api.call("PATCH", hook_path(owner, hook["id"]), manager.token,
                                    {"rotate_signing_secret": True})
        assert "signing_secret" not in assert_success(resp, body)
        resp, body = await api.call("GET", f"{hooks_path(owner)}/attempts", manager.token)
        assert len(assert_success(resp, body)) == 1
    doc = await stored_hook(stores, owner, hook["id"])
    assert doc["name"] == NEW_VOICEMAIL["name"]
    assert doc["pvt_signing_secret"] != hook["signing_secret"]  # rotated by the parent
    assert (await stored_hook(stores, sibling, sibling_hook["id"]))["name"] == NEW_VOICEMAIL["name"]
    resp, body = await api.call("GET", hooks_path(owner), owner.token)
    assert [row["id"] for row in assert_success(resp, body)] == [hook["id"]]


async def test_unauthenticated_requests_are_401(api: Api, account: Tenant) -> None:
    for path in (hooks_path(account), f"{hooks_path(account)}/attempts"):
        resp, body = await api.call("GET", path)
        assert_error(resp, body, 401, "invalid_credentials")


async def test_a_patch_that_meets_a_conflict_reads_again(
    api: Api, account: Tenant, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save that conflicts with another writer's is re-read and applied again, so neither
    change is lost (docs/storage.md 10)."""
    created = await create_hook(api, account)
    stale = await stores.webhooks.get(account.account, created["id"])
    doc = await stored_hook(stores, account, created["id"])
    doc["name"] = "Changed by another writer"
    await stores.couch.put_doc(account.db, doc)
    reads = read_stale_first(monkeypatch, stale)
    resp, body = await api.call("PATCH", hook_path(account, created["id"]), account.token,
                                {"retries": 3})
    data = assert_success(resp, body)
    assert len(reads) == 2
    assert (data["name"], data["retries"]) == ("Changed by another writer", 3)


async def test_hooks_of_an_account_whose_database_is_gone_are_none(stores: Stores) -> None:
    """The delivery side may ask for an account removed since its event."""
    gone = Account(secrets.token_hex(16), {})
    assert not await stores.couch.db_exists(gone.db.unencoded)
    assert await stores.webhooks.hooks(gone) == []
    assert await stores.webhooks.get(gone, "0" * 32) is None
