"""The box counts' own view on the real server: installed as the file says, queried by
reductions only (docs/storage.md 7, 7.3)."""

from __future__ import annotations

import json
from typing import Any

from piston_vm.core.config import Settings
from piston_vm.storage.couch import CouchClient
from piston_vm.storage.databases import Databases
from piston_vm.storage.design import DesignDocs
from piston_vm.storage.messages import COUNTS_DESIGN, COUNTS_VIEW
from piston_vm.storage.names import account_db
from piston_vm.storage.stores import Stores
from tests.conftest import Tenant

OLD_COUNTS = {"_id": "_design/piston_vm_counts", "language": "javascript", "views": {
    "by_box_folder": {"map": "function (doc) { emit([doc.source_id, 1], null); }",
                      "reduce": "_count"}}}
PLATFORM_EXTRA = {"map": "function (doc) { emit(doc._id, null); }"}


async def test_our_own_design_doc_is_replaced_and_the_platforms_only_completed(
    stores: Stores, account: Tenant, settings: Settings,
) -> None:
    modb = account_db(account.id).modb(2031, 5)
    couch: CouchClient = stores.couch
    await couch.create_db(modb.unencoded)
    await couch.put_doc(modb.unencoded, dict(OLD_COUNTS))
    platform = {"_id": "_design/mailbox_messages", "language": "javascript",
                "views": {"the_platforms_own": PLATFORM_EXTRA}}
    await couch.put_doc(modb.unencoded, platform)

    # A fresh process: nothing cached as ready yet.
    databases = Databases(couch, DesignDocs.load(settings.couchdb_dir))
    assert await databases.ensure_modb(modb, create=False)

    wanted = json.loads((settings.couchdb_dir / "modb" / "piston_vm_counts.json").read_text())
    counts = await couch.get_doc(modb.unencoded, "_design/piston_vm_counts")
    assert counts is not None
    assert counts["views"] == wanted["views"]  # by_box_folder is gone
    stored = await couch.get_doc(modb.unencoded, "_design/mailbox_messages")
    assert stored is not None
    assert stored["views"]["the_platforms_own"] == PLATFORM_EXTRA
    assert "listing_by_mailbox" in stored["views"]

    # Installed as wanted: a second process writes nothing.
    rev = counts["_rev"]
    again = Databases(couch, DesignDocs.load(settings.couchdb_dir))
    assert await again.ensure_modb(modb, create=False)
    after = await couch.get_doc(modb.unencoded, "_design/piston_vm_counts")
    assert after is not None
    assert after["_rev"] == rev


async def test_the_count_view_sums_folders_per_box_and_time_range(
    stores: Stores, account: Tenant,
) -> None:
    modb = account_db(account.id).modb(2031, 6)
    assert await stores.databases.ensure_modb(modb, create=True)
    folders = ["new", "saved", "deleted", "new", "elsewhere"]
    docs: list[dict[str, Any]] = [
        {"_id": f"203106-m{i}", "pvt_type": "mailbox_message", "source_id": box,
         "metadata": {"folder": folders[i % 5], "timestamp": 1000 + i}}
        for i, box in enumerate(["b1", "b2"] * 10)]
    docs.append({"_id": "203106-gone", "pvt_type": "mailbox_message", "source_id": "b1",
                 "pvt_deleted": True, "metadata": {"folder": "new", "timestamp": 1005}})
    await stores.couch.bulk_docs(modb.unencoded, docs)

    whole = await stores.couch.view(modb.unencoded, COUNTS_DESIGN, COUNTS_VIEW,
                                    {"group_level": 1})
    by_box = {tuple(row["key"]): row["value"] for row in whole["rows"]}
    assert by_box == {("b1",): [4, 2, 2], ("b2",): [4, 2, 2]}

    queries = [{"startkey": ["b1", 1010], "endkey": ["b1", 1018]},
               {"startkey": ["b2", 1000], "endkey": ["b2", 1003]},
               {"startkey": ["nobody", 0], "endkey": ["nobody", 9999]}]
    # 150 queries in batches of 100 come back in order.
    results = await stores.couch.view_queries(modb.unencoded, COUNTS_DESIGN, COUNTS_VIEW,
                                              queries * 50)
    assert len(results) == 150
    for n, result in enumerate(results):
        expected = [[[2, 1, 1]], [[1, 1, 0]], []][n % 3]
        assert [row["value"] for row in result["rows"]] == expected, n
