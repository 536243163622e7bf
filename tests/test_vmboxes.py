"""Voicemail box endpoints through HTTP, with the stored documents read back from CouchDB."""

from __future__ import annotations

from typing import Any

from piston_vm.storage.stores import Stores
from tests.conftest import MakeAccount, Tenant
from tests.helpers import HEX32, Api, assert_error, assert_success

JsonObject = dict[str, Any]

SEED_BOX = {
    "name": "VMBox 0", "require_pin": True, "is_setup": False, "pin": "0000", "mailbox": "3000",
    "timezone": "America/Los_Angeles", "check_if_owner": True, "delete_after_notify": False,
    "not_configurable": False, "notify_email_addresses": [], "save_after_notify": False,
    "skip_greeting": False, "skip_instructions": False,
    "owner_id": "f1d98a5df729f95cd208ee9430e3b21b", "media": {},
}

DEFAULTS = {
    "after_forward_action": "save", "announcement_only": False, "check_if_owner": True,
    "delete_after_notify": False, "hunt": True, "include_message_on_notify": True,
    "include_transcription_on_notify": True, "is_setup": False,
    "is_voicemail_ff_rw_enabled": True, "media": {}, "media_extension": "mp3", "members": [],
    "not_configurable": False, "notify_email_addresses": [], "numbers": [],
    "oldest_message_first": False, "play_envelope_action": "play_after", "require_pin": False,
    "save_after_notify": False, "seek_duration_ms": 10000, "shared_vmbox": False,
    "skip_envelope": False, "skip_greeting": False, "skip_instructions": False,
    "transcribe": False, "vm_message_forward_type": "only_forward",
}


def boxes_path(account: Tenant) -> str:
    return f"/v2/accounts/{account.id}/vmboxes"


async def create_box(api: Api, account: Tenant, **fields: Any) -> JsonObject:
    resp, body = await api.call("PUT", boxes_path(account), account.token, fields)
    data: JsonObject = assert_success(resp, body, 201)
    return data


async def test_create_box_answers_201_with_location_id_and_defaults(
    api: Api, account: Tenant, stores: Stores
) -> None:
    resp, body = await api.call("PUT", boxes_path(account), account.token,
                                {"name": "N", "mailbox": "1001"})
    data = assert_success(resp, body, 201)
    assert HEX32.match(data["id"])
    assert resp.headers["Location"] == f"{boxes_path(account)}/{data['id']}"
    stored = await stores.couch.get_doc(account.db, data["id"])
    assert stored is not None
    assert body["revision"] == stored["_rev"]
    assert resp.headers["ETag"] == f'"{stored["_rev"]}"'
    for key, value in DEFAULTS.items():
        assert data[key] == value, key
        assert stored[key] == value, key
    assert not any(k.startswith("pvt_") or k.startswith("_") for k in data)
    assert body["version"] == "4.3.142"
    assert body["auth_token"] == account.token


async def test_stored_box_has_the_private_fields_of_the_storage_model(
    api: Api, account: Tenant, stores: Stores
) -> None:
    data = await create_box(api, account, **SEED_BOX)
    stored = await stores.couch.get_doc(account.db, data["id"])
    assert stored is not None
    assert stored["pvt_type"] == "vmbox"
    assert stored["pvt_vsn"] == "1"
    assert stored["pvt_account_id"] == account.id
    assert stored["pvt_account_db"] == account.account.db.encoded
    assert "%2F" in stored["pvt_account_db"]
    assert stored["pvt_alphanum_name"] == "vmbox0"
    assert stored["pvt_is_authenticated"] is True
    assert stored["pvt_auth_account_id"] == account.id
    assert "pvt_auth_user_id" not in stored  # API-key token: no user
    assert isinstance(stored["pvt_created"], int)
    assert stored["pvt_created"] > 63_000_000_000
    assert stored["pvt_modified"] >= stored["pvt_created"]
    assert "id" not in stored
    assert stored["pin"] == "0000"


async def test_seed_create_example_round_trips(api: Api, account: Tenant) -> None:
    data = await create_box(api, account, **SEED_BOX)
    for key, value in SEED_BOX.items():
        assert data[key] == value
    resp, body = await api.call("GET", f"{boxes_path(account)}/{data['id']}", account.token)
    fetched = assert_success(resp, body)
    assert fetched == data


async def test_client_chosen_id_is_used_and_a_duplicate_is_409(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box_id = "3a63acc3694ba189947235ae4727941b"
    data = await create_box(api, account, id=box_id, name="A", mailbox="1")
    assert data["id"] == box_id
    stored = await stores.couch.get_doc(account.db, box_id)
    assert stored is not None
    assert "id" not in stored
    resp, body = await api.call("PUT", boxes_path(account), account.token,
                                {"id": box_id, "name": "B", "mailbox": "2"})
    assert assert_error(resp, body, 409, "datastore_conflict") == {
        "message": "conflicting documents"}


async def test_missing_required_fields_are_reported_together(
    api: Api, account: Tenant
) -> None:
    resp, body = await api.call("PUT", boxes_path(account), account.token, {})
    data = assert_error(resp, body, 400, "validation error")
    assert data["mailbox"]["required"] == {
        "message": "Field is required but missing", "value": "mailbox"}
    assert data["name"]["required"]["value"] == "name"


async def test_type_and_length_errors(api: Api, account: Tenant) -> None:
    resp, body = await api.call("PUT", boxes_path(account), account.token,
                                {"name": "N", "mailbox": 3000, "pin": "12"})
    data = assert_error(resp, body, 400)
    assert data["mailbox"]["type"]["message"] == "Value did not match type(s): string"
    assert data["mailbox"]["type"]["value"] == 3000
    assert data["pin"]["minLength"] == {
        "message": "String must be at least 4 characters", "target": 4, "cause": "12",
        "value": "12"}


async def test_pin_number_is_a_type_error_and_long_pin_is_max_length(
    api: Api, account: Tenant
) -> None:
    resp, body = await api.call("PUT", boxes_path(account), account.token,
                                {"name": "N", "mailbox": "1", "pin": 1234})
    assert "type" in assert_error(resp, body, 400)["pin"]
    resp, body = await api.call("PUT", boxes_path(account), account.token,
                                {"name": "N", "mailbox": "1", "pin": "1234567"})
    assert assert_error(resp, body, 400)["pin"]["maxLength"]["target"] == 6


async def test_enum_and_nested_errors_use_dotted_paths(api: Api, account: Tenant) -> None:
    resp, body = await api.call("PUT", boxes_path(account), account.token, {
        "name": "N", "mailbox": "1", "media_extension": "ogg",
        "notify": {"callback": {"attempts": "many", "schedule": [1, "x"]}},
        "notify_email_addresses": ["not-an-email"], "media": {"unavailable": "short"},
        "seek_duration_ms": -1, "operator_number": 1.5,
    })
    data = assert_error(resp, body, 400)
    assert data["media_extension"]["enum"]["target"] == ["mp3", "mp4", "wav"]
    assert "type" in data["notify.callback.attempts"]
    assert "type" in data["notify.callback.schedule.1"]
    assert data["notify_email_addresses.0"]["wrong_format"]["format"] == "email"
    assert data["media.unavailable"]["minLength"]["target"] == 32
    assert data["seek_duration_ms"]["minimum"]["message"] == "Value must be at least 0"
    assert data["operator_number"]["not_one_schema_valid"]["message"] == "failed to validate"


async def test_string_numbers_and_booleans_are_coerced(
    api: Api, account: Tenant, stores: Stores
) -> None:
    data = await create_box(api, account, name="N", mailbox="1", seek_duration_ms="5000",
                            require_pin="true")
    stored = await stores.couch.get_doc(account.db, data["id"])
    assert stored is not None
    assert stored["seek_duration_ms"] == 5000
    assert stored["require_pin"] is True


async def test_custom_keys_are_stored_and_returned(
    api: Api, account: Tenant, stores: Stores
) -> None:
    ui = {"version": "4.3", "ui": "web-ui", "origin": "voip"}
    data = await create_box(api, account, type="mainVMBox", mailbox="0", name="Main VMBox",
                            delete_after_notify=True, ui_metadata=ui)
    assert data["type"] == "mainVMBox"
    assert data["ui_metadata"] == ui
    stored = await stores.couch.get_doc(account.db, data["id"])
    assert stored is not None
    assert stored["type"] == "mainVMBox"


async def test_private_keys_from_clients_are_ignored(
    api: Api, account: Tenant, stores: Stores
) -> None:
    data = await create_box(api, account, name="N", mailbox="1", pvt_type="user",
                            _attachments={}, pvt_deleted=True, messages=[{"a": 1}])
    stored = await stores.couch.get_doc(account.db, data["id"])
    assert stored is not None
    assert stored["pvt_type"] == "vmbox"
    assert "pvt_deleted" not in stored
    assert "messages" not in stored
    assert "_attachments" not in stored


async def test_mailbox_numbers_are_unique_as_integers(api: Api, account: Tenant) -> None:
    await create_box(api, account, name="A", mailbox="100")
    for clash in ("100", "0100", "+100"):
        resp, body = await api.call("PUT", boxes_path(account), account.token,
                                    {"name": "B", "mailbox": clash})
        assert assert_error(resp, body, 400)["mailbox"] == {"unique": {
            "message": "Invalid mailbox number or already exists"}}
    resp, body = await api.call("PUT", boxes_path(account), account.token,
                                {"name": "B", "mailbox": "abc"})
    assert "unique" in assert_error(resp, body, 400)["mailbox"]
    await create_box(api, account, name="C", mailbox="101")


async def test_uniqueness_and_schema_errors_come_in_one_answer(
    api: Api, account: Tenant
) -> None:
    await create_box(api, account, name="A", mailbox="200")
    resp, body = await api.call("PUT", boxes_path(account), account.token,
                                {"name": "B", "mailbox": "200", "pin": "12"})
    data = assert_error(resp, body, 400)
    assert "unique" in data["mailbox"]
    assert "minLength" in data["pin"]


async def test_soft_deleted_boxes_release_their_mailbox(api: Api, account: Tenant) -> None:
    box = await create_box(api, account, name="A", mailbox="300")
    resp, body = await api.call("DELETE", f"{boxes_path(account)}/{box['id']}", account.token)
    assert_success(resp, body)
    await create_box(api, account, name="B", mailbox="300")


async def test_notify_addresses_send_the_warning_header(api: Api, account: Tenant) -> None:
    resp, body = await api.call("PUT", boxes_path(account), account.token, {
        "name": "N", "mailbox": "1", "notify_email_addresses": ["a@example.com"]})
    assert_success(resp, body, 201)
    assert resp.headers["Warning"].startswith("214 ")
    resp, body = await api.call("PUT", boxes_path(account), account.token,
                                {"name": "N2", "mailbox": "2"})
    assert_success(resp, body, 201)
    assert "Warning" not in resp.headers


async def test_get_unknown_box_is_404_with_cause(api: Api, account: Tenant) -> None:
    missing = "0" * 32
    resp, body = await api.call("GET", f"{boxes_path(account)}/{missing}", account.token)
    assert assert_error(resp, body, 404, "bad_identifier") == {
        "cause": missing, "message": "bad identifier"}


async def test_get_hides_private_fields_and_legacy_messages(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, name="N", mailbox="1")
    stored = await stores.couch.get_doc(account.db, box["id"])
    assert stored is not None
    stored["messages"] = [{"media_id": "abc", "timestamp": 63630058722}]
    await stores.couch.put_doc(account.db, stored)
    resp, body = await api.call("GET", f"{boxes_path(account)}/{box['id']}", account.token)
    data = assert_success(resp, body)
    assert "messages" not in data
    assert not any(k.startswith("pvt_") for k in data)
    assert body["revision"] == stored["_rev"]
    assert resp.headers["ETag"] == f'"{stored["_rev"]}"'


async def test_post_replaces_the_public_part(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, name="N", mailbox="1", owner_id="a" * 32,
                           require_pin=True, custom="x")
    before = await stores.couch.get_doc(account.db, box["id"])
    assert before is not None
    resp, body = await api.call("POST", f"{boxes_path(account)}/{box['id']}", account.token,
                                {"name": "Renamed", "mailbox": "1"})
    data = assert_success(resp, body)
    assert data["name"] == "Renamed"
    assert "owner_id" not in data
    assert "custom" not in data
    assert data["require_pin"] is False  # an omitted default key is reset
    stored = await stores.couch.get_doc(account.db, box["id"])
    assert stored is not None
    assert "custom" not in stored
    assert stored["pvt_created"] == before["pvt_created"]
    assert stored["pvt_alphanum_name"] == "renamed"
    assert body["revision"] == stored["_rev"]


async def test_post_with_the_whole_get_object_succeeds(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, **SEED_BOX)
    resp, body = await api.call("POST", f"{boxes_path(account)}/{box['id']}", account.token,
                                box)
    data = assert_success(resp, body)
    assert data == box | {"id": box["id"]}
    stored = await stores.couch.get_doc(account.db, box["id"])
    assert stored is not None
    assert "id" not in stored


async def test_post_keeps_legacy_messages_and_says_so(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, name="N", mailbox="1")
    stored = await stores.couch.get_doc(account.db, box["id"])
    assert stored is not None
    legacy = [{"media_id": "m1", "timestamp": 63630058722, "folder": "new"}]
    stored["messages"] = legacy
    await stores.couch.put_doc(account.db, stored)
    resp, body = await api.call("POST", f"{boxes_path(account)}/{box['id']}", account.token,
                                {"name": "N", "mailbox": "1", "messages": []})
    assert_success(resp, body)
    assert body["message"] == "Please migrate your voicemail box messages to MODB"
    after = await stores.couch.get_doc(account.db, box["id"])
    assert after is not None
    assert after["messages"] == legacy


async def test_patch_merges_deletes_with_null_and_replaces_arrays(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account, name="N", mailbox="1", pin="1234", owner_id="b" * 32,
                           numbers=["1", "2"], notify={"callback": {"number": "5", "attempts": 2}})
    path = f"{boxes_path(account)}/{box['id']}"
    resp, body = await api.call("PATCH", path, account.token, {"pin": "4321"})
    data = assert_success(resp, body)
    assert data == box | {"pin": "4321"}
    resp, body = await api.call("PATCH", path, account.token, {
        "owner_id": None, "numbers": ["3"], "notify": {"callback": {"attempts": 3}}})
    data = assert_success(resp, body)
    assert "owner_id" not in data
    assert data["numbers"] == ["3"]
    assert data["notify"] == {"callback": {"number": "5", "attempts": 3}}


async def test_patch_validates_the_merged_result(api: Api, account: Tenant) -> None:
    box = await create_box(api, account, name="N", mailbox="1")
    resp, body = await api.call("PATCH", f"{boxes_path(account)}/{box['id']}", account.token,
                                {"name": None, "pin": "1"})
    data = assert_error(resp, body, 400)
    assert "required" in data["name"]
    assert "minLength" in data["pin"]


async def test_seed_patch_example_adds_a_custom_key(api: Api, account: Tenant) -> None:
    box = await create_box(api, account, **SEED_BOX)
    resp, body = await api.call("PATCH", f"{boxes_path(account)}/{box['id']}", account.token,
                                {"some_key": "some_value"})
    assert assert_success(resp, body)["some_key"] == "some_value"


async def test_delete_is_a_soft_delete(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account, name="N", mailbox="1")
    path = f"{boxes_path(account)}/{box['id']}"
    resp, body = await api.call(
        "DELETE", path, account.token,
        {"ui_metadata": {"version": "4.3", "ui": "web-ui", "origin": "voicemails"}})
    data = assert_success(resp, body)
    assert data["_read_only"] == {"deleted": True}
    assert data["id"] == box["id"]
    stored = await stores.couch.get_doc(account.db, box["id"])
    assert stored is not None
    assert stored["pvt_deleted"] is True
    assert body["revision"] == stored["_rev"]
    resp, body = await api.call("GET", path, account.token)
    assert_error(resp, body, 404, "bad_identifier")
    resp, body = await api.call("GET", boxes_path(account), account.token)
    assert assert_success(resp, body) == []


async def test_changes_to_unknown_boxes_are_404(api: Api, account: Tenant) -> None:
    path = f"{boxes_path(account)}/{'9' * 32}"
    for method in ("POST", "PATCH", "DELETE"):
        resp, body = await api.call(method, path, account.token, {"name": "N", "mailbox": "1"})
        assert assert_error(resp, body, 404, "bad_identifier")["cause"] == "9" * 32


async def test_box_ids_of_the_wrong_shape_never_reach_couchdb(
    api: Api, account: Tenant
) -> None:
    for bad in ("_all_docs", "_design%2Fvmboxes", "..", "%00", "x" * 300):
        resp, body = await api.call("GET", f"{boxes_path(account)}/{bad}", account.token)
        assert resp.status == 404, bad
        assert body["status"] == "error"


# -- listing --------------------------------------------------------------------------------


async def test_empty_account_lists_nothing(api: Api, account: Tenant) -> None:
    resp, body = await api.call("GET", boxes_path(account), account.token)
    assert assert_success(resp, body) == []
    assert body["page_size"] == 0
    assert "next_start_key" not in body
    assert "start_key" not in body


async def test_list_rows_have_the_view_shape(api: Api, account: Tenant) -> None:
    owned = await create_box(api, account, name="A", mailbox="1", owner_id="c" * 32,
                             flags=["x"])
    plain = await create_box(api, account, name="B", mailbox="2")
    resp, body = await api.call("GET", boxes_path(account), account.token)
    rows = assert_success(resp, body)
    assert rows == [
        {"id": owned["id"], "name": "A", "mailbox": "1", "owner_id": "c" * 32,
         "messages": 0, "flags": ["x"]},
        {"id": plain["id"], "name": "B", "mailbox": "2", "messages": 0, "flags": []},
    ]
    assert body["page_size"] == 2
    assert resp.headers["ETag"] == f'"{body["revision"]}"'


async def test_order_is_by_name_and_descending_flips_it(api: Api, account: Tenant) -> None:
    for number, name in enumerate(("Charlie", "alpha", "Bravo"), start=1):
        await create_box(api, account, name=name, mailbox=str(number))
    resp, body = await api.call("GET", boxes_path(account), account.token)
    ascending = [row["name"] for row in assert_success(resp, body)]
    resp, body = await api.call("GET", boxes_path(account) + "?descending=true", account.token)
    descending = [row["name"] for row in assert_success(resp, body)]
    assert descending == list(reversed(ascending))
    assert set(ascending) == {"Charlie", "alpha", "Bravo"}
    resp, body = await api.call("GET", boxes_path(account) + "?ascending=false", account.token)
    assert [row["name"] for row in assert_success(resp, body)] == descending


async def test_pages_neither_repeat_nor_skip_equal_names(api: Api, account: Tenant) -> None:
    ids = {(await create_box(api, account, name="Same", mailbox=str(n)))["id"] for n in range(5)}
    seen: list[str] = []
    start_key = None
    pages = 0
    while pages < 10:  # a cursor that does not advance must fail the test, not hang it
        params = {"page_size": "2"} | ({"start_key": start_key} if start_key else {})
        resp, body = await api.call("GET", boxes_path(account), account.token, params=params)
        rows = assert_success(resp, body)
        pages += 1
        assert body["page_size"] == len(rows)
        if start_key:
            assert body["start_key"] == start_key
        seen += [row["id"] for row in rows]
        start_key = body.get("next_start_key")
        if start_key is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(ids)
    assert len(seen) == 5


async def test_page_size_two_over_three_boxes(api: Api, account: Tenant) -> None:
    for n in range(3):
        await create_box(api, account, name=f"Box {n}", mailbox=str(n))
    resp, body = await api.call("GET", boxes_path(account) + "?page_size=2", account.token)
    first = assert_success(resp, body)
    assert [r["name"] for r in first] == ["Box 0", "Box 1"]
    assert body["page_size"] == 2
    assert isinstance(body["next_start_key"], str)
    resp, body = await api.call("GET", boxes_path(account), account.token,
                                params={"page_size": "2", "start_key": body["next_start_key"]})
    second = assert_success(resp, body)
    assert [r["name"] for r in second] == ["Box 2"]
    assert "next_start_key" not in body


async def test_paginate_false_returns_everything_without_page_keys(
    api: Api, account: Tenant
) -> None:
    for n in range(3):
        await create_box(api, account, name=f"Box {n}", mailbox=str(n))
    resp, body = await api.call("GET", boxes_path(account) + "?paginate=false&page_size=1",
                                account.token)
    assert len(assert_success(resp, body)) == 3
    assert not {"page_size", "start_key", "next_start_key"} & set(body)


async def test_bad_page_sizes_are_faulty_requests(api: Api, account: Tenant) -> None:
    resp, body = await api.call("GET", boxes_path(account) + "?page_size=abc", account.token)
    assert assert_error(resp, body, 404, "faulty_request") == {"message": "invalid page size"}
    resp, body = await api.call("GET", boxes_path(account) + "?page_size=0", account.token)
    assert assert_error(resp, body, 404, "faulty_request") == {
        "message": "page size must be at least 1"}


async def test_filters_run_against_stored_documents(api: Api, account: Tenant) -> None:
    main = await create_box(api, account, name="Main", mailbox="1", type="mainVMBox")
    owned = await create_box(api, account, name="Owned", mailbox="2", owner_id="d" * 32)
    await create_box(api, account, name="Other", mailbox="3")

    async def ids(query: str) -> list[str]:
        resp, body = await api.call("GET", boxes_path(account) + query, account.token)
        return [row["id"] for row in assert_success(resp, body)]

    assert await ids("?filter_type=mainVMBox") == [main["id"]]
    assert await ids(f"?filter_owner_id={'d' * 32}") == [owned["id"]]
    assert await ids("?filter_name=Owned") == [owned["id"]]
    assert await ids("?filter_name=Nobody") == []
    assert len(await ids("?filter_not_type=mainVMBox")) == 2
    assert await ids("?has_key=owner_id") == [owned["id"]]
    assert len(await ids("?key_missing=owner_id")) == 2
    assert await ids("?filter_mailbox=[\"1\",\"2\"]") == [main["id"], owned["id"]]


async def test_filtered_pages_are_full_and_continue(api: Api, account: Tenant) -> None:
    for n in range(7):
        await create_box(api, account, name=f"Box {n}", mailbox=str(n),
                         type="keep" if n % 2 == 0 else "skip")
    resp, body = await api.call("GET", boxes_path(account), account.token,
                                params={"filter_type": "keep", "page_size": "3"})
    first = assert_success(resp, body)
    assert [r["name"] for r in first] == ["Box 0", "Box 2", "Box 4"]
    resp, body = await api.call("GET", boxes_path(account), account.token, params={
        "filter_type": "keep", "page_size": "3", "start_key": body["next_start_key"]})
    assert [r["name"] for r in assert_success(resp, body)] == ["Box 6"]
    assert "next_start_key" not in body


async def test_listing_is_scoped_to_the_account(
    api: Api, account: Tenant, make_account: MakeAccount
) -> None:
    other = await make_account(name="Other")
    await create_box(api, other, name="Theirs", mailbox="1")
    resp, body = await api.call("GET", boxes_path(account), account.token)
    assert assert_success(resp, body) == []


