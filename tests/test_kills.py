"""Crashes (docs/integrity.md): the service process SIGKILLed in the middle of a create, an audio
replace or a move, at random moments, then started again.

Each round asserts the stored state read straight from CouchDB: a create left no message or a
whole one (every audio byte), a replace left the old audio or the new one (never none, never
both), a move left the message in exactly one box once the next access has settled it; and no
spooled upload survives in the temp directory.

PISTON_VM_KILL_ROUNDS (default 6) sets the rounds per operation; the closing note's figures
were taken with 20.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import random
import secrets
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from piston_vm.core.config import Settings
from piston_vm.storage.stores import Stores
from tests.conftest import TEST_TOKEN_SECRET, MakeAccount, Tenant
from tests.test_message_support import json_part, messages_path, raw_path, stored_message_docs

JsonObject = dict[str, Any]

ROUNDS = int(os.environ.get("PISTON_VM_KILL_ROUNDS", "6"))
SEED = 9_2026
CREATE_BYTES = 12 * 1024 * 1024
REPLACE_BYTES = 6 * 1024 * 1024
CHUNK_BYTES = 256 * 1024
# The client paces its upload so that the request lasts long enough to be cut anywhere.
CHUNK_PAUSE_S = 0.004
START_TIMEOUT_S = 30.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """`piston-vm serve` as its own process, on the suite's CouchDB."""

    settings: Settings
    spool_dir: Path
    port: int = 0
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert self.settings.couchdb is not None
        # The same port every time: clients keep their URLs across the restart.
        self.port = self.port or free_port()
        couch = self.settings.couchdb
        scheme, _, rest = couch.url.partition("://")
        login = f"{quote(couch.user or '', safe='')}:{quote(couch.password or '', safe='')}@"
        env = {**os.environ, "TMPDIR": str(self.spool_dir),
               "PISTON_VM_COUCHDB_URL": f"{scheme}://{login}{rest}",
               "PISTON_VM_TOKEN_SECRET": TEST_TOKEN_SECRET,
               # No event engine: it is not what these tests are about (tests/test_events.py).
               "PISTON_VM_EVENTS": "off",
               "PISTON_VM_MAX_UPLOAD_BYTES": str(4 * CREATE_BYTES),
               "PISTON_VM_MOVE_REPAIR_INTERVAL_S": "0",
               "PISTON_VM_ACCOUNT_CACHE_TTL_S": "0"}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "piston_vm", "serve", "--host", "127.0.0.1",
            "--port", str(self.port),
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                assert loop.time() < deadline, "piston-vm serve did not start"
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        self.process = None


@pytest.fixture
async def service(settings: Settings, tmp_path: Path) -> AsyncIterator[Service]:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    own = Service(settings, spool_dir)
    await own.start()
    try:
        yield own
    finally:
        await own.kill()


def auth(tenant: Tenant, **extra: str) -> dict[str, str]:
    return {"X-Auth-Token": tenant.token, **extra}


async def paced(parts: list[bytes], sent: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    for part in parts:
        for start in range(0, len(part), CHUNK_BYTES):
            yield part[start : start + CHUNK_BYTES]
            await asyncio.sleep(CHUNK_PAUSE_S)
    if sent is not None:
        sent.set()


def multipart_create(audio: bytes) -> tuple[list[bytes], str]:
    boundary = secrets.token_hex(12)
    ctype, body, name = json_part({})
    head = (f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode() + body
            + f"\r\n--{boundary}\r\nContent-Type: audio/mpeg\r\nContent-Disposition: "
              f'form-data; name="file"; filename="{name}"\r\n\r\n'.encode())
    tail = f"\r\n--{boundary}--\r\n".encode()
    return [head, audio, tail], f"multipart/mixed; boundary={boundary}"


async def send(session: aiohttp.ClientSession, method: str, url: str, parts: list[bytes],
               headers: dict[str, str], sent: asyncio.Event | None = None) -> int | None:
    """The request's status, or None when the service died under it; `sent` is set once the
    whole body is on its way."""
    length = sum(len(p) for p in parts)
    try:
        async with session.request(method, url, data=paced(parts, sent),
                                   headers={**headers, "Content-Length": str(length)}) as resp:
            await resp.read()
            return int(resp.status)
    except (aiohttp.ClientError, ConnectionError):
        return None


async def kill_during(
    service: Service, request: Coroutine[Any, Any, int | None], delay_s: float,
    after: asyncio.Event | None = None,
) -> int | None:
    """Kill the service `delay_s` after the request starts, or after `after` is set."""
    task = asyncio.ensure_future(request)
    if after is not None:
        await asyncio.wait({task, asyncio.ensure_future(after.wait())},
                           return_when=asyncio.FIRST_COMPLETED)
    await asyncio.sleep(delay_s)
    await service.kill()
    status = await asyncio.wait_for(task, 10)
    await service.start()
    return status


async def upload_and_kill(
    service: Service, rng: random.Random, number: int, duration_s: float,
    upload: Callable[[asyncio.Event], Coroutine[Any, Any, int | None]],
) -> int | None:
    """Half the kills land while the body streams in, half once it is all sent, while the
    service writes it to CouchDB (where a two-step write used to leave half a message)."""
    sent = asyncio.Event()
    if number % 2:
        return await kill_during(service, upload(sent), rng.uniform(0.0, 0.8) * duration_s, sent)
    return await kill_during(service, upload(sent), rng.uniform(0.05, 0.6) * duration_s)


def audio_shas(doc: JsonObject) -> list[str]:
    return [sha(base64.b64decode(stub["data"]))
            for stub in (doc.get("_attachments") or {}).values()]


async def new_box(session: aiohttp.ClientSession, service: Service, tenant: Tenant,
                  mailbox: str) -> str:
    async with session.put(f"{service.url}/v2/accounts/{tenant.id}/vmboxes", headers=auth(
            tenant), json={"data": {"name": f"box {mailbox}", "mailbox": mailbox}}) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        return str(body["data"]["id"])


async def measure(coro: Any) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await coro
    return loop.time() - started


def spool_files(service: Service) -> list[str]:
    return os.listdir(service.spool_dir)


async def test_a_killed_create_leaves_no_message_or_a_whole_one(
    service: Service, stores: Stores, make_account: MakeAccount
) -> None:
    rng = random.Random(SEED)
    tenant = await make_account()
    audio = secrets.token_bytes(CREATE_BYTES)
    parts, ctype = multipart_create(audio)
    async with aiohttp.ClientSession() as session:
        box = await new_box(session, service, tenant, "3000")
        url = service.url + messages_path(tenant, box)
        headers = auth(tenant, **{"Content-Type": ctype})
        duration_s = await measure(send(session, "PUT", url, parts, headers))
        whole = 1
        outcomes = {"none": 0, "whole": 0}
        answers: Counter[str] = Counter()
        for number in range(ROUNDS):
            status = await upload_and_kill(service, rng, number, duration_s,
                                           lambda sent: send(session, "PUT", url, parts,
                                                             headers, sent))
            answers[str(status)] += 1
            docs = await stored_message_docs(stores, tenant)
            assert not spool_files(service), "a killed upload left its spool file"
            for doc in docs:
                assert audio_shas(doc) == [sha(audio)], (
                    f"message {doc['_id']} without its whole audio")
            made = len(docs) - whole
            assert made in (0, 1)
            outcomes["whole" if made else "none"] += 1
            whole = len(docs)
    print(f"killed creates: {outcomes}, {ROUNDS} rounds of {duration_s * 1000:.0f} ms uploads, "
          f"answers {dict(answers)}")
    # The kills must have hit requests that were running (a dead URL would prove nothing).
    assert answers["None"] >= ROUNDS // 4


async def test_a_killed_audio_replace_leaves_the_old_audio_or_the_new(
    service: Service, stores: Stores, make_account: MakeAccount
) -> None:
    rng = random.Random(SEED + 1)
    tenant = await make_account()
    first = secrets.token_bytes(64 * 1024)
    parts, ctype = multipart_create(first)
    async with aiohttp.ClientSession() as session:
        box = await new_box(session, service, tenant, "3100")
        assert await send(session, "PUT", service.url + messages_path(tenant, box), parts,
                          auth(tenant, **{"Content-Type": ctype})) == 201
        [doc] = await stored_message_docs(stores, tenant)
        url = service.url + raw_path(tenant, box, doc["_id"])
        current = sha(first)
        audio = secrets.token_bytes(REPLACE_BYTES)
        headers = auth(tenant, **{"Content-Type": "audio/mpeg"})
        duration_s = await measure(send(session, "PUT", url, [audio], headers))
        current = sha(audio)
        outcomes = {"old": 0, "new": 0}
        answers: Counter[str] = Counter()
        for number in range(ROUNDS):
            audio = secrets.token_bytes(REPLACE_BYTES)
            def upload(sent: asyncio.Event, body: bytes = audio) -> Coroutine[
                    Any, Any, int | None]:
                return send(session, "PUT", url, [body], headers, sent)

            status = await upload_and_kill(service, rng, number, duration_s, upload)
            answers[str(status)] += 1
            [doc] = await stored_message_docs(stores, tenant)
            held = audio_shas(doc)
            assert held in ([current], [sha(audio)]), "the audio is neither the old nor the new"
            outcomes["new" if held == [sha(audio)] else "old"] += 1
            current = held[0]
            assert not spool_files(service), "a killed upload left its spool file"
    print(f"killed replaces: {outcomes}, answers {dict(answers)}")
    assert answers["None"] >= ROUNDS // 4


async def test_a_killed_move_converges_to_exactly_one_message(
    service: Service, stores: Stores, make_account: MakeAccount
) -> None:
    rng = random.Random(SEED + 2)
    tenant = await make_account()
    outcomes = {"moved": 0, "stayed": 0}
    async with aiohttp.ClientSession() as session:
        source = await new_box(session, service, tenant, "3200")
        destination = await new_box(session, service, tenant, "3201")
        durations: list[float] = []
        for number in range(ROUNDS + 1):
            audio = secrets.token_bytes(256 * 1024)
            parts, ctype = multipart_create(audio)
            status = await send(session, "PUT", service.url + messages_path(tenant, source),
                                parts, auth(tenant, **{"Content-Type": ctype}))
            assert status == 201
            [doc] = [d for d in await stored_message_docs(stores, tenant)
                     if d.get("source_id") == source and not d.get("pvt_deleted")]
            url = f"{service.url}/v2/accounts/{tenant.id}/vmboxes/{source}/messages/{doc['_id']}"
            move = session.post(url, headers=auth(tenant),
                                json={"data": {"source_id": destination}})

            async def run(request: Any = move) -> int | None:
                try:
                    async with request as resp:
                        await resp.read()
                        return int(resp.status)
                except (aiohttp.ClientError, ConnectionError):
                    return None

            if number == 0:
                durations.append(await measure(run()))
            else:
                await kill_during(service, run(), rng.uniform(0.0, 1.2) * durations[0])
            # The next access to the account settles what the crash left.
            async with session.get(service.url + messages_path(tenant, destination),
                                   headers=auth(tenant)) as resp:
                assert resp.status == 200
            stored = await stored_message_docs(stores, tenant)
            live = [d for d in stored if not d.get("pvt_deleted")]
            assert len(live) == 1, f"round {number}: {len(live)} live messages"
            [message] = live
            assert audio_shas(message) == [sha(audio)]
            assert not message.get("pvt_move_pending"), "the move was not settled"
            outcomes["moved" if message["source_id"] == destination else "stayed"] += 1
            # Start the next round with the message gone: delete whatever lives.
            async with session.delete(
                    f"{service.url}/v2/accounts/{tenant.id}/vmboxes/{message['source_id']}"
                    f"/messages/{message['_id']}", headers=auth(tenant)) as resp:
                assert resp.status == 200
    print(f"killed moves: {outcomes}, a move takes {durations[0] * 1000:.0f} ms")
