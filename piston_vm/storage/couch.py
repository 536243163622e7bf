"""The CouchDB HTTP client: one shared aiohttp session, URL building, error mapping in one place.

aiocouch covers server-level chores (see storage/admin.py); the request paths here go straight to
CouchDB because aiocouch cannot stream attachments, query reduces or `_all_docs` of databases whose
names contain "/" (docs/storage.md 1.2), and because every extra round trip shows up in
the latency ratio against CouchDB itself.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar, cast
from urllib.parse import quote

import aiohttp
from yarl import URL

from piston_vm.core import errors
from piston_vm.core.config import CouchEndpoint
from piston_vm.core.metrics import Metrics

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]
T = TypeVar("T")

# Views may have to index many documents on first use; that is slow but not a fault, so their
# read timeout is long and a liveness ping (see _watched) catches a server that is gone.
VIEW_TIMEOUT_S = 600.0
MAX_CONNECTIONS = 100
LARGE_BODY_BYTES = 512 * 1024
# A multi-query request is answered one query after the other: splitting it into a few
# requests lets CouchDB work on them side by side (measured on 3.4.3 with 50 range reduces:
# 50 ms in one request, 33 ms in four), and caps how long any one request runs.
MULTI_QUERY_REQUESTS = 4
# CouchDB's [chttpd] max_db_number_for_dbs_info_req defaults to 100.
DBS_INFO_BATCH = 100
MULTI_QUERY_BATCH = 100
# PISTON_VM_COUCHDB_W: "all" (every copy, the default), "default" (CouchDB's own quorum, a
# majority) or a number of copies (docs/operations.md, "A CouchDB cluster").
WRITE_ALL_COPIES = "all"
WRITE_DEFAULT_QUORUM = "default"
MAX_REMEMBERED_DBS = 100_000
# How slowly the slowest copy may store a large attachment before its answer counts as late.
SLOWEST_COPY_BYTES_PER_S = 2_000_000


class StorageError(Exception):
    """Base for the few CouchDB outcomes that stores handle themselves."""


class DocNotFound(StorageError):
    pass


class DbNotFound(StorageError):
    def __init__(self, db: str) -> None:
        super().__init__(db)
        self.db = db


class DocConflict(StorageError):
    pass


class DbExists(StorageError):
    pass


class ViewMissing(StorageError):
    """A view query found no design document or view: someone removed what we installed."""

    def __init__(self, db: str, view: str) -> None:
        super().__init__(f"{db}: {view}")
        self.db = db
        self.view = view


class BodyIncomplete(StorageError):
    """An attachment stream ended before (or after) the length it declared: nothing was stored."""


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attachment of a multipart document write: its bytes arrive as `chunks`."""

    name: str
    content_type: str
    length: int
    chunks: AsyncIterator[bytes]


# Every CouchDB request quotes its database name (and usually a document id) again; the same
# few names recur, and urllib's quote showed in profiles of single reads.
@functools.lru_cache(maxsize=4096)
def quote_db(db: str) -> str:
    return quote(db, safe="")


@functools.lru_cache(maxsize=4096)
def quote_doc_id(doc_id: str) -> str:
    # "_design/x" keeps its slash: CouchDB routes design documents on the literal path.
    if doc_id.startswith("_design/"):
        return "_design/" + quote(doc_id[len("_design/") :], safe="")
    return quote(doc_id, safe="")


def json_param(value: Any) -> str:
    """View keys travel as JSON in the query string."""
    return json.dumps(value, separators=(",", ":"))


def outcome_of(exc: BaseException) -> str:
    """The `outcome` label of a failed operation (docs/operations.md, "Metrics"): `not_found`
    and `conflict` are answers the stores expect, `rejected` a request value CouchDB refused,
    `unreachable` no answer in time, `error` anything CouchDB itself failed at."""
    if isinstance(exc, DocNotFound | DbNotFound | ViewMissing):
        return "not_found"
    if isinstance(exc, DocConflict | DbExists):
        return "conflict"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, errors.ApiError):
        if exc.message == "datastore_unreachable":
            return "unreachable"
        if exc.status < HTTPStatus.INTERNAL_SERVER_ERROR:
            return "rejected"
    return "error"


Operation = TypeVar("Operation", bound=Callable[..., Awaitable[Any]])


def _observed(operation: str) -> Callable[[Operation], Operation]:
    """Time the client method and count its outcome when the client has metrics."""

    def wrap(method: Operation) -> Operation:
        @functools.wraps(method)
        async def observed(self: CouchClient, *args: Any, **kwargs: Any) -> Any:
            metrics = self.metrics
            if metrics is None:
                return await method(self, *args, **kwargs)
            started = time.perf_counter()
            outcome = "ok"
            try:
                return await method(self, *args, **kwargs)
            except BaseException as exc:
                outcome = outcome_of(exc)
                raise
            finally:
                metrics.couch_request(operation, outcome, time.perf_counter() - started)

        return cast(Operation, observed)

    return wrap


class CouchClient:
    """A thin, typed CouchDB client; every store goes through one instance."""

    def __init__(
        self,
        endpoint: CouchEndpoint,
        timeout_s: float,
        write_quorum: str = WRITE_ALL_COPIES,
        metrics: Metrics | None = None,
    ) -> None:
        self.endpoint = endpoint
        # Counts and times every operation (piston_vm_couchdb_*); None costs nothing.
        self.metrics = metrics if metrics is not None and metrics.enabled else None
        self.timeout_s = timeout_s
        self.write_quorum = write_quorum
        # Copies (`n`) of each database written to, read once per process for write_quorum "all".
        self._copies: dict[str, int] = {}
        # Writes CouchDB accepted with fewer copies than asked (202): a node is down or slow.
        self.writes_short_of_quorum = 0
        self._base = URL(endpoint.url)
        self._base_text = str(self._base)
        headers = {"Accept": "application/json"}
        if endpoint.user is not None:
            token = f"{endpoint.user}:{endpoint.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._doc_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout_s, sock_read=timeout_s
        )
        self._view_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout_s, sock_read=max(timeout_s, VIEW_TIMEOUT_S)
        )

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=MAX_CONNECTIONS)
        self._session = aiohttp.ClientSession(
            headers=self._headers, connector=connector, timeout=self._doc_timeout
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("CouchClient used before start()")
        return self._session

    # -- URLs ------------------------------------------------------------------------------

    def url(self, db: str, *parts: str) -> URL:
        path = "/" + quote_db(db)
        if parts:
            path += "/" + "/".join(parts)
        # encoded=True keeps %2F as sent; yarl would otherwise normalise it.
        return URL(self._base_text + path, encoded=True)

    def doc_url(self, db: str, doc_id: str) -> URL:
        return self.url(db, quote_doc_id(doc_id))

    def attachment_url(self, db: str, doc_id: str, name: str) -> URL:
        return self.url(db, quote_doc_id(doc_id), quote(name, safe=""))

    # -- requests --------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: URL,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        timeout: aiohttp.ClientTimeout | None = None,
        db: str | None = None,
    ) -> tuple[int, Any]:
        """One JSON request; returns (status, decoded body). Raises for >= 400."""
        kwargs: dict[str, Any] = {}
        if body is not None:
            encoded = json.dumps(body, separators=(",", ":")).encode()
            # aiohttp writes a bytes body in one go; a large one goes as a stream instead so
            # the loop keeps serving other requests meanwhile.
            kwargs["data"] = io.BytesIO(encoded) if len(encoded) > LARGE_BODY_BYTES else encoded
            kwargs["headers"] = {"Content-Type": "application/json"}
        try:
            async with self.session.request(
                method, url, params=params, timeout=timeout or self._doc_timeout, **kwargs
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            log.warning("CouchDB %s %s unreachable: %r", method, url.path, exc)
            raise unreachable(exc) from exc
        decoded: Any = json.loads(raw) if raw else None
        if status >= 400:
            raise self._error(status, decoded, db)
        return status, decoded

    def _write_timeout(self, body_bytes: int) -> aiohttp.ClientTimeout:
        """A large write's answer comes only once every copy has stored it (on a cluster, after
        the coordinator forwarded the bytes): allow for that on top of the normal timeout."""
        extra_s = body_bytes / SLOWEST_COPY_BYTES_PER_S
        return aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s,
                                     sock_read=self.timeout_s + extra_s)

    async def write_params(self, db: str) -> dict[str, str]:
        """The `w` of a document write to `db` (docs/operations.md, "A CouchDB cluster").

        On a cluster a write answers once a quorum of copies has it, and a view read right after
        may be served by a copy that does not yet: with every copy written before the answer, a
        list after the service's own write always shows it.
        """
        if self.write_quorum == WRITE_DEFAULT_QUORUM:
            return {}
        if self.write_quorum != WRITE_ALL_COPIES:
            return {"w": self.write_quorum}
        copies = await self._known_copies(db)
        return {"w": str(copies)} if copies > 1 else {}

    async def read_params(self, db: str) -> dict[str, str]:
        """The `r` of a document read of `db`: every copy, on a cluster with write_quorum "all".

        A write that lost a race on a cluster leaves its revision on some copies until it is
        removed (confirm_accepted_write); a read of a majority could take it for the document's
        current revision, and a write built on it would undo the winner. Reading every copy
        sees all revisions and so the winner.
        """
        if self.write_quorum != WRITE_ALL_COPIES:
            return {}
        copies = await self._known_copies(db)
        return {"r": str(copies)} if copies > 1 else {}

    async def _known_copies(self, db: str) -> int:
        copies = self._copies.get(db)
        if copies is None:
            try:
                _, info = await self.request("GET", self.url(db), db=db)
            except DbNotFound:
                return 0  # not remembered: the database may be created next
            copies = _copies_in(info)
            if len(self._copies) >= MAX_REMEMBERED_DBS:
                self._copies.clear()
            self._copies[db] = copies
        return copies

    async def confirm_accepted_write(
        self, status: int, db: str, doc_id: str, rev: str, written: JsonObject | None = None
    ) -> None:
        """Make sure a write CouchDB answered 202 really is the document's one current revision.

        A cluster answers 202 ("accepted") when fewer copies than asked took the write: a node
        is down, or another writer changed the document at the same moment and some copies took
        that write instead. Two racing writes can then both be accepted, each by some copies,
        and the document has two live leaves: a compare-and-swap that both writers won. Every
        copy has answered before the 202 comes back (with `w` = all copies), so reading all of
        them shows both leaves; both writers apply CouchDB's own winner rule, the loser removes
        its leaf and hears a conflict, as on a single node (docs/operations.md, "A CouchDB
        cluster").

        `written` is the body as sent (with the `_rev` it was based on): a winner is copied to
        every copy at once, see _spread_winner.
        """
        if status != HTTPStatus.ACCEPTED:
            return
        self.writes_short_of_quorum += 1
        log.warning("CouchDB stored %s/%s on fewer copies than asked (202): a node is down or "
                    "another write raced it; checking its revisions", db, doc_id)
        leaves = await self._leaf_revisions(db, doc_id)
        if not leaves:
            return
        winner = max(leaves, key=lambda leaf: _winning_order(leaf[0], leaf[1]))
        # Our revision won if it is the winner or in the winner's history (a later write of
        # someone else's built on it).
        if rev == winner[1] or rev in winner[2]:
            if written is not None and rev == winner[1]:
                await self._spread_winner(db, doc_id, rev, written)
            return
        if any(leaf[1] == rev and not leaf[0] for leaf in leaves):
            # Removed from every copy before the conflict is answered: a copy still holding the
            # loser live would serve it to views, and would make it the document again once the
            # winner is deleted (a move's tombstone), resurrecting what was moved.
            params = {"rev": rev, **await self.write_params(db)}
            with suppress(DocNotFound, DocConflict):
                await self.request("DELETE", self.doc_url(db, doc_id), params=params, db=db)
        log.warning("CouchDB write %s/%s lost a race on a cluster: conflict", db, doc_id)
        raise DocConflict(f"{doc_id}: another write won")

    async def _spread_winner(self, db: str, doc_id: str, rev: str, written: JsonObject) -> None:
        """Store the winning revision of a 202 race on every copy now, as replication would.

        A copy that took the loser's write holds, once the loser has removed its leaf, neither
        revision until CouchDB's internal replication brings the winner (milliseconds, under
        load seconds): a list served from that copy would miss the document. `_bulk_docs` with
        `new_edits: false` stores the revision as it is; a copy that has it already is unchanged.
        """
        position, _, digest = rev.partition("-")
        parent = written.get("_rev")
        ids = [digest]
        if isinstance(parent, str) and parent.partition("-")[0] == str(int(position) - 1):
            ids.append(parent.partition("-")[2])
        doc = {**written, "_id": doc_id, "_rev": rev,
               "_revisions": {"start": int(position), "ids": ids}}
        body: JsonObject = {"docs": [doc], "new_edits": False}
        if "w" in (params := await self.write_params(db)):
            body["w"] = int(params["w"])
        try:
            await self.request("POST", self.url(db, "_bulk_docs"), body=body, db=db)
        except Exception as exc:  # internal replication still brings it
            log.info("could not copy winning revision %s/%s %s to every copy: %r",
                     db, doc_id, rev, exc)

    async def _leaf_revisions(self, db: str, doc_id: str) -> list[tuple[bool, str, set[str]]]:
        """(deleted, rev, earlier revs) of every leaf revision, read from every copy."""
        params = {"open_revs": "all", "revs": "true", **await self.read_params(db)}
        try:
            _, result = await self.request("GET", self.doc_url(db, doc_id), params=params, db=db)
        except (DocNotFound, DbNotFound):
            return []
        leaves = []
        for entry in result if isinstance(result, list) else []:
            doc = entry.get("ok") if isinstance(entry, dict) else None
            if not isinstance(doc, dict) or not isinstance(doc.get("_rev"), str):
                continue
            history = doc.get("_revisions") or {}
            start, ids = history.get("start"), history.get("ids")
            earlier = ({f"{start - n}-{rev_id}" for n, rev_id in enumerate(ids)}
                       if isinstance(start, int) and isinstance(ids, list) else set())
            leaves.append((bool(doc.get("_deleted")), doc["_rev"], earlier))
        return leaves

    def _error(self, status: int, body: Any, db: str | None) -> Exception:
        error = body.get("error", "") if isinstance(body, dict) else ""
        reason = body.get("reason", "") if isinstance(body, dict) else ""
        if status == HTTPStatus.NOT_FOUND:
            if "database" in str(reason).lower() or reason == "no_db_file":
                return DbNotFound(db or "")
            return DocNotFound(reason)
        if status == HTTPStatus.CONFLICT:
            return DocConflict(reason)
        if status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
            return errors.document_too_large()
        if status == HTTPStatus.PRECONDITION_FAILED and error == "file_exists":
            return DbExists(db or "")
        if status == HTTPStatus.BAD_REQUEST:
            # A value of the client's that CouchDB cannot parse (the edge bounds the known ones,
            # docs/decisions.md N-8): the client's mistake, not an outage.
            log.warning("CouchDB refused a request value: %s %s", error, reason)
            return errors.invalid_request(str(reason or error or status))
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            log.error("CouchDB refused our credentials: %s %s", error, reason)
        return errors.datastore_fault(str(error or status))

    # -- documents -------------------------------------------------------------------------

    @_observed("get_doc")
    async def get_doc(self, db: str, doc_id: str, **params: str) -> JsonObject | None:
        """The document, or None when it (or its database) does not exist."""
        params = {**await self.read_params(db), **params}
        try:
            _, doc = await self.request("GET", self.doc_url(db, doc_id), params=params, db=db)
        except (DocNotFound, DbNotFound):
            return None
        return dict(doc)

    @_observed("put_doc")
    async def put_doc(self, db: str, doc: JsonObject) -> str:
        """Save `doc` (creating or updating by its `_rev`); sets and returns the new `_rev`."""
        url = self.doc_url(db, doc["_id"])
        status, result = await self.request(
            "PUT", url, params=await self.write_params(db), body=doc, db=db)
        rev = str(result["rev"])
        await self.confirm_accepted_write(status, db, doc["_id"], rev, written=doc)
        doc["_rev"] = rev
        return rev

    @_observed("put_doc_with_attachments")
    async def put_doc_with_attachments(
        self, db: str, doc: JsonObject, attachments: Sequence[Attachment]
    ) -> str:
        """Save `doc` and its attachments in one atomic write; sets and returns the new `_rev`.

        CouchDB's `multipart/related` document PUT: the JSON first, then each attachment's bytes,
        streamed. The attachments listed replace every attachment the document had, so an audio
        replace drops the old recording in the same revision. CouchDB stores the revision only
        once the whole body has arrived: a client that dies mid-stream leaves nothing behind.
        """
        boundary = secrets.token_hex(16)
        stubs = {a.name: {"follows": True, "content_type": a.content_type, "length": a.length}
                 for a in attachments}
        head = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n".encode()
                + json.dumps({**doc, "_attachments": stubs}, separators=(",", ":")).encode())
        part_head = f"\r\n--{boundary}\r\n\r\n".encode()
        tail = f"\r\n--{boundary}--".encode()
        total = len(head) + len(tail) + sum(len(part_head) + a.length for a in attachments)

        # aiohttp reports a body that failed as a connection error; remember the real cause.
        failures: list[BaseException] = []

        async def body() -> AsyncIterator[bytes]:
            yield head
            for attachment in attachments:
                yield part_head
                try:
                    async for chunk in _exactly(attachment.chunks, attachment.length):
                        yield chunk
                except Exception as exc:
                    failures.append(exc)
                    raise
            yield tail

        headers = {"Content-Type": f'multipart/related; boundary="{boundary}"',
                   "Content-Length": str(total)}
        url = self.doc_url(db, doc["_id"])
        params = await self.write_params(db)
        try:
            async with self.session.put(url, params=params, data=body(), headers=headers,
                                        timeout=self._write_timeout(total)) as resp:
                raw = await resp.read()
                status = resp.status
        except Exception as exc:
            if failures:
                raise failures[0] from None
            if not isinstance(exc, TimeoutError | aiohttp.ClientConnectionError):
                raise
            log.warning("CouchDB PUT %s unreachable: %r", doc["_id"], exc)
            raise unreachable(exc) from exc
        finally:
            for attachment in attachments:
                closer = getattr(attachment.chunks, "aclose", None)
                if closer is not None:
                    with suppress(Exception):
                        await closer()
        decoded: Any = json.loads(raw) if raw else None
        if status == HTTPStatus.INTERNAL_SERVER_ERROR and "_rev" not in doc:
            # CouchDB 3.4's cluster coordinator can crash (500 unknown_error, function_clause in
            # fabric_doc_update) when multipart writes of one new document race: the outcome is
            # unknown, and the document may well be stored. What the copies hold decides.
            log.warning("CouchDB PUT %s/%s answered 500; reading what was stored", db, doc["_id"])
            stored = await self._stored_creation(db, doc, attachments)
            if stored is not None:
                doc["_rev"] = stored
                return stored
        if status >= 400:
            raise self._error(status, decoded, db)
        rev = str(decoded["rev"])
        await self.confirm_accepted_write(status, db, doc["_id"], rev)
        doc["_rev"] = rev
        return rev

    async def _stored_creation(
        self, db: str, doc: JsonObject, attachments: Sequence[Attachment]
    ) -> str | None:
        """After a failed create of `doc`: the revision of it that is the document now, if any.

        Leaves with exactly this body and attachments are this write (or an identical one, which
        is as good). If one of them is the winner it is the write's result, and the other such
        leaves are removed, so the document has one revision as after a clean create. If the
        winner is somebody else's, ours are removed and the create is a conflict; with nothing
        stored, None (the original error stands).
        """
        leaves = await self.open_revs(db, doc["_id"])
        live = [leaf for leaf in leaves if not leaf.get("_deleted")]
        ours = [leaf for leaf in live if _same_creation(leaf, doc, attachments)]
        if not live:
            return None
        winner = max(live, key=lambda leaf: _winning_order(False, str(leaf["_rev"])))
        params = await self.write_params(db)
        for leaf in ours:
            if leaf is not winner:
                with suppress(DocNotFound, DocConflict):
                    await self.request("DELETE", self.doc_url(db, doc["_id"]),
                                       params={"rev": str(leaf["_rev"]), **params}, db=db)
        if winner in ours:
            return str(winner["_rev"])
        raise DocConflict(f"{doc['_id']}: another write won")

    @_observed("open_revs")
    async def open_revs(self, db: str, doc_id: str) -> list[JsonObject]:
        """Every leaf revision of a document, deleted ones (tombstones) included, with bodies."""
        try:
            _, result = await self.request(
                "GET", self.doc_url(db, doc_id),
                params={"open_revs": "all", **await self.read_params(db)}, db=db)
        except (DocNotFound, DbNotFound):
            return []
        if not isinstance(result, list):
            return []
        return [dict(entry["ok"]) for entry in result
                if isinstance(entry, dict) and isinstance(entry.get("ok"), dict)]

    @_observed("delete_doc")
    async def delete_doc(self, db: str, doc_id: str, rev: str) -> None:
        url = self.doc_url(db, doc_id)
        status, result = await self.request(
            "DELETE", url, params={"rev": rev, **await self.write_params(db)}, db=db)
        await self.confirm_accepted_write(status, db, doc_id, str(result.get("rev", "")))

    @_observed("bulk_docs")
    async def bulk_docs(self, db: str, docs: Sequence[JsonObject]) -> list[JsonObject]:
        """Save many documents; results are matched to the request by id, not by position."""
        if not docs:
            return []
        url = self.url(db, "_bulk_docs")
        # `_bulk_docs` takes `w` in its body, not its query string.
        body: JsonObject = {"docs": list(docs), **await self.write_params(db)}
        if "w" in body:
            body["w"] = int(body["w"])
        status, results = await self.request("POST", url, body=body, db=db)
        sent = {str(doc.get("_id")): doc for doc in docs}
        settled = []
        for result in results:
            entry = dict(result)
            if "rev" in entry and "error" not in entry:
                try:
                    await self.confirm_accepted_write(
                        status, db, str(entry.get("id")), str(entry["rev"]),
                        written=sent.get(str(entry.get("id"))))
                except DocConflict:
                    entry = {"id": entry.get("id"), "error": "conflict",
                             "reason": "Document update conflict."}
            settled.append(entry)
        return settled

    @_observed("all_docs")
    async def all_docs(self, db: str, keys: Sequence[str]) -> list[JsonObject]:
        """Rows of `_all_docs` with include_docs for the given ids (missing ids give error rows).

        On a cluster `_all_docs` reads a majority of copies and takes no `r`; `_bulk_get`
        does, so the documents are read from every copy there (see read_params).
        """
        quorum = await self.read_params(db)
        if quorum:
            return await self._bulk_get_rows(db, keys, quorum)
        _, result = await self.request(
            "POST",
            self.url(db, "_all_docs"),
            params={"include_docs": "true"},
            body={"keys": list(keys)},
            db=db,
        )
        return [dict(r) for r in result["rows"]]

    async def _bulk_get_rows(
        self, db: str, keys: Sequence[str], quorum: Mapping[str, str]
    ) -> list[JsonObject]:
        _, result = await self.request(
            "POST", self.url(db, "_bulk_get"), params=quorum,
            body={"docs": [{"id": key} for key in keys]}, db=db)
        rows: list[JsonObject] = []
        for key, entry in zip(keys, result.get("results", []), strict=False):
            # Without a `rev`, `_bulk_get` answers every leaf revision (a race's removed loser
            # among them): the document is CouchDB's winner of those.
            docs = entry.get("docs") if isinstance(entry, dict) else None
            leaves = [d["ok"] for d in docs or [] if isinstance(d, dict)
                      and isinstance(d.get("ok"), dict) and isinstance(d["ok"].get("_rev"), str)]
            doc = max(leaves, default=None, key=lambda leaf: _winning_order(
                bool(leaf.get("_deleted")), leaf["_rev"]))
            if isinstance(doc, dict) and not doc.get("_deleted"):
                rows.append({"id": key, "key": key, "value": {"rev": doc.get("_rev")},
                             "doc": doc})
            else:
                rows.append({"key": key, "error": "not_found"})
        return rows

    @_observed("view")
    async def view(
        self,
        db: str,
        design: str,
        view: str,
        params: Mapping[str, Any] | None = None,
        keys: Sequence[Any] | None = None,
    ) -> JsonObject:
        """Query a view; key-like parameters are JSON-encoded here, booleans lowered."""
        query: dict[str, str] = {}
        for name, value in (params or {}).items():
            if name in ("key", "startkey", "endkey", "start_key", "end_key"):
                query[name] = json_param(value)
            elif isinstance(value, bool):
                query[name] = "true" if value else "false"
            else:
                query[name] = str(value)
        url = self.url(db, "_design", quote(design, safe=""), "_view", quote(view, safe=""))
        if keys is not None:
            call = self.request("POST", url, params=query, body={"keys": list(keys)},
                                timeout=self._view_timeout, db=db)
        else:
            call = self.request("GET", url, params=query, timeout=self._view_timeout, db=db)
        try:
            _, result = await self._watched(call)
        except DocNotFound:
            raise ViewMissing(db, f"{design}/{view}") from None
        return dict(result)

    @_observed("view_queries")
    async def view_queries(
        self, db: str, design: str, view: str, queries: Sequence[Mapping[str, Any]]
    ) -> list[JsonObject]:
        """Several queries of one view in as few requests as CouchDB allows; one result each.

        CouchDB 3's `POST …/_view/NAME/queries` takes the queries as JSON (keys unencoded).
        The queries go in a few batches side by side (MULTI_QUERY_REQUESTS).
        """
        url = self.url(db, "_design", quote(design, safe=""), "_view", quote(view, safe=""),
                       "queries")

        async def batch(part: Sequence[Mapping[str, Any]]) -> list[JsonObject]:
            call = self.request("POST", url, body={"queries": list(part)},
                                timeout=self._view_timeout, db=db)
            try:
                _, result = await self._watched(call)
            except DocNotFound:
                raise ViewMissing(db, f"{design}/{view}") from None
            return [dict(r) for r in result["results"]]

        size = min(MULTI_QUERY_BATCH, max(1, -(-len(queries) // MULTI_QUERY_REQUESTS)))
        batches = await asyncio.gather(*(
            batch(queries[i : i + size]) for i in range(0, len(queries), size)))
        return [result for part in batches for result in part]

    @_observed("dbs_info")
    async def update_seqs(self, dbs: Sequence[str]) -> dict[str, str | None]:
        """Each database's `update_seq` (None: no such database), from `POST /_dbs_info`.

        One request asks for many databases (CouchDB 2.2+, at most DBS_INFO_BATCH each): the
        count cache validates every month of a window with it (docs/storage.md 7.3).
        """
        url = URL(self._base_text + "/_dbs_info", encoded=True)

        async def batch(part: Sequence[str]) -> list[Any]:
            _, result = await self.request("POST", url, body={"keys": list(part)})
            return list(result)

        parts = await asyncio.gather(*(
            batch(dbs[i : i + DBS_INFO_BATCH]) for i in range(0, len(dbs), DBS_INFO_BATCH)))
        seqs: dict[str, str | None] = {db: None for db in dbs}
        for row in (row for part in parts for row in part):
            info = row.get("info") if isinstance(row, dict) else None
            if isinstance(info, dict) and row.get("key") in seqs:
                seqs[str(row["key"])] = _comparable_seq(info.get("update_seq"))
        return seqs

    async def _watched(self, call: Awaitable[T]) -> T:
        """Let a slow request run (a view may be indexing) only while CouchDB still answers.

        A view's first build can take minutes, so it gets no short read timeout; instead CouchDB
        is pinged every `timeout_s`, and a server that stopped answering ends the wait with 503.
        """
        task: asyncio.Future[T] = asyncio.ensure_future(call)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.timeout_s)
                if done:
                    return task.result()
                if not await self.ping():
                    raise errors.datastore_unreachable()
        finally:
            if not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await task

    # -- feeds (the event engine, docs/events.md) ------------------------------------------

    @_observed("db_updates")
    async def db_updates(
        self, since: str, wait_s: float, limit: int = 1000
    ) -> tuple[list[JsonObject], str]:
        """Databases that changed after `since` ("now": only the current position), waiting up
        to `wait_s` for one (0: answer at once). Returns (rows, last_seq)."""
        params = {"since": since, "limit": str(limit),
                  "feed": "longpoll" if wait_s > 0 else "normal"}
        if wait_s > 0:
            params["timeout"] = str(int(wait_s * 1000))
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout_s, sock_read=wait_s + self.timeout_s)
        _, body = await self.request(
            "GET", URL(self._base_text + "/_db_updates"), params=params, timeout=timeout)
        return [dict(row) for row in body.get("results") or []], str(body.get("last_seq"))

    @_observed("changes")
    async def changes(
        self, db: str, since: str, limit: int, wait_s: float = 0.0
    ) -> tuple[list[JsonObject], str]:
        """Changes of `db` after `since`, with the winning revision of each document
        (include_docs). With `wait_s`, a long poll that waits for the first change."""
        params = {"since": since, "limit": str(limit), "include_docs": "true",
                  "feed": "longpoll" if wait_s > 0 else "normal"}
        if wait_s > 0:
            params["timeout"] = str(int(wait_s * 1000))
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout_s,
            sock_read=max(wait_s + self.timeout_s, VIEW_TIMEOUT_S if wait_s == 0 else 0))
        _, body = await self.request(
            "GET", self.url(db, "_changes"), params=params, timeout=timeout, db=db)
        return [dict(row) for row in body.get("results") or []], str(body.get("last_seq"))

    # -- databases -------------------------------------------------------------------------

    @_observed("create_db")
    async def create_db(self, db: str) -> bool:
        """Create a database; False when it already existed (a race with another writer)."""
        try:
            await self.request("PUT", self.url(db), db=db)
        except DbExists:
            return False
        return True

    @_observed("db_exists")
    async def db_exists(self, db: str) -> bool:
        try:
            async with self.session.head(self.url(db)) as resp:
                status = resp.status
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise unreachable(exc) from exc
        if status == HTTPStatus.NOT_FOUND:
            return False
        if status >= 400:
            raise errors.datastore_fault(str(status))
        return True

    @_observed("all_dbs")
    async def all_dbs(self, start_key: str, end_key: str) -> list[str]:
        _, names = await self.request(
            "GET",
            URL(str(self._base) + "/_all_dbs"),
            params={"start_key": json_param(start_key), "end_key": json_param(end_key)},
        )
        return [str(n) for n in names]

    @_observed("probe")
    async def probe(self, db: str, doc_id: str) -> int | None:
        """The status CouchDB answers a document GET with, None when it does not answer: one
        request that needs the credentials (databases are admin-only by default) and tells
        whether the document is there (the readiness check, docs/operations.md "Probes")."""
        try:
            async with self.session.get(self.doc_url(db, doc_id)) as resp:
                await resp.read()
                return resp.status
        except (TimeoutError, aiohttp.ClientConnectionError):
            return None

    @_observed("ping")
    async def ping(self) -> bool:
        """True when CouchDB answers `GET /_up` (or `/` on servers without it)."""
        try:
            async with self.session.get(URL(str(self._base) + "/_up")) as resp:
                return resp.status < 400
        except (TimeoutError, aiohttp.ClientConnectionError):
            return False

    # -- attachments -----------------------------------------------------------------------

    @asynccontextmanager
    async def open_attachment(
        self,
        db: str,
        doc_id: str,
        name: str,
        byte_range: tuple[int, int] | None = None,
        rev: str | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streaming response for one attachment (caller reads `.content` in chunks).

        With `rev`, the bytes are those of that revision even if the document changed since.
        """
        headers = {"Accept": "*/*"}
        if byte_range is not None:
            headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        started = time.perf_counter()
        # Timed to the response head: how long the bytes then take is the reader's pace.
        opened = False
        try:
            async with self.session.get(
                self.attachment_url(db, doc_id, name), headers=headers,
                params={"rev": rev} if rev else None,
            ) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    raise self._error(resp.status, json.loads(raw) if raw else None, db)
                opened = True
                if self.metrics is not None:
                    self.metrics.couch_request("open_attachment", "ok",
                                               time.perf_counter() - started)
                yield resp
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            failure: BaseException = unreachable(exc)
            if not opened and self.metrics is not None:
                self.metrics.couch_request("open_attachment", outcome_of(failure),
                                           time.perf_counter() - started)
            raise failure from exc
        except Exception as exc:
            if not opened and self.metrics is not None:
                self.metrics.couch_request("open_attachment", outcome_of(exc),
                                           time.perf_counter() - started)
            raise

    @_observed("put_attachment")
    async def put_attachment(
        self,
        db: str,
        doc_id: str,
        rev: str,
        name: str,
        content_type: str,
        body: Any,
        length: int | None = None,
    ) -> str:
        """Standalone attachment PUT (never inline base64); `body` may be an async iterator."""
        headers = {"Content-Type": content_type}
        if length is not None:
            headers["Content-Length"] = str(length)
        url = self.attachment_url(db, doc_id, name)
        params = {"rev": rev, **await self.write_params(db)}
        try:
            async with self.session.put(
                url,
                params=params,
                data=body,
                headers=headers,
                timeout=self._write_timeout(length or 0),
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise unreachable(exc) from exc
        finally:
            # aiohttp stops reading a body iterator once Content-Length bytes are sent; close
            # it so the file behind it is released now, not whenever the collector runs.
            closer = getattr(body, "aclose", None)
            if closer is not None:
                await closer()
        decoded: Any = json.loads(raw) if raw else None
        if status >= 400:
            raise self._error(status, decoded, db)
        new_rev = str(decoded["rev"])
        await self.confirm_accepted_write(status, db, doc_id, new_rev)
        return new_rev


def _comparable_seq(update_seq: Any) -> str:
    """The part of a database's `update_seq` that changes with every write, as text.

    CouchDB's is `N-<packed>`: N is the sum of the update sequences of the shard copies that
    answered, the packed part names those copies. A cluster answers each request from whichever
    copy of a range is first, so the packed part differs between two reads of an unchanged
    database while N does not (every write raises the sequence of each copy it reaches). The
    bundled server's is a plain number.
    """
    text = str(update_seq)
    number, dash, _ = text.partition("-")
    if dash and number.isdigit():
        return number
    return json.dumps(update_seq)


def _copies_in(info: Any) -> int:
    """`n` of a database from its info; 0 for a server that does not say."""
    cluster = info.get("cluster") if isinstance(info, dict) else None
    copies = cluster.get("n") if isinstance(cluster, dict) else None
    return copies if isinstance(copies, int) else 0


def _same_creation(stored: JsonObject, doc: JsonObject, attachments: Sequence[Attachment]) -> bool:
    """Whether a stored revision has exactly the body and attachments a create sent."""
    def body(d: JsonObject) -> JsonObject:
        return {k: v for k, v in d.items() if not k.startswith("_")}

    stubs = stored.get("_attachments") or {}
    sent = {a.name: a.length for a in attachments}
    return (body(stored) == body(doc) and isinstance(stubs, dict)
            and {name: (stub or {}).get("length") for name, stub in stubs.items()} == sent)


def _winning_order(deleted: bool, rev: str) -> tuple[bool, int, str]:
    """CouchDB's winner among leaf revisions: live before deleted, then the longest history,
    then the greater revision hash (lowercase hex sorts as its bytes do)."""
    position, _, digest = rev.partition("-")
    return (not deleted, int(position) if position.isdigit() else 0, digest)


def unreachable(exc: BaseException) -> errors.DatastoreError:
    """A 503 that says whether CouchDB timed out or could not be reached at all."""
    return errors.datastore_unreachable(timed_out=isinstance(exc, TimeoutError))


async def _exactly(chunks: AsyncIterator[bytes], length: int) -> AsyncIterator[bytes]:
    """Pass `chunks` through, failing the write when they do not add up to `length` bytes."""
    sent = 0
    async for chunk in chunks:
        sent += len(chunk)
        if sent > length:
            raise BodyIncomplete(f"attachment longer than its declared {length} bytes")
        yield chunk
    if sent != length:
        raise BodyIncomplete(f"attachment ended after {sent} of {length} bytes")
