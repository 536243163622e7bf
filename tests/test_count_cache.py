"""Box counts reused while a MODB is unchanged (docs/storage.md 7.3): never a stale count.

Each test lists once to fill the cache, changes the MODB the way the platform's call handling
does (straight into CouchDB, not through this service), and lists again.
"""

from __future__ import annotations

import asyncio

from piston_vm.core import gregorian
from piston_vm.storage.stores import Stores
from tests.conftest import Tenant
from tests.helpers import Api, assert_success
from tests.test_message_support import create_box, create_message, modb_of_id, this_month

DAY_S = 86_400
RETENTION_S = 93 * DAY_S + 3_600


async def box_rows(api: Api, tenant: Tenant) -> dict[str, dict[str, object]]:
    resp, body = await api.call("GET", f"/v2/accounts/{tenant.id}/vmboxes", tenant.token)
    return {row["id"]: row for row in assert_success(resp, body)}


async def test_a_change_written_straight_into_the_modb_shows_at_once(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account, mailbox="1000")
    first = await create_message(api, account, box, timestamp=this_month(0))
    second = await create_message(api, account, box, timestamp=this_month(1))
    assert (await box_rows(api, account))[box]["folders"] == {"new": 2, "saved": 0}
    # The platform saves one message itself, in place.
    modb = modb_of_id(account, first["media_id"])
    doc = await stores.couch.get_doc(modb, first["media_id"])
    assert doc is not None
    doc["metadata"]["folder"] = "saved"
    await stores.couch.put_doc(modb, doc)
    assert (await box_rows(api, account))[box]["folders"] == {"new": 1, "saved": 1}
    # ... and deletes the other outright.
    other = await stores.couch.get_doc(modb, second["media_id"])
    assert other is not None
    await stores.couch.request(
        "DELETE", stores.couch.doc_url(modb, second["media_id"]),
        params={"rev": other["_rev"]}, db=modb)
    rows = await box_rows(api, account)
    assert rows[box]["folders"] == {"new": 0, "saved": 1}
    assert rows[box]["messages"] == 1


async def test_the_window_start_moving_past_a_message_drops_it(
    api: Api, account: Tenant
) -> None:
    """The month the window starts in is counted from a moving cutoff: a message that falls
    out of the window while nothing is written must stop being counted."""
    box = await create_box(api, account, mailbox="1000")
    await create_message(api, account, box, timestamp=this_month(0))
    # Two seconds inside the window when created; outside it three seconds later.
    await create_message(api, account, box,
                         timestamp=gregorian.now() - RETENTION_S + 2)
    assert (await box_rows(api, account))[box]["folders"] == {"new": 2, "saved": 0}
    await asyncio.sleep(3.2)
    assert (await box_rows(api, account))[box]["folders"] == {"new": 1, "saved": 0}


async def test_boxes_first_listed_later_are_counted_too(
    api: Api, account: Tenant, stores: Stores
) -> None:
    """A page of boxes counted from the cache of another page's boxes: the window's first
    month holds only the boxes asked so far."""
    early = gregorian.now() - RETENTION_S + 5 * DAY_S
    boxes = [await create_box(api, account, mailbox=str(1000 + n)) for n in range(3)]
    for n, box in enumerate(boxes):
        for _ in range(n + 1):
            await create_message(api, account, box, timestamp=early)
    resp, body = await api.call(
        "GET", f"/v2/accounts/{account.id}/vmboxes?page_size=1", account.token)
    page = assert_success(resp, body)
    assert len(page) == 1
    rows = await box_rows(api, account)
    assert sorted(int(str(rows[box]["messages"])) for box in boxes) == [1, 2, 3]


async def test_cache_skips_the_count_queries_while_nothing_changes(
    api: Api, account: Tenant, stores: Stores
) -> None:
    """Proof the cache is used: a second listing asks CouchDB for sequences, not counts."""
    box = await create_box(api, account, mailbox="1000")
    early = gregorian.now() - RETENTION_S + 5 * DAY_S
    await create_message(api, account, box, timestamp=early)
    await create_message(api, account, box, timestamp=this_month(0))
    assert (await box_rows(api, account))[box]["messages"] == 2
    views_before = await _view_requests(api)
    for _ in range(3):
        assert (await box_rows(api, account))[box]["messages"] == 2
    # Three more listings: one crossbar_listing query each, no count query.
    assert await _view_requests(api) - views_before == 3


async def _view_requests(api: Api) -> float:
    resp = await api.client.get("/metrics")
    text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("piston_vm_couchdb_requests_total{") and (
                'operation="view"' in line or 'operation="view_queries"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total
