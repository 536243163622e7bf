"""The bundled CouchDB-protocol dev server, exercised through HTTP (piston_vm.storage.devserver)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from piston_vm.storage import devserver

ADMIN = ("admin", "s3cret:pw")
SLASH_DB = "account/3a/63/rest"
REPO_ROOT = Path(__file__).resolve().parent.parent
SLASH_PATH = "/" + quote(SLASH_DB, safe="")  # /account%2F3a%2F63%2Frest


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AUTH = basic(*ADMIN)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("devserver-data")


@pytest.fixture(scope="module")
async def server(data_dir: Path) -> AsyncIterator[devserver.DevServer]:
    started = await devserver.start_devserver(data_dir=data_dir, admin=ADMIN)
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def http(server: devserver.DevServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=server.url, headers=AUTH) as session:
        yield session


async def json_of(resp: aiohttp.ClientResponse) -> Any:
    # aiohttp's json() insists on an application/json content type: that is the point.
    return await resp.json()


async def create_db(http: aiohttp.ClientSession, path: str) -> None:
    async with http.put(path) as resp:
        assert resp.status == 201, await resp.text()


async def assert_alive(server: devserver.DevServer, http: aiohttp.ClientSession) -> None:
    assert server.process.returncode is None
    async with http.get("/_up") as resp:
        assert resp.status == 200


# --- 1. database names --------------------------------------------------------------------


async def test_slash_names_kept_verbatim_and_stored_percent_encoded(
    http: aiohttp.ClientSession, data_dir: Path
) -> None:
    await create_db(http, SLASH_PATH)
    async with http.get("/_all_dbs") as resp:
        assert SLASH_DB in await json_of(resp)
    async with http.get(SLASH_PATH) as resp:
        assert (await json_of(resp))["db_name"] == SLASH_DB
    stored = set(await asyncio.to_thread(os.listdir, data_dir))
    assert "account%2F3a%2F63%2Frest" in stored
    assert not any(name.startswith("account3a") or name == "account" for name in stored)

    # Every kind of path under the encoded name works.
    async with http.put(f"{SLASH_PATH}/doc1", json={"kind": "x", "n": 1}) as resp:
        assert resp.status == 201
        rev = (await json_of(resp))["rev"]
    async with http.put(f"{SLASH_PATH}/doc1/note.txt?rev={rev}", data=b"hi",
                        headers={"Content-Type": "text/plain"}) as resp:
        assert resp.status == 201
    async with http.get(f"{SLASH_PATH}/doc1/note.txt") as resp:
        assert await resp.read() == b"hi"
    ddoc = {"views": {"by_kind": {"map": "function (d) { if (d.kind) emit(d.kind, d.n); }"}}}
    async with http.put(f"{SLASH_PATH}/_design/x", json=ddoc) as resp:
        assert resp.status == 201
    async with http.get(f"{SLASH_PATH}/_design/x/_view/by_kind") as resp:
        assert [r["id"] for r in (await json_of(resp))["rows"]] == ["doc1"]
    async with http.post(f"{SLASH_PATH}/_bulk_docs", json={"docs": [{"_id": "doc2"}]}) as resp:
        assert resp.status == 201
    async with http.get(f"{SLASH_PATH}/_all_docs") as resp:
        ids = [r["id"] for r in (await json_of(resp))["rows"]]
        assert ids == ["_design/x", "doc1", "doc2"]
    async with http.get(f"{SLASH_PATH}/_changes") as resp:
        assert len((await json_of(resp))["results"]) == 3
    async with http.post(f"{SLASH_PATH}/_find", json={"selector": {"kind": "x"}}) as resp:
        assert [d["_id"] for d in (await json_of(resp))["docs"]] == ["doc1"]
    security = {"admins": {"names": [], "roles": []}, "members": {"names": ["a"], "roles": []}}
    async with http.put(f"{SLASH_PATH}/_security", json=security) as resp:
        assert resp.status == 200
    async with http.get(f"{SLASH_PATH}/_security") as resp:
        assert await json_of(resp) == security


@pytest.mark.parametrize("name", ["Upper", "1digit", "sp ace", "dot.name", "-dash", "a%b"])
async def test_illegal_database_names_rejected(http: aiohttp.ClientSession, name: str) -> None:
    async with http.put("/" + quote(name, safe="")) as resp:
        assert resp.status == 400
        assert (await json_of(resp))["error"] == "illegal_database_name"


async def test_create_existing_missing_and_delete(http: aiohttp.ClientSession) -> None:
    await create_db(http, "/lifecycle")
    async with http.put("/lifecycle") as resp:
        assert resp.status == 412
        assert (await json_of(resp))["error"] == "file_exists"
    async with http.get("/nodb/_design/x/_view/v") as resp:
        assert resp.status == 404
        assert (await json_of(resp))["error"] == "not_found"
    async with http.delete("/lifecycle") as resp:
        assert resp.status == 200
    async with http.get("/lifecycle") as resp:
        assert resp.status == 404
    async with http.get("/_all_dbs") as resp:
        assert "lifecycle" not in await json_of(resp)
    await create_db(http, "/_users")


# --- 2. content types, 3. compression ------------------------------------------------------


@pytest.mark.parametrize("accept", ["text/html", "*/*", "text/plain", None])
async def test_json_content_type_whatever_the_accept_header(
    http: aiohttp.ClientSession, accept: str | None
) -> None:
    headers = {"Accept": accept} if accept else {}
    for path in ["/_all_dbs", "/nodb", "/_up"]:
        async with http.get(path, headers=headers) as resp:
            assert resp.content_type == "application/json", path
            await resp.json()


async def test_attachment_keeps_content_type_and_length(http: aiohttp.ClientSession) -> None:
    await create_db(http, "/atts")
    async with http.put("/atts/d", json={}) as resp:
        rev = (await json_of(resp))["rev"]
    payload = os.urandom(3 * 1024 * 1024)
    async with http.put(f"/atts/d/blob.bin?rev={rev}", data=io.BytesIO(payload),
                        headers={"Content-Type": "application/x-thing"}) as resp:
        assert resp.status == 201
    async with http.get("/atts/d/blob.bin", headers={"Accept": "application/json"}) as resp:
        assert resp.content_type == "application/x-thing"
        assert resp.headers["Content-Length"] == str(len(payload))
        assert await resp.read() == payload
    async with http.get("/atts/d?attachments=false") as resp:
        stub = (await json_of(resp))["_attachments"]["blob.bin"]
        assert stub["stub"] is True
        assert stub["length"] == len(payload)


async def test_sixty_megabyte_attachment(http: aiohttp.ClientSession) -> None:
    await create_db(http, "/bigatt")
    async with http.put("/bigatt/d", json={}) as resp:
        rev = (await json_of(resp))["rev"]
    payload = os.urandom(60 * 1024 * 1024)
    async with http.put(f"/bigatt/d/big?rev={rev}", data=io.BytesIO(payload),
                        headers={"Content-Type": "audio/wav"}) as resp:
        assert resp.status == 201, await resp.text()
    async with http.get("/bigatt/d/big") as resp:
        assert resp.headers["Content-Length"] == str(len(payload))
        assert await resp.read() == payload


async def test_no_compression_and_continuous_changes_stream(http: aiohttp.ClientSession) -> None:
    await create_db(http, "/feed")
    async with http.get("/_all_dbs", headers={"Accept-Encoding": "gzip, deflate"}) as resp:
        assert "Content-Encoding" not in resp.headers
    async with http.get("/feed/_changes?feed=continuous&since=0&heartbeat=10000",
                        headers={"Accept-Encoding": "gzip"}) as feed:
        assert "Content-Encoding" not in feed.headers
        async with http.put("/feed/live", json={}) as resp:
            assert resp.status == 201
        line = await asyncio.wait_for(feed.content.readline(), 5.0)
        assert json.loads(line)["id"] == "live"


# --- 4. URL id wins, 5. ETag and _bulk_docs order --------------------------------------------


async def test_url_id_wins_over_body_id(http: aiohttp.ClientSession) -> None:
    await create_db(http, "/ids")
    async with http.put("/ids/_design/x", json={"_id": "_design/other", "views": {}}) as resp:
        assert (await json_of(resp))["id"] == "_design/x"
    async with http.put("/ids/plain", json={"_id": "elsewhere", "v": 1}) as resp:
        assert (await json_of(resp))["id"] == "plain"
    async with http.get("/ids/_all_docs") as resp:
        assert [r["id"] for r in (await json_of(resp))["rows"]] == ["_design/x", "plain"]


async def test_etag_is_quoted_rev(http: aiohttp.ClientSession) -> None:
    await create_db(http, "/etag")
    async with http.put("/etag/d", json={"a": 1}) as resp:
        rev = (await json_of(resp))["rev"]
    async with http.get("/etag/d") as resp:
        assert resp.headers["ETag"] == f'"{rev}"'
    async with http.head("/etag/d") as resp:
        assert resp.status == 200
        assert resp.headers["ETag"] == f'"{rev}"'


async def test_bulk_docs_results_in_request_order(http: aiohttp.ClientSession) -> None:
    await create_db(http, "/bulk")
    docs = [{"_id": "z"}, {"_id": "_illegal"}, {"_id": "a"}, {"_id": "m", "_bogus": 1},
            {"_id": "b"}]
    async with http.post("/bulk/_bulk_docs", json={"docs": docs}) as resp:
        results = await json_of(resp)
    assert [r.get("id") for r in results] == ["z", "_illegal", "a", "m", "b"]
    assert [("ok" in r) for r in results] == [True, False, True, False, True]
    # new_edits=false: PouchDB sorts internally; errors still come back in request order.
    replicated = [{"_id": "y", "_rev": "1-aa"}, {"_id": "_bad", "_rev": "1-bb"},
                  {"_id": "c", "_rev": "1-cc"}]
    async with http.post("/bulk/_bulk_docs", json={"docs": replicated, "new_edits": False}) as resp:
        assert resp.status == 201
        assert [r["id"] for r in await json_of(resp)] == ["_bad"]
    async with http.get("/bulk/c") as resp:
        assert (await json_of(resp))["_rev"] == "1-cc"


# --- queries ----------------------------------------------------------------------------------


async def test_all_docs_and_view_options(http: aiohttp.ClientSession) -> None:
    await create_db(http, "/query")
    docs = [{"_id": f"d{i}", "group": [i % 2, i], "n": i} for i in range(6)]
    ddoc = {"_id": "_design/q", "views": {
        "n": {"map": "function (d) { if (d.group) emit(d.n, 1); }", "reduce": "_sum"},
        "g": {"map": "function (d) { if (d.group) emit(d.group, d.n); }", "reduce": "_sum"},
    }}
    async with http.post("/query/_bulk_docs", json={"docs": [*docs, ddoc]}) as resp:
        assert resp.status == 201
    async with http.post("/query/_all_docs?include_docs=true",
                         json={"keys": ["d3", "nope", "d1"]}) as resp:
        rows = (await json_of(resp))["rows"]
        assert [r.get("id") for r in rows] == ["d3", None, "d1"]
        assert rows[0]["doc"]["n"] == 3
        assert rows[1]["error"] == "not_found"

    async def view(name: str, **params: str) -> Any:
        async with http.get(f"/query/_design/q/_view/{name}", params=params) as resp:
            assert resp.status == 200, await resp.text()
            return await json_of(resp)

    rows = (await view("n", reduce="false", startkey="1", endkey="4"))["rows"]
    assert [r["key"] for r in rows] == [1, 2, 3, 4]
    rows = (await view("n", reduce="false", descending="true", limit="2", skip="1"))["rows"]
    assert [r["key"] for r in rows] == [4, 3]
    rows = (await view("n", reduce="false", limit="1", include_docs="true"))["rows"]
    assert rows[0]["doc"]["_id"] == "d0"
    assert (await view("n"))["rows"] == [{"key": None, "value": 6}]
    rows = (await view("g", group_level="1"))["rows"]
    assert rows == [{"key": [0], "value": 6}, {"key": [1], "value": 9}]


@pytest.mark.parametrize("params", [{"startkey": "not json"}, {"key": "[1,"},
                                    {"limit": "abc"}, {"limit": "-1"}, {"skip": "1.5"},
                                    {"group_level": "x"}])
async def test_view_values_couchdb_refuses_are_400_query_parse_error(
    http: aiohttp.ClientSession, params: dict[str, str],
) -> None:
    """FIX 9: CouchDB answers these 400 query_parse_error; PouchDB guessed a meaning."""
    await create_db(http, "/parse")
    ddoc = {"_id": "_design/q", "views": {"n": {"map": "function (d) { emit(d.n, 1); }"}}}
    async with http.put("/parse/_design/q", json=ddoc) as resp:
        assert resp.status in (201, 409)
    for path in ("/parse/_design/q/_view/n", "/parse/_all_docs"):
        async with http.get(path, params=params) as resp:
            assert resp.status == 400, await resp.text()
            assert (await json_of(resp))["error"] == "query_parse_error"
    async with http.delete("/parse") as resp:
        assert resp.status == 200


async def test_multi_query_endpoint_answers_each_query_in_order(
    http: aiohttp.ClientSession,
) -> None:
    """FIX 10: POST …/_view/NAME/queries, with `_sum` of vectors as CouchDB adds them."""
    await create_db(http, "/multi")
    docs = [{"_id": f"d{i}", "box": "ab"[i % 2], "t": i, "v": [1, i % 3 == 0, 0]}
            for i in range(10)]
    ddoc = {"_id": "_design/m", "views": {"by": {
        "map": "function (d) { if (d.box) emit([d.box, d.t], [d.v[0], d.v[1] ? 1 : 0, d.v[2]]); }",
        "reduce": "_sum"}}}
    async with http.post("/multi/_bulk_docs", json={"docs": [*docs, ddoc]}) as resp:
        assert resp.status == 201
    queries = [{"startkey": ["a", 4], "endkey": ["a", 8]},
               {"start_key": ["b", 0], "end_key": ["b", {}]},
               {"startkey": ["c"], "endkey": ["c", {}]},
               {"group_level": 1},
               {"reduce": False, "startkey": ["b", 7], "endkey": ["b", 9], "limit": 1}]
    async with http.post("/multi/_design/m/_view/by/queries", json={"queries": queries}) as resp:
        assert resp.status == 200, await resp.text()
        results = (await json_of(resp))["results"]
    assert [r["rows"] for r in results[:4]] == [
        [{"key": None, "value": [3, 1, 0]}],          # a4, a6, a8; a6 has v[1]
        [{"key": None, "value": [5, 2, 0]}],          # b1 … b9; b3, b9
        [],
        [{"key": ["a"], "value": [5, 2, 0]}, {"key": ["b"], "value": [5, 2, 0]}],
    ]
    assert [r["id"] for r in results[4]["rows"]] == ["d7"]
    async with http.post("/multi/_design/m/_view/by/queries",
                         json={"queries": [{"limit": "x"}]}) as resp:
        assert resp.status == 400
    async with http.post("/multi/_design/nope/_view/by/queries", json={"queries": [{}]}) as resp:
        assert resp.status == 404
    async with http.delete("/multi") as resp:
        assert resp.status == 200


# --- 6. welcome, 8. auth -------------------------------------------------------------------


async def test_welcome_and_up_without_credentials(server: devserver.DevServer) -> None:
    async with aiohttp.ClientSession(base_url=server.url) as anonymous:
        async with anonymous.get("/") as resp:
            body = await json_of(resp)
            assert body["couchdb"] == "Welcome"
            assert body["version"] == "3.3.0-pouchdb-devserver"
        async with anonymous.get("/_up") as resp:
            assert resp.status == 200
            assert await json_of(resp) == {"status": "ok"}


async def test_admin_credentials_required(server: devserver.DevServer) -> None:
    async with aiohttp.ClientSession(base_url=server.url) as anonymous:
        async with anonymous.put("/anon") as resp:
            assert resp.status == 401
            assert (await json_of(resp))["error"] == "unauthorized"
        async with anonymous.get("/_all_dbs") as resp:
            assert resp.status == 401
        async with anonymous.delete("/_users", headers=basic("admin", "wrong")) as resp:
            assert resp.status == 401
            assert await json_of(resp) == {
                "error": "unauthorized", "reason": "Name or password is incorrect."}
        async with anonymous.put("/authed", headers=AUTH) as resp:
            assert resp.status == 201
    # The URL form with credentials works too (percent-encoded ":" in the password).
    assert server.url_with_credentials.startswith("http://admin:s3cret%3Apw@127.0.0.1:")


# --- 7. nothing crashes the process --------------------------------------------------------


def multipart_related(boundary: str, doc: dict[str, Any], parts: list[tuple[str, bytes]]) -> bytes:
    out = [f"--{boundary}\r\nContent-Type: application/json\r\n\r\n".encode(),
           json.dumps(doc).encode()]
    for ctype, body in parts:
        out += [f"\r\n--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode(), body]
    out.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(out)


async def test_multipart_related_put(
    server: devserver.DevServer, http: aiohttp.ClientSession
) -> None:
    await create_db(http, "/multi")
    doc = {"_id": "ignored", "k": 1, "_attachments": {
        "a.txt": {"follows": True, "content_type": "text/plain", "length": 5}}}
    body = multipart_related("xyz", doc, [("text/plain", b"hello")])
    headers = {"Content-Type": 'multipart/related; boundary="xyz"'}
    async with http.put("/multi/mp", data=body, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
    async with http.get("/multi/mp/a.txt") as resp:
        assert resp.content_type == "text/plain"
        assert await resp.read() == b"hello"
    # Garbage that used to kill express-pouchdb: answered, process alive.
    for bad in [b"--xyz\r\n\r\nnot json\r\n--xyz--", b"no boundary at all"]:
        async with http.put("/multi/bad", data=bad, headers=headers) as resp:
            assert resp.status == 400
            assert (await json_of(resp))["error"] == "bad_request"
    await assert_alive(server, http)


async def test_known_crashers_answer_with_errors(
    server: devserver.DevServer, http: aiohttp.ClientSession
) -> None:
    await create_db(http, "/crash")
    async with http.put("/crash/d", json={"type": "a"}) as resp:
        assert resp.status == 201
    async with http.get("/crash/_changes?filter=_selector") as resp:
        assert resp.status == 400
        assert (await json_of(resp))["error"] == "bad_request"
    async with http.post("/crash/_changes?filter=_selector",
                         json={"selector": {"type": "a"}}) as resp:
        assert [r["id"] for r in (await json_of(resp))["results"]] == ["d"]
    for body in [{"source": "http://127.0.0.1:9/nowhere", "target": "crash"},
                 {"source": "missing", "target": "crash"}, {"source": 5}]:
        async with http.post("/_replicate", json=body) as resp:
            assert resp.status >= 400
            assert set(await json_of(resp)) == {"error", "reason"}
    as_json = {"Content-Type": "application/json"}
    async with http.put("/crash/bad", data=b"{nope", headers=as_json) as resp:
        assert resp.status == 400
    async with http.post("/crash/_bulk_docs", data=b"[1,", headers=as_json) as resp:
        assert resp.status == 400
    async with aiohttp.ClientSession(base_url=server.url) as anon, anon.put("/crash2") as resp:
        assert resp.status == 401
    await assert_alive(server, http)


async def test_local_replication(http: aiohttp.ClientSession) -> None:
    await create_db(http, "/rsrc")
    async with http.put("/rsrc/d", json={"v": 1}) as resp:
        assert resp.status == 201
    body = {"source": "rsrc", "target": "rdst/copy", "create_target": True}
    async with http.post("/_replicate", json=body) as resp:
        assert (await json_of(resp))["ok"] is True
    async with http.get("/rdst%2Fcopy/d") as resp:
        assert (await json_of(resp))["v"] == 1


# --- launcher ---------------------------------------------------------------------------------


async def test_restart_keeps_data_and_stop_is_prompt(tmp_path: Path) -> None:
    first = await devserver.start_devserver(data_dir=tmp_path, admin=ADMIN)
    try:
        async with aiohttp.ClientSession(base_url=first.url, headers=AUTH) as session:
            await create_db(session, SLASH_PATH)
            async with session.put(f"{SLASH_PATH}/keep", json={"v": 1}) as resp:
                assert resp.status == 201
            # An open continuous feed must not delay shutdown.
            async with session.get(f"{SLASH_PATH}/_changes?feed=continuous") as feed:
                assert feed.status == 200
                started = time.monotonic()
                await first.stop()
                assert time.monotonic() - started < 1.0
        assert first.process.returncode == 0
    finally:
        await first.stop()
    second = await devserver.start_devserver(data_dir=tmp_path, admin=ADMIN)
    try:
        async with aiohttp.ClientSession(base_url=second.url, headers=AUTH) as session:
            async with session.get("/_all_dbs") as resp:
                assert await json_of(resp) == [SLASH_DB]
            async with session.get(f"{SLASH_PATH}/keep") as resp:
                assert (await json_of(resp))["v"] == 1
    finally:
        await second.stop()


async def test_in_memory_server_sigterm_exit_code() -> None:
    srv = await devserver.start_devserver(in_memory=True, admin=ADMIN)
    try:
        async with aiohttp.ClientSession(base_url=srv.url, headers=AUTH) as session:
            await create_db(session, "/mem")
            async with session.get("/_all_dbs") as resp:
                assert await json_of(resp) == ["mem"]
        srv.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(srv.process.wait(), 2.0) == 0
    finally:
        await srv.stop()


async def test_startup_failure_reports_stderr() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(devserver.DevServerError, match="EADDRINUSE"):
            await devserver.start_devserver(in_memory=True, port=port, startup_timeout_s=10)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_run_foreground_stops_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    code = (
        "import sys; from pathlib import Path; from piston_vm.storage import devserver; "
        "sys.exit(devserver.run_foreground(host='127.0.0.1', port=0, "
        f"data_dir=Path({str(tmp_path)!r}), in_memory=False, admin=('a', 'b')))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30.0)
        url = json.loads(line)["url"]
        async with aiohttp.ClientSession() as session, session.get(f"{url}/_up") as resp:
            assert resp.status == 200
        # SIGINT goes to the whole group (a terminal's Ctrl-C); SIGTERM only to Python.
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        assert await asyncio.wait_for(proc.wait(), 5.0) == 0
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def test_ensure_installed_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(devserver.DevServerError, match=r"package-lock\.json is missing"):
        devserver.ensure_installed(tmp_path)
    (tmp_path / "package-lock.json").write_text("{}")
    monkeypatch.setenv("PATH", str(tmp_path))  # neither node nor npm
    with pytest.raises(devserver.DevServerError, match="not found on PATH"):
        devserver.ensure_installed(tmp_path)
    monkeypatch.setenv(devserver.DEVSERVER_DIR_ENV, str(tmp_path))
    with pytest.raises(devserver.DevServerError, match="not found on PATH"):
        devserver.ensure_installed()


async def test_cookie_login_authenticates_later_requests(server: devserver.DevServer) -> None:
    # CouchDB's replicator logs in to its target with POST /_session before it writes.
    async with aiohttp.ClientSession(base_url=server.url) as anonymous:
        wrong = {"name": ADMIN[0], "password": "wrong"}
        async with anonymous.post("/_session", data=wrong) as resp:
            assert resp.status == 401
        login = {"name": ADMIN[0], "password": ADMIN[1]}
        async with anonymous.post("/_session", json=login) as resp:
            assert resp.status == 200, await resp.text()
            assert (await json_of(resp))["ok"] is True
            cookie = resp.cookies["AuthSession"].value
    async with aiohttp.ClientSession(base_url=server.url) as fresh:
        async with fresh.get("/_all_dbs", headers={"Cookie": f"AuthSession={cookie}"}) as resp:
            assert resp.status == 200
        async with fresh.get("/_all_dbs", headers={"Cookie": "AuthSession=forged"}) as resp:
            assert resp.status == 401
        async with fresh.delete("/_session", headers={"Cookie": f"AuthSession={cookie}"}) as resp:
            assert resp.status == 200
        async with fresh.get("/_all_dbs", headers={"Cookie": f"AuthSession={cookie}"}) as resp:
            assert resp.status == 401


async def test_replicating_a_missing_source_creates_no_target(http: aiohttp.ClientSession) -> None:
    body = {"source": "no-such-source-db", "target": "never-made-target", "create_target": True}
    async with http.post("/_replicate", json=body) as resp:
        assert resp.status == 404, await resp.text()
    async with http.get("/never-made-target") as resp:
        assert resp.status == 404


async def test_a_replicated_document_put_answers_like_couchdb(http: aiohttp.ClientSession) -> None:
    # CouchDB's replicator writes documents with attachments as PUT ?new_edits=false and
    # crashes (open_doc_revs_failed) unless the answer names the id and revision.
    await create_db(http, "/replicated")
    boundary = "b0undary"
    doc = {"_id": "d", "_rev": "1-0c47428c588a2de016cf7709b230c2aa",
           "_revisions": {"start": 1, "ids": ["0c47428c588a2de016cf7709b230c2aa"]},
           "_attachments": {"a.mp3": {"follows": True, "content_type": "audio/mpeg",
                                      "length": 3, "revpos": 1}}}
    body = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{json.dumps(doc)}\r\n"
            f"--{boundary}\r\n\r\nabc\r\n--{boundary}--").encode()
    headers = {"Content-Type": f'multipart/related; boundary="{boundary}"'}
    async with http.put("/replicated/d?new_edits=false", data=body, headers=headers) as resp:
        assert resp.status == 201
        assert await json_of(resp) == {"ok": True, "id": "d", "rev": doc["_rev"]}
    async with http.get("/replicated/d/a.mp3") as resp:
        assert await resp.read() == b"abc"


# --- 12. _db_updates ----------------------------------------------------------------------


async def test_db_updates_lists_each_changed_database_once_with_its_latest_change(
    http: aiohttp.ClientSession,
) -> None:
    """FIX 12: which databases changed, as CouchDB 3 answers GET /_db_updates."""
    async with http.get("/_db_updates", params={"since": "now"}) as resp:
        assert resp.status == 200
        since = (await json_of(resp))["last_seq"]
    name = "account/ee/ee/" + "e" * 28
    await create_db(http, quote(name, safe=""))
    for n in range(3):
        async with http.put(f"/{quote(name, safe='')}/doc{n}", json={"n": n}) as resp:
            assert resp.status == 201
    # Reads are not changes.
    async with http.post(f"/{quote(name, safe='')}/_all_docs", json={"keys": []}) as resp:
        assert resp.status == 200
    async with http.get("/_db_updates", params={"since": since}) as resp:
        body = await json_of(resp)
    rows = [r for r in body["results"] if r["db_name"] == name]
    assert len(rows) == 1
    assert rows[0]["type"] == "updated"
    assert body["last_seq"] == body["results"][-1]["seq"]
    # A long poll waits for the next change and answers as soon as it happens.
    waiter = asyncio.ensure_future(http.get("/_db_updates", params={
        "since": body["last_seq"], "feed": "longpoll", "timeout": "10000"}))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    async with http.delete(f"/{quote(name, safe='')}") as resp:
        assert resp.status == 200
    resp = await asyncio.wait_for(waiter, 5)
    later = await json_of(resp)
    resp.release()
    assert [(r["db_name"], r["type"]) for r in later["results"]] == [(name, "deleted")]
    # With nothing new, a long poll ends at its timeout with no rows.
    async with http.get("/_db_updates", params={
            "since": later["last_seq"], "feed": "longpoll", "timeout": "200"}) as resp:
        assert (await json_of(resp))["results"] == []


async def test_all_dbs_takes_a_key_range_like_couchdb(http: aiohttp.ClientSession) -> None:
    for name in ("range-a", "range-b", "range-c"):
        await create_db(http, name)
    params = {"start_key": '"range-a"', "end_key": '"range-b"'}
    async with http.get("/_all_dbs", params=params) as resp:
        assert await json_of(resp) == ["range-a", "range-b"]
    async with http.get("/_all_dbs", params={"startkey": '"range-b"', "endkey": '"range-\ufff0"',
                                             "limit": "1"}) as resp:
        assert await json_of(resp) == ["range-b"]
    async with http.get("/_all_dbs", params={"start_key": '"range-c"', "end_key": '"range-a"',
                                             "descending": "true"}) as resp:
        assert await json_of(resp) == ["range-c", "range-b", "range-a"]
