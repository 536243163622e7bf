"""CouchDB's own refusals, as the storage layer reports them (docs/decisions.md N-8, P-16).

Against the real server: a value CouchDB cannot parse is a 400 the client hears, never the 503
of an outage; a refused connection is "unreachable", not "timeout".
"""

from __future__ import annotations

import socket
from http import HTTPStatus
from typing import Any

import pytest

from piston_vm.core import errors
from piston_vm.core.config import CouchEndpoint, settings_from_env
from piston_vm.storage.couch import CouchClient
from piston_vm.storage.names import account_db
from piston_vm.storage.stores import Stores
from tests.conftest import Tenant


@pytest.mark.parametrize("params", [{"limit": "abc"}, {"limit": "-5"}, {"skip": "x"},
                                    {"startkey": "not json"}])
async def test_a_query_value_couchdb_cannot_parse_is_a_400(
    stores: Stores, account: Tenant, params: dict[str, str],
) -> None:
    db = account_db(account.id).unencoded
    url = stores.couch.url(db, "_design", "vmboxes", "_view", "crossbar_listing")
    with pytest.raises(errors.ApiError) as caught:
        await stores.couch.request("GET", url, params=params, db=db)
    assert not isinstance(caught.value, errors.DatastoreError)
    assert caught.value.status == HTTPStatus.BAD_REQUEST
    assert caught.value.message == "invalid request"
    assert caught.value.data["message"] == "a value of the request cannot be used"


async def test_a_refused_connection_is_unreachable_not_timeout() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    couch = CouchClient(CouchEndpoint(f"http://127.0.0.1:{port}", None, None), 2.0)
    await couch.start()
    try:
        with pytest.raises(errors.DatastoreError) as caught:
            await couch.get_doc("anything", "doc")
    finally:
        await couch.close()
    assert caught.value.data == {"message": "datastore unreachable"}


async def test_a_write_short_of_its_copies_is_stored_counted_and_not_an_error(
    stores: Stores, account: Tenant, caplog: pytest.LogCaptureFixture,
) -> None:
    """On a single node (and the bundled server) one copy exists: asking for two is what a
    cluster with a node down answers, 202 (docs/operations.md, "A CouchDB cluster")."""
    db = account_db(account.id).unencoded
    assert await stores.couch.write_params(db) == {}  # "all" of one copy: no `w` at all
    couch = CouchClient(stores.couch.endpoint, 5.0, write_quorum="2")
    await couch.start()
    try:
        doc: dict[str, Any] = {"_id": "short-of-quorum", "k": 1}
        await couch.put_doc(db, doc)
        await couch.put_doc(db, doc)
        results = await couch.bulk_docs(db, [{"_id": "short-bulk"}])
        await couch.delete_doc(db, "short-of-quorum", doc["_rev"])
        assert couch.writes_short_of_quorum == 4
    finally:
        await couch.close()
    assert "error" not in results[0]
    assert await stores.couch.get_doc(db, "short-bulk") is not None
    assert await stores.couch.get_doc(db, "short-of-quorum") is None
    assert "fewer copies than asked" in caplog.text


def test_the_write_quorum_setting_is_checked() -> None:
    assert settings_from_env({"PISTON_VM_COUCHDB_W": "3"}).couchdb_w == "3"
    assert settings_from_env({}).couchdb_w == "all"
    for wrong in ("0", "two", "-1", "majority"):
        with pytest.raises(ValueError, match="COUCHDB_W"):
            settings_from_env({"PISTON_VM_COUCHDB_W": wrong})
