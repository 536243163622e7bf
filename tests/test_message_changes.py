"""Bulk changes and bulk deletes of a box's messages (docs/api.md 9.10, 9.11, 10)."""

from __future__ import annotations

import json
from typing import Any

from piston_vm.storage.stores import Stores
from tests.conftest import Tenant
from tests.helpers import Api, assert_error, assert_success
from tests.test_message_support import (
    MESSAGE_ID,
    create_box,
    create_message,
    create_message_with_audio,
    id_prefix,
    insert_message,
    last_month,
    list_messages,
    listed_ids,
    message_path,
    messages_path,
    multipart,
    must_stored,
    now,
    older_than_retention,
    stored,
    stored_attachments,
    this_month,
)

JsonObject = dict[str, Any]

NO_IDS = {"messages": {"required": {"message": "No array of message ids are specified"}}}
FOLDER_ENUM = {"folder": {"enum": {
    "message": "Value not found in enumerated list of values",
    "target": ["new", "saved", "deleted"], "value": "bogus"}}}


async def bulk(
    api: Api, tenant: Tenant, box_id: str, method: str, data: Any = None, **params: str
) -> tuple[Any, Any]:
    return await api.call(method, messages_path(tenant, box_id), tenant.token, data,
                          params=params or None)


async def bulk_ok(
    api: Api, tenant: Tenant, box_id: str, method: str, data: Any = None, **params: str
) -> JsonObject:
    resp, body = await bulk(api, tenant, box_id, method, data, **params)
    result: JsonObject = assert_success(resp, body)
    assert "revision" not in body
    return result


async def folders(api: Api, tenant: Tenant, box_id: str) -> dict[str, str]:
    _, rows = await list_messages(api, tenant, box_id, paginate="false")
    return {row["media_id"]: row["folder"] for row in rows}


# -- POST: validation ------------------------------------------------------------------------


async def test_post_without_message_ids_is_400(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    data: JsonObject
    for data in ({}, {"messages": []}, {"messages": "not-a-list"}, {"folder": "saved"}):
        resp, body = await bulk(api, account, box, "POST", data)
        assert assert_error(resp, body, 400, "validation error") == NO_IDS, data


async def test_post_checks_ids_before_the_box(api: Api, account: Tenant) -> None:
    missing = "0" * 32
    resp, body = await bulk(api, account, missing, "POST", {"messages": []})
    assert assert_error(resp, body, 400, "validation error") == NO_IDS
    resp, body = await bulk(api, account, missing, "POST",
                            {"messages": [id_prefix(now()) + "a" * 32]})
    assert assert_error(resp, body, 404, "bad_identifier") == {
        "cause": missing, "message": "bad identifier"}


async def test_post_unknown_folder_is_400(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    m = await create_message(api, account, box)
    resp, body = await bulk(api, account, box, "POST",
                            {"messages": [m["media_id"]], "folder": "bogus"})
    assert assert_error(resp, body, 400, "validation error") == FOLDER_ENUM
    assert await folders(api, account, box) == {m["media_id"]: "new"}


async def test_post_bad_source_ids(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    m = await create_message(api, account, box)
    for bad in ("", [], ["", box]):
        resp, body = await bulk(api, account, box, "POST",
                                {"messages": [m["media_id"]], "source_id": bad})
        assert "required" in assert_error(resp, body, 400, "validation error")["source_id"], bad
    resp, body = await bulk(api, account, box, "POST",
                            {"messages": [m["media_id"]], "source_id": {"id": box}})
    assert "type" in assert_error(resp, body, 400, "validation error")["source_id"]
    missing = "e" * 32
    for source_id in (missing, [box, missing]):
        resp, body = await bulk(api, account, box, "POST",
                                {"messages": [m["media_id"]], "source_id": source_id})
        assert assert_error(resp, body, 404, "bad_identifier") == {
            "cause": missing, "message": "bad identifier"}
    assert await listed_ids(api, account, box) == [m["media_id"]]


# -- POST: folder changes --------------------------------------------------------------------


async def test_post_folder_saved_in_data(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account)
    m1 = await create_message(api, account, box, timestamp=this_month(0))
    m2 = await create_message(api, account, box, timestamp=last_month())
    untouched = await create_message(api, account, box, timestamp=this_month(1))
    ids = [m2["media_id"], m1["media_id"]]
    result = await bulk_ok(api, account, box, "POST", {"messages": ids, "folder": "saved"})
    assert result == {"succeeded": ids}
    assert await folders(api, account, box) == {
        m1["media_id"]: "saved", m2["media_id"]: "saved", untouched["media_id"]: "new"}
    doc = await must_stored(stores, account, m1["media_id"])
    assert doc["pvt_auth_account_id"] == account.id
    assert "pvt_deleted" not in doc


async def test_post_folder_from_the_query_string(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    m = await create_message(api, account, box)
    result = await bulk_ok(api, account, box, "POST", {"messages": [m["media_id"]]},
                           folder="saved")
    assert result == {"succeeded": [m["media_id"]]}
    assert await folders(api, account, box) == {m["media_id"]: "saved"}


async def test_post_without_folder_means_saved(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    m = await create_message(api, account, box)
    result = await bulk_ok(api, account, box, "POST", {"messages": [m["media_id"]]})
    assert result == {"succeeded": [m["media_id"]]}
    assert await folders(api, account, box) == {m["media_id"]: "saved"}


async def test_post_folder_deleted_keeps_them_listed(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    m = await create_message(api, account, box, folder="saved")
    result = await bulk_ok(api, account, box, "POST",
                           {"messages": [m["media_id"]], "folder": "deleted"})
    assert result == {"succeeded": [m["media_id"]]}
    assert await folders(api, account, box) == {m["media_id"]: "deleted"}
    doc = await must_stored(stores, account, m["media_id"])
    assert "pvt_deleted" not in doc
    await bulk_ok(api, account, box, "POST", {"messages": [m["media_id"]], "folder": "new"})
    assert await folders(api, account, box) == {m["media_id"]: "new"}


async def test_post_reports_unknown_foreign_and_deleted_ids_as_not_found(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000")
    other = await create_box(api, account, "2000")
    mine = await create_message(api, account, box)
    theirs = await create_message(api, account, other)
    gone = await insert_message(stores, account, box, this_month(), pvt_deleted=True)
    unknown = id_prefix(now()) + "a" * 32
    no_modb = "201001-" + "b" * 32
    ids = [unknown, mine["media_id"], theirs["media_id"], gone, no_modb]
    result = await bulk_ok(api, account, box, "POST", {"messages": ids, "folder": "saved"})
    assert result == {
        "succeeded": [mine["media_id"]],
        "failed": [{unknown: "not_found"}, {theirs["media_id"]: "not_found"},
                   {gone: "not_found"}, {no_modb: "not_found"}],
    }
    assert await folders(api, account, other) == {theirs["media_id"]: "new"}


async def test_post_refuses_messages_older_than_retention(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    fresh = await create_message(api, account, box)
    old = await insert_message(stores, account, box, older_than_retention())
    before = await must_stored(stores, account, old)
    result = await bulk_ok(api, account, box, "POST",
                           {"messages": [old, fresh["media_id"]], "folder": "saved"})
    assert result == {"succeeded": [fresh["media_id"]],
                      "failed": [{old: "prior_to_retention_duration"}]}
    after = await must_stored(stores, account, old)
    assert after["_rev"] == before["_rev"]
    assert after == before


async def test_post_filters_narrow_the_selection(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    new = await create_message(api, account, box, timestamp=this_month(0))
    saved = await create_message(api, account, box, timestamp=this_month(1), folder="saved")
    saved_before = await must_stored(stores, account, saved["media_id"])
    result = await bulk_ok(api, account, box, "POST",
                           {"messages": [new["media_id"], saved["media_id"]],
                            "folder": "deleted"},
                           filter_folder="new")
    assert result == {"succeeded": [new["media_id"]]}
    saved_after = await must_stored(stores, account, saved["media_id"])
    assert saved_after["_rev"] == saved_before["_rev"]
    assert await folders(api, account, box) == {
        new["media_id"]: "deleted", saved["media_id"]: "saved"}


# -- POST: move and copy ---------------------------------------------------------------------


async def test_post_moves_messages_to_another_box(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000")
    dest = await create_box(api, account, "2000")
    m1 = await create_message_with_audio(api, account, box, b"first", timestamp=last_month())
    m2 = await create_message(api, account, box, timestamp=this_month())
    stay = await create_message(api, account, box, timestamp=this_month(1))
    result = await bulk_ok(api, account, box, "POST",
                           {"messages": [m1["media_id"], m2["media_id"]], "source_id": dest,
                            "folder": "saved"})
    assert set(result) == {"succeeded"}
    new_ids = result["succeeded"]
    assert len(new_ids) == 2
    assert not {m1["media_id"], m2["media_id"]} & set(new_ids)
    current = id_prefix(now())
    for new_id in new_ids:
        assert MESSAGE_ID.match(new_id)
        assert new_id.startswith(current)
    for old in (m1, m2):
        assert await stored(stores, account, old["media_id"]) is None
    first = await must_stored(stores, account, new_ids[0])
    assert first["source_id"] == dest
    assert first["history"] == [box]
    assert first["metadata"]["folder"] == "new"  # folder is ignored with source_id
    assert list((await stored_attachments(stores, account, new_ids[0])).values()) == [
        ("audio/mp3", b"first")]
    assert await listed_ids(api, account, box) == [stay["media_id"]]
    assert sorted(await listed_ids(api, account, dest)) == sorted(new_ids)


async def test_post_copies_messages_to_several_boxes(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000")
    dest2 = await create_box(api, account, "2000")
    dest3 = await create_box(api, account, "3000")
    m = await create_message(api, account, box)
    unknown = id_prefix(now()) + "c" * 32
    result = await bulk_ok(api, account, box, "POST",
                           {"messages": [m["media_id"], unknown], "source_id": [dest2, dest3]})
    assert result["failed"] == [{unknown: "not_found"}]
    new_ids = result["succeeded"]
    assert len(new_ids) == 2
    assert m["media_id"] not in new_ids
    assert await listed_ids(api, account, box) == [m["media_id"]]
    original = await must_stored(stores, account, m["media_id"])
    assert original["source_id"] == box
    owners: dict[str, str] = {}
    for new_id in new_ids:
        doc = await must_stored(stores, account, new_id)
        owners[doc["source_id"]] = new_id
        assert doc["history"] == [box]
        assert doc["metadata"]["media_id"] == new_id
    assert set(owners) == {dest2, dest3}
    assert await listed_ids(api, account, dest2) == [owners[dest2]]
    assert await listed_ids(api, account, dest3) == [owners[dest3]]


async def test_post_move_of_an_old_message_fails_per_id(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000")
    dest = await create_box(api, account, "2000")
    old = await insert_message(stores, account, box, older_than_retention())
    result = await bulk_ok(api, account, box, "POST", {"messages": [old], "source_id": dest})
    assert result == {"failed": [{old: "prior_to_retention_duration"}]}
    assert await stored(stores, account, old) is not None
    assert await listed_ids(api, account, dest) == []


# -- DELETE ----------------------------------------------------------------------------------


async def test_delete_listed_ids(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account)
    m = await create_message(api, account, box, timestamp=this_month(0))
    keep = await create_message(api, account, box, timestamp=this_month(1))
    unknown = id_prefix(now()) + "d" * 32
    result = await bulk_ok(api, account, box, "DELETE", {"messages": [m["media_id"], unknown]})
    assert result == {"succeeded": [m["media_id"]], "failed": [{unknown: "not_found"}]}
    assert await listed_ids(api, account, box) == [keep["media_id"]]
    resp, body = await api.call("GET", message_path(account, box, m["media_id"]), account.token)
    assert assert_error(resp, body, 404, "bad_identifier")["cause"] == m["media_id"]
    doc = await must_stored(stores, account, m["media_id"])
    assert doc["pvt_deleted"] is True
    assert doc["metadata"]["folder"] == "deleted"
    # already deleted now: reported as not_found
    result = await bulk_ok(api, account, box, "DELETE", {"messages": [m["media_id"]]})
    assert result == {"failed": [{m["media_id"]: "not_found"}]}


async def test_delete_by_folder(api: Api, account: Tenant, stores: Stores) -> None:
    box = await create_box(api, account)
    new = await create_message(api, account, box, timestamp=this_month(0))
    saved = await create_message(api, account, box, timestamp=this_month(1), folder="saved")
    saved_old_month = await create_message(api, account, box, timestamp=last_month(),
                                           folder="saved")
    result = await bulk_ok(api, account, box, "DELETE", folder="saved")
    assert set(result) == {"succeeded"}
    assert sorted(result["succeeded"]) == sorted([saved["media_id"],
                                                  saved_old_month["media_id"]])
    assert await listed_ids(api, account, box) == [new["media_id"]]
    assert "pvt_deleted" not in await must_stored(stores, account, new["media_id"])


async def test_delete_by_folder_in_data(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    new = await create_message(api, account, box, timestamp=this_month(0))
    binned = await create_message(api, account, box, timestamp=this_month(1), folder="deleted")
    result = await bulk_ok(api, account, box, "DELETE", {"folder": "deleted"})
    assert result == {"succeeded": [binned["media_id"]]}
    assert await listed_ids(api, account, box) == [new["media_id"]]


async def test_delete_with_an_unknown_folder_is_400(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    m = await create_message(api, account, box)
    resp, body = await bulk(api, account, box, "DELETE", folder="bogus")
    assert assert_error(resp, body, 400, "validation error") == FOLDER_ENUM
    resp, body = await bulk(api, account, box, "DELETE", {"folder": "bogus"})
    assert assert_error(resp, body, 400, "validation error") == FOLDER_ENUM
    assert await listed_ids(api, account, box) == [m["media_id"]]


async def test_delete_without_body_deletes_everything_in_every_month(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000")
    other = await create_box(api, account, "2000")
    recent = await create_message(api, account, box, timestamp=this_month())
    previous = await create_message(api, account, box, timestamp=last_month(), folder="saved")
    old = await insert_message(stores, account, box, older_than_retention())
    theirs = await create_message(api, account, other)
    resp, body = await api.call("DELETE", messages_path(account, box), account.token)
    result = assert_success(resp, body)
    assert set(result) == {"succeeded"}
    assert sorted(result["succeeded"]) == sorted([recent["media_id"], previous["media_id"], old])
    for message_id in (recent["media_id"], previous["media_id"], old):
        doc = await must_stored(stores, account, message_id)
        assert doc["pvt_deleted"] is True, message_id
        assert doc["metadata"]["folder"] == "deleted", message_id
    assert await listed_ids(api, account, box) == []
    assert await listed_ids(api, account, other) == [theirs["media_id"]]
    # nothing left: an empty selection gives {}
    assert await bulk_ok(api, account, box, "DELETE") == {}


async def test_delete_with_an_empty_list_deletes_nothing(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    m = await create_message(api, account, box)
    assert await bulk_ok(api, account, box, "DELETE", {"messages": []}) == {}
    assert await listed_ids(api, account, box) == [m["media_id"]]


async def test_delete_of_an_old_message_is_allowed(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    old = await insert_message(stores, account, box, older_than_retention())
    result = await bulk_ok(api, account, box, "DELETE", {"messages": [old]})
    assert result == {"succeeded": [old]}
    doc = await must_stored(stores, account, old)
    assert doc["pvt_deleted"] is True
    assert doc["metadata"]["folder"] == "deleted"


async def test_delete_filters_narrow_the_selection(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    new = await create_message(api, account, box, timestamp=this_month(0))
    saved = await create_message(api, account, box, timestamp=this_month(1), folder="saved")
    result = await bulk_ok(api, account, box, "DELETE",
                           {"messages": [new["media_id"], saved["media_id"]]},
                           filter_folder="saved")
    assert result == {"succeeded": [saved["media_id"]]}
    assert await listed_ids(api, account, box) == [new["media_id"]]


async def test_delete_foreign_ids_are_not_found_and_untouched(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, "1000")
    other = await create_box(api, account, "2000")
    theirs = await create_message(api, account, other)
    result = await bulk_ok(api, account, box, "DELETE", {"messages": [theirs["media_id"]]})
    assert result == {"failed": [{theirs["media_id"]: "not_found"}]}
    assert "pvt_deleted" not in await must_stored(stores, account, theirs["media_id"])


async def test_delete_on_an_unknown_box_is_an_empty_success(
    api: Api, account: Tenant
) -> None:
    assert await bulk_ok(api, account, "0" * 32, "DELETE") == {}


async def test_bulk_change_reads_its_envelope_from_a_multipart_body(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    message = await create_message(api, account, box, timestamp=this_month(0))
    body, content_type = multipart(
        ("application/json",
         json.dumps({"data": {"messages": [message["media_id"]], "folder": "saved"}}).encode(),
         None))
    resp, data = await api.call("POST", messages_path(account, box), account.token, body=body,
                                headers={"Content-Type": content_type})
    assert assert_success(resp, data) == {"succeeded": [message["media_id"]]}
