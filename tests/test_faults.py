"""Faults (issue 5): CouchDB stopped, CouchDB stopped mid-operation, concurrent write storms.

The outage tests start their own CouchDB-protocol server (own port, own data directory) and stop
and restart it; the service under test keeps running the whole time, so recovery is proven
without a restart of the service. The storms run against the shared test server.
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
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import ClientResponse

from piston_vm.core import tokens
from piston_vm.core.config import CouchEndpoint, Settings
from piston_vm.storage.couch import CouchClient
from piston_vm.storage.devserver import DevServer, start_devserver
from piston_vm.storage.stores import Stores
from tests.conftest import TEST_TOKEN_SECRET, AppFactory, Tenant
from tests.helpers import Api, assert_error, assert_success
from tests.test_message_support import (
    create_box,
    create_message,
    create_message_with_audio,
    message_path,
    messages_path,
    must_stored,
    raw_path,
    stored_attachments,
    stored_message_docs,
    vmboxes_path,
)

JsonObject = dict[str, Any]

ADMIN = ("admin", "secret")
COUCH_TIMEOUT_S = 1.0
# What a client may wait for a 503 when CouchDB is gone: the timeout plus generous slack.
ANSWER_BOUND_S = 3.0
# A hung request is given up on after this long (it would otherwise hang the suite).
CLIENT_GIVE_UP_S = 4.0

SEED = 5_2024
FAULT_ROUNDS = 24
MESSAGES_PER_ROUND = 3
OPERATIONS = ("move", "copy", "delete")


# -- a CouchDB server of our own -------------------------------------------------------------


@dataclass
class Couch:
    """A bundled CouchDB-protocol server that can be stopped and brought back on its port."""

    data_dir: Path
    port: int
    server: DevServer | None

    @property
    def endpoint(self) -> CouchEndpoint:
        return CouchEndpoint(f"http://127.0.0.1:{self.port}", *ADMIN)

    async def stop(self, kill: bool = False) -> None:
        if self.server is None:
            return
        if kill and self.server.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.server.process.kill()
        await self.server.stop()
        self.server = None

    async def start(self) -> None:
        assert self.server is None
        self.server = await start_devserver(port=self.port, data_dir=self.data_dir, admin=ADMIN)

    def signal(self, sig: signal.Signals) -> None:
        assert self.server is not None
        os.kill(self.server.process.pid, sig)


@pytest.fixture
async def couch(tmp_path: Path) -> AsyncIterator[Couch]:
    data_dir = tmp_path / "couchdb"
    server = await start_devserver(data_dir=data_dir, admin=ADMIN)
    port = urlsplit(server.url).port
    assert port is not None
    own = Couch(data_dir, port, server)
    try:
        yield own
    finally:
        if own.server is not None:
            with contextlib.suppress(ProcessLookupError):
                own.signal(signal.SIGCONT)
        await own.stop()


@dataclass
class Env:
    couch: Couch
    api: Api
    stores: Stores
    tenant: Tenant


async def make_env(
    couch: Couch, make_client: AppFactory, settings: Settings, **overrides: Any
) -> AsyncIterator[Env]:
    local = settings.with_overrides(
        couchdb=couch.endpoint, couchdb_timeout_s=COUCH_TIMEOUT_S, **overrides)
    client = await make_client(couchdb=couch.endpoint, couchdb_timeout_s=COUCH_TIMEOUT_S,
                               **overrides)
    direct = CouchClient(couch.endpoint, COUCH_TIMEOUT_S)
    await direct.start()
    try:
        stores = Stores.build(local, direct)
        account, api_key = await stores.accounts.create("Faults", "sip.example.net")
        token = tokens.issue(TEST_TOKEN_SECRET, account.id, "cb_api_auth", 3600)
        yield Env(couch, Api(client), stores, Tenant(account, api_key, token))
    finally:
        await direct.close()


@pytest.fixture
async def env(couch: Couch, make_client: AppFactory, settings: Settings) -> AsyncIterator[Env]:
    async for made in make_env(couch, make_client, settings):
        yield made


async def timed(call: Awaitable[tuple[ClientResponse, Any]]) -> tuple[ClientResponse, Any, float]:
    started = time.monotonic()
    try:
        resp, body = await asyncio.wait_for(call, CLIENT_GIVE_UP_S)
    except TimeoutError:
        raise AssertionError(f"no answer within {CLIENT_GIVE_UP_S} s") from None
    return resp, body, time.monotonic() - started


def assert_unreachable(resp: ClientResponse, body: Any, elapsed_s: float, what: str,
                       message: str = "datastore timeout") -> None:
    assert resp.status == 503, (what, resp.status, body)
    data = assert_error(resp, body, 503, "datastore_unreachable")
    assert data == {"message": message}, what
    assert elapsed_s < ANSWER_BOUND_S, f"{what}: 503 only after {elapsed_s:.2f} s"


# -- CouchDB stopped, then back --------------------------------------------------------------


async def test_stopped_couchdb_answers_503_in_bounded_time_and_the_service_recovers(
    env: Env,
) -> None:
    api, t = env.api, env.tenant
    box = await create_box(api, t)
    message = await create_message_with_audio(api, t, box, b"outage-audio")
    reads = {
        "box": vmboxes_path(t) + f"/{box}",
        "box list": vmboxes_path(t),
        "message list": messages_path(t, box),
        "message": message_path(t, box, message["media_id"]),
    }
    for path in reads.values():
        resp, body = await api.call("GET", path, t.token)
        assert_success(resp, body)
    resp, _ = await api.call("GET", "/readyz")
    assert resp.status == 200

    await env.couch.stop()
    # Refused connections: "unreachable", not "timeout" (that is the frozen server's answer).
    for what, path in reads.items():
        resp, body, elapsed = await timed(api.call("GET", path, t.token))
        assert_unreachable(resp, body, elapsed, what, "datastore unreachable")
    resp, body, elapsed = await timed(api.call("PATCH", reads["box"], t.token, {"k": 1}))
    assert_unreachable(resp, body, elapsed, "box patch", "datastore unreachable")
    resp, body, elapsed = await timed(api.call("GET", "/readyz"))
    assert resp.status == 503, body
    assert body["failed"] == ["couchdb"], body
    assert body["checks"]["couchdb"] == "unreachable", body
    assert elapsed < ANSWER_BOUND_S
    # Liveness never asks CouchDB: an outage there must not get the instance restarted.
    resp, body = await api.call("GET", "/healthz")
    assert resp.status == 200, body

    await env.couch.start()
    # The same app and client, never restarted: the first request after the restart succeeds.
    resp, _ = await api.call("GET", "/readyz")
    assert resp.status == 200
    for path in reads.values():
        resp, body = await api.call("GET", path, t.token)
        assert_success(resp, body)
    resp = await api.client.get(raw_path(t, box, message["media_id"]),
                                headers={"X-Auth-Token": t.token})
    assert resp.status == 200
    assert await resp.read() == b"outage-audio"


async def test_frozen_couchdb_answers_503_in_bounded_time(
    couch: Couch, make_client: AppFactory, settings: Settings
) -> None:
    """A hung server (SIGSTOP: connections are accepted, nothing answers) is "timed out"."""
    # The default account cache: in production the account check is usually a cache hit, so
    # the request reaches the box, view and attachment reads.
    async for made in make_env(couch, make_client, settings, account_cache_ttl_s=30.0):
        api, t = made.api, made.tenant
        box = await create_box(api, t)
        message = await create_message_with_audio(api, t, box, b"frozen-audio")
        reads = {
            "box": vmboxes_path(t) + f"/{box}",
            "box list": vmboxes_path(t),
            "message list": messages_path(t, box),
            "message": message_path(t, box, message["media_id"]),
        }
        for path in reads.values():
            resp, body = await api.call("GET", path, t.token)
            assert_success(resp, body)
        couch.signal(signal.SIGSTOP)
        slow: dict[str, str] = {}
        try:
            for what, path in reads.items():
                try:
                    resp, body, elapsed = await timed(api.call("GET", path, t.token))
                    assert_unreachable(resp, body, elapsed, what)
                except AssertionError as problem:
                    slow[what] = str(problem).splitlines()[0]
            try:
                resp, _, elapsed = await timed(api.call("GET", "/readyz"))
                assert resp.status == 503
                assert elapsed < ANSWER_BOUND_S
            except AssertionError as problem:
                slow["readyz"] = str(problem).splitlines()[0]
        finally:
            couch.signal(signal.SIGCONT)
        assert not slow, f"not a 503 within {ANSWER_BOUND_S} s while CouchDB hangs: {slow}"
        resp, body = await api.call("GET", reads["box list"], t.token)
        assert_success(resp, body)


# -- CouchDB stopped in the middle of bulk moves, copies and deletes ---------------------------


@dataclass(frozen=True)
class Instance:
    """One message document found in CouchDB."""

    doc_id: str
    box_id: str
    deleted: bool
    folder: str | None
    audio_sha: str | None  # of the stored attachment (None: no audio)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def inventory(env: Env, box_ids: list[str]) -> list[Instance]:
    """Every message document of the given boxes in every MODB, read straight from CouchDB."""
    found: list[Instance] = []
    for doc in await stored_message_docs(env.stores, env.tenant):
        if doc.get("source_id") not in box_ids:
            continue
        attachments = doc.get("_attachments") or {}
        audio_sha = None
        if len(attachments) == 1:
            [stub] = attachments.values()
            audio_sha = sha(base64.b64decode(stub["data"])) if "data" in stub else None
        found.append(Instance(
            doc["_id"], doc["source_id"], bool(doc.get("pvt_deleted")),
            (doc.get("metadata") or {}).get("folder"), audio_sha))
    return found


async def api_audio_sha(env: Env, box_id: str, message_id: str) -> str | None:
    """sha256 of the audio the API serves (None when it serves none)."""
    resp = await env.api.client.get(raw_path(env.tenant, box_id, message_id),
                                     headers={"X-Auth-Token": env.tenant.token})
    body = await resp.read()
    return sha(body) if resp.status == 200 else None


async def api_listing(env: Env, box_id: str) -> list[str]:
    resp, body = await env.api.call("GET", messages_path(env.tenant, box_id), env.tenant.token,
                                    params={"paginate": "false"})
    rows = assert_success(resp, body)
    return sorted(row["media_id"] for row in rows)


@dataclass
class Tally:
    rounds: int = 0
    interrupted: int = 0  # the stop came before the response
    statuses: Counter[int] = field(default_factory=Counter)
    lost: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class Round:
    number: int
    op: str
    source: str
    destinations: list[str]
    audio: dict[str, str]  # original message id -> sha256 of its audio

    @property
    def boxes(self) -> list[str]:
        return [self.source, *self.destinations]

    def request(self) -> tuple[str, JsonObject]:
        ids = list(self.audio)
        if self.op == "move":
            return "POST", {"messages": ids, "source_id": self.destinations[0]}
        if self.op == "copy":
            return "POST", {"messages": ids, "source_id": self.destinations}
        return "DELETE", {"messages": ids}


async def new_round(env: Env, number: int, op: str) -> Round:
    api, t = env.api, env.tenant
    base = 3000 + number * 10
    source = await create_box(api, t, str(base))
    count = {"move": 1, "copy": 2, "delete": 0}[op]
    destinations = [await create_box(api, t, str(base + 1 + n)) for n in range(count)]
    audio: dict[str, str] = {}
    for n in range(MESSAGES_PER_ROUND):
        payload = f"round-{number}-{n}-".encode() + secrets.token_bytes(4096)
        data = await create_message_with_audio(api, t, source, payload,
                                               content_type="audio/mpeg")
        audio[data["media_id"]] = sha(payload)
    return Round(number, op, source, destinations, audio)


async def fire(env: Env, plan: Round) -> tuple[ClientResponse, Any]:
    method, data = plan.request()
    return await env.api.call(method, messages_path(env.tenant, plan.source), env.tenant.token,
                              data)


async def check_survivors(env: Env, plan: Round, tally: Tally, stage: str) -> None:
    """Every message exists at least once with its audio byte-identical."""
    found = await inventory(env, plan.boxes)
    where = f"round {plan.number} ({plan.op}, {stage})"
    for message_id, audio_sha in plan.audio.items():
        if plan.op == "delete":
            mine = [i for i in found if i.doc_id == message_id]
            intact = [i for i in mine if i.audio_sha == audio_sha]
            if not intact:
                tally.lost += 1
                tally.problems.append(f"{where}: {message_id} or its audio is gone")
            for i in mine:
                if i.deleted != (i.folder == "deleted"):
                    tally.problems.append(f"{where}: {message_id} half deleted: {i}")
            continue
        live = [i for i in found if not i.deleted and i.audio_sha == audio_sha]
        served = [i for i in live if await api_audio_sha(env, i.box_id, i.doc_id) == audio_sha]
        if not served:
            tally.lost += 1
            tally.problems.append(f"{where}: {message_id} has no live copy serving its audio")


async def check_completed(env: Env, plan: Round, tally: Tally) -> None:
    """After the re-run: the operation is complete, once per message and destination."""
    found = await inventory(env, plan.boxes)
    live = [i for i in found if not i.deleted]
    where = f"round {plan.number} ({plan.op}, after re-run)"
    if plan.op == "delete":
        if any(i.doc_id in plan.audio for i in live):
            tally.problems.append(f"{where}: messages still live: {live}")
        if await api_listing(env, plan.source):
            tally.problems.append(f"{where}: the source box still lists messages")
        return
    source_live = sorted(i.doc_id for i in live if i.box_id == plan.source)
    expected_source = [] if plan.op == "move" else sorted(plan.audio)
    if source_live != expected_source:
        tally.problems.append(f"{where}: source box holds {source_live}")
    if await api_listing(env, plan.source) != expected_source:
        tally.problems.append(f"{where}: the source box lists the wrong messages")
    for box in plan.destinations:
        here = [i for i in live if i.box_id == box]
        per_message = Counter(i.audio_sha for i in here)
        for message_id, audio_sha in plan.audio.items():
            copies = per_message.pop(audio_sha, 0)
            if copies == 0:
                tally.lost += 1
                tally.problems.append(f"{where}: {message_id} never reached {box}")
            elif copies > 1:
                tally.duplicated += copies - 1
                tally.problems.append(f"{where}: {message_id} is {copies} times in {box}")
        if per_message:
            tally.problems.append(f"{where}: unexpected documents in {box}: {per_message}")
        listed = await api_listing(env, box)
        if listed != sorted(i.doc_id for i in here):
            tally.problems.append(f"{where}: {box} lists {listed}, holds {here}")
        for i in here:
            if await api_audio_sha(env, box, i.doc_id) != i.audio_sha:
                tally.problems.append(f"{where}: {i.doc_id} serves other audio")


async def test_stopping_couchdb_during_bulk_operations_loses_and_duplicates_nothing(
    env: Env,
) -> None:
    rng = random.Random(SEED)
    tally = Tally()
    # One undisturbed run of each operation tells how long it takes on this machine, so that
    # the stop points spread over the whole operation (and a little past it).
    duration_s: dict[str, float] = {}
    for n, op in enumerate(OPERATIONS):
        plan = await new_round(env, 90 + n, op)
        started = time.monotonic()
        resp, body = await fire(env, plan)
        duration_s[op] = time.monotonic() - started
        assert_success(resp, body)
        await check_completed(env, plan, tally)
    assert not tally.problems, tally.problems
    for number in range(FAULT_ROUNDS):
        op = OPERATIONS[number % len(OPERATIONS)]
        delay_s = rng.uniform(0.0, 1.2) * duration_s[op]
        kill = rng.random() < 0.5
        plan = await new_round(env, number, op)
        started = time.monotonic()
        pending = asyncio.create_task(fire(env, plan))
        await asyncio.sleep(max(0.0, delay_s - (time.monotonic() - started)))
        if not pending.done():
            tally.interrupted += 1
        await env.couch.stop(kill=kill)
        resp, _ = await asyncio.wait_for(pending, CLIENT_GIVE_UP_S)
        tally.statuses[resp.status] += 1
        await env.couch.start()
        await check_survivors(env, plan, tally, f"stopped after {delay_s * 1000:.0f} ms")
        resp, body = await fire(env, plan)
        if resp.status != 200:
            tally.problems.append(f"round {number} ({op}): re-run answered {resp.status} {body}")
        await check_completed(env, plan, tally)
        tally.rounds += 1
    print(f"faults: {tally.rounds} rounds ({tally.interrupted} interrupted mid-request), "
          f"first answers {dict(tally.statuses)}, lost {tally.lost}, "
          f"duplicated {tally.duplicated}, durations {duration_s}")
    assert tally.lost == 0
    assert tally.duplicated == 0
    assert not tally.problems, "\n".join(tally.problems)


# -- concurrent write storms ------------------------------------------------------------------


STORM = 30


def conflict_or_ok(resp: ClientResponse, body: Any, ok: int = 200) -> bool:
    """True for success; a 409 must be the platform's conflict error; nothing else is allowed."""
    if resp.status == ok:
        return True
    assert resp.status == 409, (resp.status, body)
    assert_error(resp, body, 409, "datastore_conflict")
    return False


async def test_concurrent_box_patches_keep_every_acknowledged_key(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    path = vmboxes_path(account) + f"/{box}"
    answers = await asyncio.gather(*(
        api.call("PATCH", path, account.token, {f"k{n}": n}) for n in range(STORM)))
    accepted = [n for n, (resp, body) in enumerate(answers) if conflict_or_ok(resp, body)]
    doc = await stores.couch.get_doc(account.db, box)
    assert doc is not None
    lost = [n for n in accepted if doc.get(f"k{n}") != n]
    print(f"box PATCH storm: {len(accepted)} of {STORM} answered 200, "
          f"{STORM - len(accepted)} answered 409, {len(lost)} acknowledged keys lost")
    assert not lost, f"PATCHes answered 200 but their keys are gone: {lost}"
    # docs/api.md 9.5: the response is the saved box, so it holds its own key.
    for n in accepted:
        assert assert_success(*answers[n])[f"k{n}"] == n


async def test_concurrent_changes_of_one_message_keep_every_acknowledged_change(
    api: Api, account: Tenant, stores: Stores
) -> None:
    """Folder changes (single and bulk) race audio replacements on one message."""
    box = await create_box(api, account)
    original = b"original-audio"
    message_id = (await create_message_with_audio(api, account, box, original))["media_id"]
    other_id = (await create_message(api, account, box))["media_id"]
    single = message_path(account, box, message_id)
    uploads = {n: f"replacement-{n}-".encode() + secrets.token_bytes(64) for n in range(5)}
    calls = [api.call("POST", single, account.token, {"folder": "saved"}) for _ in range(15)]
    calls += [api.call("POST", messages_path(account, box), account.token,
                       {"messages": [message_id, other_id], "folder": "saved"})
              for _ in range(10)]
    calls += [api.call("PUT", single + "/raw", account.token, body=audio,
                       headers={"Content-Type": "audio/mpeg"}) for audio in uploads.values()]
    answers = await asyncio.gather(*calls)
    folder_ok = 0
    for resp, body in answers[:15]:
        folder_ok += conflict_or_ok(resp, body)
    for resp, body in answers[15:25]:
        assert resp.status == 200, body
        result = body["data"]
        folder_ok += message_id in result.get("succeeded", [])
        for failure in result.get("failed", []):
            assert failure.get(message_id, "conflict") == "conflict", result
    accepted_audio = [audio for (resp, body), audio in zip(answers[25:], uploads.values(),
                                                           strict=True)
                      if conflict_or_ok(resp, body, ok=201)]
    doc = await must_stored(stores, account, message_id)
    attachments = await stored_attachments(stores, account, message_id)
    print(f"message storm: {folder_ok} of 25 folder changes and {len(accepted_audio)} of 5 "
          f"uploads acknowledged")
    assert not doc.get("pvt_deleted")
    if folder_ok:
        assert doc["metadata"]["folder"] == "saved", "an acknowledged folder change was lost"
    stored = [data for _, data in attachments.values()]
    assert len(stored) == 1, f"{len(stored)} attachments"
    assert stored[0] in (accepted_audio or [original]), "the audio is not an acknowledged one"
    resp = await api.client.get(single + "/raw", headers={"X-Auth-Token": account.token})
    assert await resp.read() == stored[0]


async def test_concurrent_folder_changes_and_deletes_in_one_box(
    api: Api, account: Tenant, stores: Stores
) -> None:
    """Bulk folder changes race single changes and deletes: no delete is undone, no change lost.
    """
    box = await create_box(api, account)
    ids = [(await create_message(api, account, box))["media_id"] for _ in range(12)]
    bulk = messages_path(account, box)
    calls = [api.call("POST", bulk, account.token,
                      {"messages": [ids[n], ids[(n + 1) % 12], ids[(n + 2) % 12]],
                       "folder": "saved"}) for n in range(12)]
    deleted_at = list(range(0, 12, 2))
    calls += [api.call("DELETE", message_path(account, box, ids[n]), account.token)
              for n in deleted_at]
    calls += [api.call("POST", message_path(account, box, ids[n]), account.token,
                       {"folder": "saved"}) for n in range(1, 12, 2)]
    answers = await asyncio.gather(*calls)
    saved: set[str] = set()
    for resp, body in answers[:12]:
        assert resp.status == 200, body
        saved.update(body["data"].get("succeeded", []))
        for failure in body["data"].get("failed", []):
            assert set(failure.values()) <= {"conflict", "not_found"}, failure
    deleted = {ids[n] for n, (resp, body) in zip(deleted_at, answers[12:18], strict=True)
               if conflict_or_ok(resp, body)}
    for n, (resp, body) in zip(range(1, 12, 2), answers[18:], strict=True):
        if conflict_or_ok(resp, body):
            saved.add(ids[n])
    for message_id in ids:
        doc = await must_stored(stores, account, message_id)
        folder = doc["metadata"]["folder"]
        if message_id in deleted:
            assert doc.get("pvt_deleted") is True, f"a delete of {message_id} was undone"
            assert folder == "deleted"
        elif message_id in saved:
            assert not doc.get("pvt_deleted")
            assert folder == "saved", f"an acknowledged change of {message_id} was lost"


# docs/storage.md 10: a read-modify-write update re-reads and retries up to 3 times on a CouchDB
# 409,
# so two writers racing on one document both succeed (409 is for storms beyond the retries).
PAIR_ROUNDS = 6


async def test_two_racing_box_patches_both_succeed(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    path = vmboxes_path(account) + f"/{box}"
    refused: list[str] = []
    accepted: list[str] = []
    for n in range(PAIR_ROUNDS):
        keys = (f"a{n}", f"b{n}")
        answers = await asyncio.gather(*(
            api.call("PATCH", path, account.token, {key: n}) for key in keys))
        for key, (resp, body) in zip(keys, answers, strict=True):
            (accepted if conflict_or_ok(resp, body) else refused).append(key)
    doc = await stores.couch.get_doc(account.db, box)
    assert doc is not None
    assert all(key in doc for key in accepted)
    print(f"racing box PATCH pairs: {len(refused)} of {2 * PAIR_ROUNDS} answered 409")
    assert not refused, f"{len(refused)} of {2 * PAIR_ROUNDS} racing PATCHes answered 409"


async def test_two_racing_bulk_folder_changes_both_succeed(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    bulk = messages_path(account, box)
    conflicts = 0
    for _ in range(PAIR_ROUNDS):
        message_id = (await create_message(api, account, box))["media_id"]
        answers = await asyncio.gather(*(
            api.call("POST", bulk, account.token, {"messages": [message_id], "folder": folder})
            for folder in ("saved", "deleted")))
        for resp, body in answers:
            assert resp.status == 200, body
            conflicts += len(body["data"].get("failed", []))
    print(f"racing bulk folder pairs: {conflicts} of {2 * PAIR_ROUNDS} reported conflict")
    assert conflicts == 0, f"{conflicts} of {2 * PAIR_ROUNDS} racing bulk changes: conflict"


async def test_a_folder_change_racing_an_audio_upload_both_succeed(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    refused: list[str] = []
    for n in range(PAIR_ROUNDS):
        message_id = (await create_message_with_audio(api, account, box, b"before"))["media_id"]
        path = message_path(account, box, message_id)
        audio = f"after-{n}".encode()
        (folder_resp, folder_body), (upload_resp, upload_body) = await asyncio.gather(
            api.call("POST", path, account.token, {"folder": "saved"}),
            api.call("PUT", path + "/raw", account.token, body=audio,
                     headers={"Content-Type": "audio/mpeg"}))
        if not conflict_or_ok(folder_resp, folder_body):
            refused.append("folder change")
        if not conflict_or_ok(upload_resp, upload_body, ok=201):
            refused.append("audio upload")
            continue
        doc = await must_stored(stores, account, message_id)
        assert doc["metadata"]["folder"] == "saved" or "folder change" in refused
        stored = [data for _, data in (await stored_attachments(
            stores, account, message_id)).values()]
        assert stored == [audio]
    print(f"folder change vs upload pairs: refused {Counter(refused)}")
    assert not refused, f"racing writers answered 409: {Counter(refused)}"
