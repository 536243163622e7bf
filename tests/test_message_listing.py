"""Message listings (docs/api.md 8, 9.7, 9.8) and the box list's message counts (9.1)."""

from __future__ import annotations

from typing import Any

from piston_vm.storage.stores import Stores
from tests.conftest import Tenant
from tests.helpers import Api, assert_error, assert_success
from tests.test_message_support import (
    MAX_WINDOW_S,
    RETENTION_MESSAGE,
    SUMMARY_KEYS,
    create_box,
    create_message,
    create_message_with_audio,
    insert_message,
    last_month,
    list_messages,
    listed_ids,
    message_path,
    messages_path,
    modb_of_id,
    modb_of_time,
    months_ago,
    must_stored,
    now,
    older_than_retention,
    this_month,
    update_stored,
    vmboxes_path,
)

JsonObject = dict[str, Any]


def summary(metadata: JsonObject) -> JsonObject:
    return {key: metadata[key] for key in SUMMARY_KEYS}


def newest_first(messages: list[JsonObject]) -> list[str]:
    return [m["media_id"] for m in sorted(messages, key=lambda m: -int(m["timestamp"]))]


async def account_rows(api: Api, tenant: Tenant, **params: str) -> tuple[JsonObject, Any]:
    resp, body = await api.call("GET", f"{vmboxes_path(tenant)}/messages", tenant.token,
                                params=params or None)
    return body, assert_success(resp, body)


# -- shape -----------------------------------------------------------------------------------


async def test_unknown_box_lists_nothing(api: Api, account: Tenant) -> None:
    body, rows = await list_messages(api, account, "0" * 32)
    assert rows == []
    assert body["page_size"] == 0
    assert "next_start_key" not in body


async def test_rows_are_the_view_summary_without_id(api: Api, account: Tenant) -> None:
    box = await create_box(api, account, "3000")
    data = await create_message_with_audio(api, account, box, b"audio", caller_id_number="1001",
                                           caller_id_name="userb userb", length=3140,
                                           timestamp=this_month())
    body, rows = await list_messages(api, account, box)
    assert rows == [summary(data)]
    assert set(rows[0]) == SUMMARY_KEYS
    assert "id" not in rows[0]
    assert "transcribed" not in rows[0]
    assert body["page_size"] == 1
    assert isinstance(body["revision"], str)
    assert "next_start_key" not in body
    assert "start_key" not in body


async def test_newest_first_and_ascending_reverses(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    created = [await create_message(api, account, box, timestamp=ts)
               for ts in (this_month(2), last_month(), this_month(0), this_month(1))]
    expected = newest_first(created)
    _, rows = await list_messages(api, account, box)
    assert [r["media_id"] for r in rows] == expected
    assert [r["timestamp"] for r in rows] == sorted((r["timestamp"] for r in rows), reverse=True)
    _, rows = await list_messages(api, account, box, ascending="true")
    assert [r["media_id"] for r in rows] == list(reversed(expected))
    _, rows = await list_messages(api, account, box, descending="false")
    assert [r["media_id"] for r in rows] == list(reversed(expected))
    _, rows = await list_messages(api, account, box, ascending="false")
    assert [r["media_id"] for r in rows] == expected


async def test_thirteen_messages_over_two_months_page_exactly(
    api: Api, account: Tenant
) -> None:
    """docs/api.md 11: 13 messages over two months, 6 of them not saved."""
    box = await create_box(api, account)
    this_folders = ["new", "saved", "deleted", "saved", "new", "saved", "saved"]
    last_folders = ["new", "saved", "new", "saved", "deleted", "saved"]
    created: list[JsonObject] = []
    for index, folder in enumerate(this_folders):
        created.append(await create_message(api, account, box, timestamp=this_month(index),
                                            folder=folder))
    for index, folder in enumerate(last_folders):
        created.append(await create_message(api, account, box, timestamp=last_month(index),
                                            folder=folder))
    assert len(created) == 13
    not_saved = newest_first([m for m in created if m["folder"] != "saved"])
    assert len(not_saved) == 6

    body, rows = await list_messages(api, account, box, page_size="5",
                                     filter_not_folder="saved")
    assert [r["media_id"] for r in rows] == not_saved[:5]
    assert body["page_size"] == 5
    cursor = body["next_start_key"]
    assert isinstance(cursor, str)
    assert cursor
    assert "start_key" not in body

    body, rows = await list_messages(api, account, box, page_size="5",
                                     filter_not_folder="saved", start_key=cursor)
    assert [r["media_id"] for r in rows] == not_saved[5:]
    assert body["page_size"] == 1
    assert "next_start_key" not in body
    assert body["start_key"] == cursor

    everything = newest_first(created)
    body, rows = await list_messages(api, account, box)
    assert [r["media_id"] for r in rows] == everything
    assert body["page_size"] == 13
    assert "next_start_key" not in body

    body, rows = await list_messages(api, account, box, paginate="false", page_size="2")
    assert [r["media_id"] for r in rows] == everything
    assert not {"page_size", "start_key", "next_start_key"} & set(body)

    new_only = newest_first([m for m in created if m["folder"] == "new"])
    _, rows = await list_messages(api, account, box, filter_folder="new")
    assert [r["media_id"] for r in rows] == new_only
    assert {r["folder"] for r in rows} == {"new"}


async def test_unfiltered_cursor_crosses_months(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    created = [await create_message(api, account, box, timestamp=ts)
               for ts in (this_month(0), last_month(0), last_month(1))]
    expected = newest_first(created)
    seen: list[str] = []
    params = {"page_size": "1"}
    for _ in range(5):  # a cursor that does not advance must fail the test, not hang it
        body, rows = await list_messages(api, account, box, **params)
        assert body["page_size"] == len(rows) == 1
        seen += [r["media_id"] for r in rows]
        if "next_start_key" not in body:
            break
        params = {"page_size": "1", "start_key": body["next_start_key"]}
    assert seen == expected


async def test_bad_page_sizes_are_faulty_requests(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    resp, body = await api.call("GET", messages_path(account, box), account.token,
                                params={"page_size": "abc"})
    assert assert_error(resp, body, 404, "faulty_request") == {"message": "invalid page size"}
    resp, body = await api.call("GET", messages_path(account, box), account.token,
                                params={"page_size": "0"})
    assert assert_error(resp, body, 404, "faulty_request") == {
        "message": "page size must be at least 1"}


# -- what is listed --------------------------------------------------------------------------


async def test_soft_deleted_are_omitted_and_deleted_folder_is_listed(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    gone = await create_message(api, account, box, timestamp=this_month(2))
    binned = await create_message(api, account, box, timestamp=this_month(1))
    kept = await create_message(api, account, box, timestamp=this_month(0))
    gone_doc = await must_stored(stores, account, gone["media_id"])
    await update_stored(stores, account, gone["media_id"], pvt_deleted=True,
                        metadata=gone_doc["metadata"] | {"folder": "deleted"})
    resp, body = await api.call("POST", message_path(account, box, binned["media_id"]),
                                account.token, {"folder": "deleted"})
    assert assert_success(resp, body)["folder"] == "deleted"
    _, rows = await list_messages(api, account, box)
    assert [(r["media_id"], r["folder"]) for r in rows] == [
        (kept["media_id"], "new"), (binned["media_id"], "deleted")]


async def test_old_message_only_with_a_window_and_marked_deleted(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    fresh = await create_message(api, account, box, timestamp=this_month())
    old_ts = older_than_retention()
    old_id = await insert_message(stores, account, box, old_ts)
    before = await must_stored(stores, account, old_id)
    assert await listed_ids(api, account, box) == [fresh["media_id"]]
    _, rows = await list_messages(api, account, box, created_from=str(old_ts - 3600),
                                  created_to=str(old_ts + 3600))
    assert len(rows) == 1
    row = rows[0]
    assert row["media_id"] == old_id
    assert row["timestamp"] == old_ts
    assert row["folder"] == "deleted"
    assert row["retention"] == "enforced"
    assert row["retention_message"] == RETENTION_MESSAGE
    after = await must_stored(stores, account, old_id)
    assert after["_rev"] == before["_rev"]
    assert after["metadata"]["folder"] == "new"
    assert "retention" not in after["metadata"]


async def test_window_bounds_the_timestamp_inclusively(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    a = await create_message(api, account, box, timestamp=this_month(2))
    b = await create_message(api, account, box, timestamp=this_month(1))
    c = await create_message(api, account, box, timestamp=this_month(0))
    _, rows = await list_messages(api, account, box, created_from=str(a["timestamp"] + 1),
                                  created_to=str(c["timestamp"] - 1))
    assert [r["media_id"] for r in rows] == [b["media_id"]]
    _, rows = await list_messages(api, account, box, created_from=str(a["timestamp"]),
                                  created_to=str(c["timestamp"]))
    assert [r["media_id"] for r in rows] == [c["media_id"], b["media_id"], a["media_id"]]


async def test_window_errors(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    start, end = now() - 100, now() - 200
    resp, body = await api.call("GET", messages_path(account, box), account.token,
                                params={"created_from": str(start), "created_to": str(end)})
    assert assert_error(resp, body, 400, "validation error") == {"created_from": {"date_range": {
        "message": f"created_to {end} is prior to created_from {start}", "cause": start}}}
    end = now() - 100
    start = end - MAX_WINDOW_S - 1
    resp, body = await api.call("GET", messages_path(account, box), account.token,
                                params={"created_from": str(start), "created_to": str(end)})
    assert assert_error(resp, body, 400, "validation error") == {"created_from": {"date_range": {
        "message": f"created_to {end} is more than {MAX_WINDOW_S} seconds from created_from "
                   f"{start}", "cause": end}}}
    resp, body = await api.call("GET", messages_path(account, box), account.token,
                                params={"created_from": str(start + 1), "created_to": str(end)})
    assert assert_success(resp, body) == []


async def test_month_without_modb_is_skipped(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    recent = await create_message(api, account, box, timestamp=this_month())
    older = await create_message(api, account, box, timestamp=months_ago(2))
    gap = modb_of_time(account, last_month())
    assert not await stores.couch.db_exists(gap)
    assert await listed_ids(api, account, box) == [recent["media_id"], older["media_id"]]
    _, rows = await list_messages(api, account, box, ascending="true")
    assert [r["media_id"] for r in rows] == [older["media_id"], recent["media_id"]]
    assert not await stores.couch.db_exists(gap)  # reads never create a MODB


async def test_transcribed_follows_the_top_level_transcription(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    results: dict[str, Any] = {}
    for index, result in enumerate(("success", "error", "", None)):
        data = await create_message(api, account, box, timestamp=this_month(index))
        if result is not None:
            await update_stored(stores, account, data["media_id"],
                                transcription={"result": result, "text": "words"})
        results[data["media_id"]] = result
    _, rows = await list_messages(api, account, box)
    by_id = {r["media_id"]: r for r in rows}
    assert set(by_id) == set(results)
    for message_id, result in results.items():
        row = by_id[message_id]
        if result == "success":
            assert row["transcribed"] is True
        elif result == "error":
            assert row["transcribed"] is False
        elif result == "":
            assert row["transcribed"] == ""
        else:
            assert "transcribed" not in row
        assert set(row) - {"transcribed"} == SUMMARY_KEYS


# -- account-wide listing --------------------------------------------------------------------


async def test_account_listing_rows_are_keyed_by_box_newest_first(
    api: Api, account: Tenant
) -> None:
    first = await create_box(api, account, "1000")
    second = await create_box(api, account, "2000")
    m0 = await create_message(api, account, second, timestamp=last_month())
    m1 = await create_message(api, account, first, timestamp=this_month(3))
    m2 = await create_message(api, account, second, timestamp=this_month(2))
    m3 = await create_message(api, account, first, timestamp=this_month(1))
    expected = [(first, m3), (second, m2), (first, m1), (second, m0)]
    assert newest_first([m for _, m in expected]) == [m["media_id"] for _, m in expected]
    body, rows = await account_rows(api, account)
    assert rows == [{box: summary(m)} for box, m in expected]
    assert body["page_size"] == 4
    _, rows = await account_rows(api, account, ascending="true")
    assert rows == [{box: summary(m)} for box, m in reversed(expected)]
    body, rows = await account_rows(api, account, page_size="3")
    assert len(rows) == 3
    body, rows = await account_rows(api, account, page_size="3",
                                    start_key=body["next_start_key"])
    assert rows == [{second: summary(m0)}]
    assert "next_start_key" not in body
    _, rows = await account_rows(api, account, filter_caller_id_number="anonymous",
                                 paginate="false")
    assert len(rows) == 4


async def test_account_listing_is_scoped_and_empty_for_a_new_account(
    api: Api, account: Tenant
) -> None:
    body, rows = await account_rows(api, account)
    assert rows == []
    assert body["page_size"] == 0


# -- box list counts -------------------------------------------------------------------------


async def test_box_list_counts_new_and_saved(
    api: Api, account: Tenant, stores: Stores
) -> None:
    busy = await create_box(api, account, "1000", name="A busy box")
    idle = await create_box(api, account, "2000", name="B idle box")
    await create_message(api, account, busy, timestamp=this_month(0))
    await create_message(api, account, busy, timestamp=last_month(0))
    await create_message(api, account, busy, timestamp=this_month(1), folder="saved")
    await create_message(api, account, busy, timestamp=this_month(2), folder="deleted")
    gone = await create_message(api, account, busy, timestamp=this_month(3))
    await update_stored(stores, account, gone["media_id"], pvt_deleted=True)
    await insert_message(stores, account, busy, older_than_retention())  # outside the window
    resp, body = await api.call("GET", vmboxes_path(account), account.token)
    rows = {row["id"]: row for row in assert_success(resp, body)}
    assert rows[busy]["messages"] == 3
    assert rows[busy]["folders"] == {"new": 2, "saved": 1}
    assert rows[idle]["messages"] == 0
    assert "folders" not in rows[idle]


async def test_window_parameters_that_are_not_positive_integers_are_ignored(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    m = await create_message(api, account, box, timestamp=this_month())
    for bad in ("abc", "-5", "0", "1.5"):
        _, rows = await list_messages(api, account, box, created_from=bad, created_to=bad)
        assert [r["media_id"] for r in rows] == [m["media_id"]], bad


async def test_created_to_alone_moves_the_retention_window(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    recent = await create_message(api, account, box, timestamp=this_month())
    previous = await create_message(api, account, box, timestamp=last_month())
    _, rows = await list_messages(api, account, box, created_to=str(previous["timestamp"]))
    assert [r["media_id"] for r in rows] == [previous["media_id"]]
    assert recent["media_id"] not in [r["media_id"] for r in rows]


async def test_an_undecodable_start_key_is_not_an_error(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    await create_message(api, account, box)
    for start_key in ("garbage!", "[1,2]", '"x"'):
        resp, body = await api.call("GET", messages_path(account, box), account.token,
                                    params={"start_key": start_key})
        assert isinstance(assert_success(resp, body), list), start_key
        assert body["start_key"] == start_key


async def test_a_removed_design_document_is_a_503_once_then_installed_again(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    message = await create_message(api, account, box)
    modb = modb_of_id(account, message["media_id"])
    assert await listed_ids(api, account, box) == [message["media_id"]]
    design = await stores.couch.get_doc(modb, "_design/mailbox_messages")
    assert design is not None
    await stores.couch.delete_doc(modb, "_design/mailbox_messages", design["_rev"])
    resp, body = await api.call("GET", messages_path(account, box), account.token)
    assert_error(resp, body, 503, "datastore_missing_view")
    # The service checks the database's design documents again on the next request.
    assert await listed_ids(api, account, box) == [message["media_id"]]
