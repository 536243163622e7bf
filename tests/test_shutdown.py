"""Graceful shutdown (docs/operations.md, "Shutdown"): `piston-vm serve` as a real process gets
SIGTERM in the middle of a slow 20 MB upload.

While it drains, /readyz answers 503 at once and requests are still served for the grace
period; then new connections are refused, the upload still in flight finishes with 201, its
message and every audio byte are in CouchDB, and the process exits 0. Its JSON log is read too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from piston_vm.core.config import Settings
from piston_vm.storage.stores import Stores
from tests.conftest import TEST_TOKEN_SECRET, MakeAccount
from tests.test_kills import free_port, multipart_create
from tests.test_message_support import messages_path, modb_of_id

UPLOAD_BYTES = 20 * 1024 * 1024
CHUNK_BYTES = 256 * 1024
# 80 chunks, 50 ms apart: the body takes about 4 s, far longer than the grace period.
CHUNK_PAUSE_S = 0.05
SIGTERM_AFTER_CHUNKS = 16
GRACE_S = 1.0
START_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 40.0


def read_log(path: Path) -> str:
    return path.read_text()


def couchdb_url(settings: Settings) -> str:
    assert settings.couchdb is not None
    couch = settings.couchdb
    scheme, _, rest = couch.url.partition("://")
    login = f"{quote(couch.user or '', safe='')}:{quote(couch.password or '', safe='')}@"
    return f"{scheme}://{login}{rest}"


async def start_service(settings: Settings, port: int, log_path: Path
                        ) -> asyncio.subprocess.Process:
    env = {**os.environ, "PISTON_VM_COUCHDB_URL": couchdb_url(settings),
           "PISTON_VM_TOKEN_SECRET": TEST_TOKEN_SECRET,
               # No event engine: it is not what these tests are about (tests/test_events.py).
               "PISTON_VM_EVENTS": "off",
           "PISTON_VM_MAX_UPLOAD_BYTES": str(2 * UPLOAD_BYTES),
           "PISTON_VM_SHUTDOWN_GRACE_S": str(GRACE_S),
           "PISTON_VM_SHUTDOWN_TIMEOUT_S": "30",
           "PISTON_VM_LOG_FORMAT": "json"}
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "piston_vm", "serve", "--host", "127.0.0.1", "--port",
            str(port), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log_file,
            stderr=log_file)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return process
            assert process.returncode is None, read_log(log_path)
            assert loop.time() < deadline, "piston-vm serve did not get ready"
            await asyncio.sleep(0.05)


async def paced(parts: list[bytes], progress: list[int], done: asyncio.Event
                ) -> AsyncIterator[bytes]:
    for part in parts:
        for start in range(0, len(part), CHUNK_BYTES):
            yield part[start : start + CHUNK_BYTES]
            progress[0] += 1
            await asyncio.sleep(CHUNK_PAUSE_S)
    done.set()


async def refused(url: str) -> bool:
    """True when a new connection to the service is refused (its listener is closed)."""
    connector = aiohttp.TCPConnector(force_close=True)
    try:
        async with aiohttp.ClientSession(connector=connector) as session, session.get(
                url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
            await resp.read()
            return False
    except aiohttp.ClientConnectorError:
        return True


async def test_sigterm_lets_an_upload_in_flight_finish_and_exits_0(
    settings: Settings, stores: Stores, make_account: MakeAccount, tmp_path: Path
) -> None:
    tenant = await make_account(name=f"Shutdown {secrets.token_hex(4)}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    process = await start_service(settings, port, log_path)
    try:
        audio = secrets.token_bytes(UPLOAD_BYTES)
        parts, content_type = multipart_create(audio)
        length = sum(len(p) for p in parts)
        progress, body_sent = [0], asyncio.Event()
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as session:
            async with session.put(f"{base}/v2/accounts/{tenant.id}/vmboxes", json={
                    "data": {"name": "box 4000", "mailbox": "4000"}},
                    headers={"X-Auth-Token": tenant.token}) as resp:
                made = await resp.json()
                assert resp.status == 201, made
                box = made["data"]["id"]

            async def upload() -> tuple[int, Any]:
                async with session.put(
                        base + messages_path(tenant, box), data=paced(parts, progress, body_sent),
                        headers={"X-Auth-Token": tenant.token, "Content-Type": content_type,
                                 "Content-Length": str(length)}) as resp:
                    return resp.status, await resp.json()

            task = asyncio.ensure_future(upload())
            while progress[0] < SIGTERM_AFTER_CHUNKS:
                assert not task.done(), task.result()
                await asyncio.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            signalled = loop.time()

            # Draining: readiness says 503 at once, while requests are still served.
            async with aiohttp.ClientSession() as probe:
                while True:
                    async with probe.get(base + "/readyz") as resp:
                        readiness = resp.status, await resp.json()
                    if readiness[0] == 503:
                        break
                    assert loop.time() - signalled < GRACE_S, readiness
                    await asyncio.sleep(0.02)
                async with probe.get(base + "/healthz") as resp:
                    assert resp.status == 200
            assert readiness[1]["failed"] == ["draining"], readiness
            assert readiness[1]["checks"]["draining"] is True

            # After the grace period new connections are refused; the upload still runs.
            while not await refused(base + "/healthz"):
                assert loop.time() - signalled < GRACE_S + 5, "the listener never closed"
                await asyncio.sleep(0.05)
            assert loop.time() - signalled >= GRACE_S * 0.9
            assert not body_sent.is_set(), "the upload ended before the drain: it proves nothing"
            assert not task.done()

            status, created = await asyncio.wait_for(task, 60)
        assert status == 201, created
        assert await asyncio.wait_for(process.wait(), EXIT_TIMEOUT_S) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    message_id = created["data"]["media_id"]
    doc = await stores.couch.get_doc(modb_of_id(tenant, message_id), message_id)
    assert doc is not None
    [(name, stub)] = doc["_attachments"].items()
    assert stub["length"] == UPLOAD_BYTES
    digest = hashlib.sha256()
    async with stores.couch.open_attachment(modb_of_id(tenant, message_id), message_id,
                                            name) as resp:
        async for chunk in resp.content.iter_chunked(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(audio).hexdigest()

    records = [json.loads(line) for line in read_log(log_path).splitlines() if line.strip()]
    messages = [r["message"] for r in records]
    assert any(m.startswith("SIGTERM: draining") for m in messages), messages
    assert messages[-1] == "piston_vm stopped", messages
    [access] = [r for r in records if r.get("logger") == "piston_vm.access"
                and r.get("method") == "PUT" and r.get("status") == 201
                and r["path"].endswith("/messages")]
    assert access["bytes_in"] == length
    assert access["account_id"] == tenant.id
    assert access["request_id"] != "-"
    assert tenant.token not in read_log(log_path)

