"""CouchDB's own refusals, as the storage layer reports them (docs/decisions.md N-8, P-16).

Against the real server: a value CouchDB cannot parse is a 400 the client hears, never the 503
of an outage; a refused connection is "unreachable", not "timeout".
"""

from __future__ import annotations

import socket
from http import HTTPStatus

import pytest

from piston_vm.core import errors
from piston_vm.core.config import CouchEndpoint
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
