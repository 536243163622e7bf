"""CouchDB's own refusals, as the storage layer reports them (docs/decisions.md N-8, P-16).

Against the real server: a value CouchDB cannot parse is a 400 the client hears, never the 503
of an outage; a refused connection is "unreachable", not "timeout".
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from piston_vm.core import errors
from piston_vm.core.config import CouchEndpoint, settings_from_env
from piston_vm.storage.couch import Attachment, CouchClient, DocConflict
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
    _, info = await stores.couch.request("GET", stores.couch.url(db), db=db)
    copies = info["cluster"]["n"]
    # "all" copies: on one copy no `w` at all, on a cluster its `n`.
    assert await stores.couch.write_params(db) == ({} if copies == 1 else {"w": str(copies)})
    couch = CouchClient(stores.couch.endpoint, 5.0, write_quorum=str(copies + 1))
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
    # Each accepted winner was stored again on every copy (_bulk_docs, new_edits false).
    assert "could not copy winning revision" not in caplog.text


def test_the_write_quorum_setting_is_checked() -> None:
    assert settings_from_env({"PISTON_VM_COUCHDB_W": "3"}).couchdb_w == "3"
    assert settings_from_env({}).couchdb_w == "all"
    for wrong in ("0", "two", "-1", "majority"):
        with pytest.raises(ValueError, match="COUCHDB_W"):
            settings_from_env({"PISTON_VM_COUCHDB_W": wrong})


async def test_two_writes_both_accepted_by_some_copies_leave_one_winner(
    stores: Stores, account: Tenant,
) -> None:
    """What a cluster does to a compare-and-swap race (each write taken by some copies, both
    answered 202) made on purpose: two leaves from one parent. Each writer's check keeps only
    CouchDB's winner; the loser hears a conflict and its leaf is gone."""
    db = account_db(account.id).unencoded
    couch = stores.couch
    parent: dict[str, Any] = {"_id": "raced", "n": 0}
    await couch.put_doc(db, parent)
    # Two children of the same parent, as two copies would each have taken one.
    children = [{"_id": "raced", "_rev": parent["_rev"], "n": n} for n in (1, 2)]
    written = []
    for n, child in enumerate(children):
        rev = f"2-{n}{'0' * 31}"
        body = {**child, "_rev": rev, "_revisions": {"start": 2, "ids": [rev[2:],
                parent["_rev"].split("-", 1)[1]]}}
        await couch.request("PUT", couch.doc_url(db, "raced"), params={"new_edits": "false"},
                            body=body, db=db)
        written.append(rev)
    loser, winner = written  # "2-1…" sorts after "2-0…": CouchDB's winner
    # The winner's check finds nothing to do.
    await couch.confirm_accepted_write(202, db, "raced", winner)
    with pytest.raises(DocConflict):
        await couch.confirm_accepted_write(202, db, "raced", loser)
    leaves = await couch.open_revs(db, "raced")
    assert {leaf["_rev"]: bool(leaf.get("_deleted")) for leaf in leaves if
            not leaf.get("_deleted")} == {winner: False}
    stored = await couch.get_doc(db, "raced")
    assert stored is not None
    assert stored["_rev"] == winner
    # A revision a later write built on counts as won.
    newer: dict[str, Any] = {**stored}
    await couch.put_doc(db, newer)
    await couch.confirm_accepted_write(202, db, "raced", winner)


CRASH = {"error": "unknown_error", "reason": "function_clause"}


@contextlib.asynccontextmanager
async def crashing_proxy(target: CouchEndpoint, store_first: bool) -> AsyncIterator[CouchClient]:
    """A client of a pass-through to the real server that answers every multipart PUT with
    CouchDB 3.4's coordinator crash (500 unknown_error): after storing it (`store_first`) or
    without."""
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        url = target.url.rstrip("/") + request.raw_path
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization", "content-type", "accept")}
        crash = (request.method == "PUT"
                 and request.headers.get("Content-Type", "").startswith("multipart/related"))
        if crash and not store_first:
            return web.json_response(CRASH, status=500)
        async with session.request(request.method, url, data=body, headers=headers) as answer:
            payload = await answer.read()
            if crash:
                return web.json_response(CRASH, status=500)
            return web.Response(body=payload, status=answer.status,
                                content_type=answer.content_type)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    proxied = CouchEndpoint(f"http://127.0.0.1:{port}", target.user, target.password)
    couch = CouchClient(proxied, 5.0)
    await couch.start()
    try:
        yield couch
    finally:
        await couch.close()
        await runner.cleanup()
        await session.close()


def audio(data: bytes) -> list[Attachment]:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    return [Attachment("message.mp3", "audio/mpeg", len(data), chunks())]


async def test_a_create_couchdb_stored_before_answering_500_is_the_write_s_result(
    stores: Stores, account: Tenant,
) -> None:
    db = account_db(account.id).unencoded
    async with crashing_proxy(stores.couch.endpoint, store_first=True) as couch:
        doc: dict[str, Any] = {"_id": "crashed-create", "k": 1}
        rev = await couch.put_doc_with_attachments(db, doc, audio(b"x" * 1000))
    stored = await stores.couch.open_revs(db, "crashed-create")
    assert [leaf["_rev"] for leaf in stored] == [rev]
    assert stored[0]["_attachments"]["message.mp3"]["length"] == 1000


async def test_a_create_couchdb_did_not_store_stays_a_503_with_nothing_written(
    stores: Stores, account: Tenant,
) -> None:
    db = account_db(account.id).unencoded
    async with crashing_proxy(stores.couch.endpoint, store_first=False) as couch:
        with pytest.raises(errors.DatastoreError):
            await couch.put_doc_with_attachments(
                db, {"_id": "crashed-nothing", "k": 1}, audio(b"x" * 10))
    assert await stores.couch.open_revs(db, "crashed-nothing") == []


async def test_a_crashed_create_of_a_document_somebody_else_wrote_is_a_conflict(
    stores: Stores, account: Tenant,
) -> None:
    db = account_db(account.id).unencoded
    theirs: dict[str, Any] = {"_id": "crashed-theirs", "k": "theirs"}
    await stores.couch.put_doc(db, theirs)
    async with crashing_proxy(stores.couch.endpoint, store_first=False) as couch:
        with pytest.raises(DocConflict):
            await couch.put_doc_with_attachments(
                db, {"_id": "crashed-theirs", "k": "mine"}, audio(b"x" * 10))
    assert [leaf["_rev"] for leaf in await stores.couch.open_revs(db, "crashed-theirs")] == [
        theirs["_rev"]]
