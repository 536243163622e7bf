"""Races (docs/integrity.md): every pair of message operations, two at a time and twenty.

Each scenario starts one message with audio in box A and fires the two operations at once (N=2)
or ten of each (N=20); moves go to boxes of their own, copies to box C, audio replaces carry
audio of their own. Then the stored documents are read straight from CouchDB and held against
what the answers promised: nothing lost, nothing duplicated, nothing resurrected, the newest
acknowledged audio kept, nothing left behind by the losers.

PISTON_VM_RACE_ROUNDS (default 2) repeats every scenario; the figures in the closing note of
the integrity work were taken with 20.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import ClientResponse

from piston_vm.storage.stores import Stores
from tests.conftest import Tenant
from tests.helpers import Api
from tests.test_message_support import (
    create_box,
    create_message_with_audio,
    message_path,
    messages_path,
    raw_path,
    stored_message_docs,
)

JsonObject = dict[str, Any]

ROUNDS = int(os.environ.get("PISTON_VM_RACE_ROUNDS", "2"))
OPERATIONS = ("move", "copy", "folder", "delete", "replace", "bulk_move", "bulk_copy",
              "bulk_delete", "bulk_folder")
PAIRS = list(itertools.combinations_with_replacement(OPERATIONS, 2))
MOVES = ("move", "bulk_move")
COPIES = ("copy", "bulk_copy")
DELETES = ("delete", "bulk_delete")
# Statuses a race may answer: the winner's success, the losers' conflict or not-found.
ALLOWED = {200, 201, 404, 409}
AUDIO_BYTES = 48 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Boxes:
    source: str
    copy_to: str
    move_to: list[str]


@dataclass
class Outcome:
    op: str
    index: int
    status: int
    body: Any
    audio_sha: str | None = None  # what a replace sent

    @property
    def acknowledged(self) -> bool:
        if self.status not in (200, 201):
            return False
        if self.op.startswith("bulk_"):
            data = (self.body or {}).get("data") or {}
            return bool(data.get("succeeded"))
        return True


@dataclass
class Stored:
    doc_id: str
    box_id: str
    deleted: bool
    pending: bool
    attachments: int
    audio_sha: str | None


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)


async def stored_messages(stores: Stores, tenant: Tenant, boxes: set[str]) -> list[Stored]:
    """Every message document of the boxes, read from CouchDB with its attachment bytes."""
    found = []
    for doc in await stored_message_docs(stores, tenant):
        if doc.get("source_id") not in boxes:
            continue
        attachments = doc.get("_attachments") or {}
        audio = None
        if len(attachments) == 1:
            [stub] = attachments.values()
            audio = sha(base64.b64decode(stub["data"]))
        found.append(Stored(doc["_id"], doc["source_id"], bool(doc.get("pvt_deleted")),
                            bool(doc.get("pvt_move_pending")), len(attachments), audio))
    return found


async def fire(api: Api, tenant: Tenant, boxes: Boxes, message_id: str, op: str,
               index: int) -> Outcome:
    token, box = tenant.token, boxes.source
    resp: ClientResponse
    if op == "replace":
        audio = secrets.token_bytes(AUDIO_BYTES + index)
        resp, body = await api.call(
            "PUT", raw_path(tenant, box, message_id), token, body=audio,
            headers={"Content-Type": "audio/mpeg"}, params={"filename": f"take{index}.mp3"})
        return Outcome(op, index, resp.status, body, sha(audio))
    single = message_path(tenant, box, message_id)
    bulk = messages_path(tenant, box)
    if op == "move":
        resp, body = await api.call("POST", single, token, {"source_id": boxes.move_to[index]})
    elif op == "copy":
        resp, body = await api.call("POST", single, token, {"source_id": [boxes.copy_to]})
    elif op == "folder":
        resp, body = await api.call("POST", single, token, {"folder": "saved"})
    elif op == "delete":
        resp, body = await api.call("DELETE", single, token)
    elif op == "bulk_move":
        resp, body = await api.call("POST", bulk, token, {
            "messages": [message_id], "source_id": boxes.move_to[index]})
    elif op == "bulk_copy":
        resp, body = await api.call("POST", bulk, token, {
            "messages": [message_id], "source_id": [boxes.copy_to]})
    elif op == "bulk_delete":
        resp, body = await api.call("DELETE", bulk, token, {"messages": [message_id]})
    else:
        resp, body = await api.call("POST", bulk, token, {
            "messages": [message_id], "folder": "saved"})
    return Outcome(op, index, resp.status, body)


def judge(outcomes: list[Outcome], found: list[Stored], boxes: Boxes, original_sha: str,
          where: str) -> list[str]:
    problems = []
    for o in outcomes:
        if o.status not in ALLOWED:
            problems.append(f"{where}: {o.op} answered {o.status} {o.body}")
    for o in outcomes:
        failed = ((o.body or {}).get("data") or {}).get("failed") if o.op.startswith(
            "bulk_") and o.status == 200 else None
        for entry in failed or []:
            if set(entry.values()) - {"not_found", "conflict"}:
                problems.append(f"{where}: {o.op} failed with {entry}")
    acked = [o for o in outcomes if o.acknowledged]
    moved = [o for o in acked if o.op in MOVES]
    deleted = [o for o in acked if o.op in DELETES]
    replaced = {o.audio_sha for o in acked if o.op == "replace"}
    every_replace = {o.audio_sha for o in outcomes if o.op == "replace"}
    live = [s for s in found if not s.deleted]
    lineage = [s for s in live if s.box_id != boxes.copy_to]  # the message itself, wherever
    copies = [s for s in live if s.box_id == boxes.copy_to]
    if len(moved) > 1:
        problems.append(f"{where}: {len(moved)} moves of one message succeeded")
    if moved and deleted:
        problems.append(f"{where}: both a move and a delete succeeded")
    if deleted:
        if lineage:
            problems.append(f"{where}: deleted (200) yet live in {[s.box_id for s in lineage]}")
    elif len(lineage) != 1:
        problems.append(f"{where}: the message is live {len(lineage)} times: {lineage}")
    if moved and lineage:
        index = moved[0].index
        if lineage[0].box_id != boxes.move_to[index]:
            problems.append(f"{where}: moved to {boxes.move_to[index]} but lives in "
                            f"{lineage[0].box_id}")
    for s in [*lineage, *copies]:
        if s.attachments != 1:
            problems.append(f"{where}: {s.doc_id} has {s.attachments} attachments")
        allowed = (replaced if replaced and s in lineage else {original_sha, *every_replace})
        if s.audio_sha not in allowed:
            problems.append(f"{where}: {s.doc_id} in {s.box_id} holds other audio than "
                            f"acknowledged")
    if len(copies) > 1:
        problems.append(f"{where}: {len(copies)} copies in the copy box")
    if any(o.op in COPIES for o in acked) and not copies:
        problems.append(f"{where}: a copy succeeded but the copy box is empty")
    leftovers = [s for s in found if s.pending]
    if leftovers:
        problems.append(f"{where}: pending move marks left behind: {leftovers}")
    losers = [s for s in live if s.box_id in boxes.move_to and (
        not moved or s.box_id != boxes.move_to[moved[0].index])]
    if losers:
        problems.append(f"{where}: a lost move left copies in {[s.box_id for s in losers]}")
    return problems


async def listed(api: Api, tenant: Tenant, box_id: str) -> list[str]:
    resp, body = await api.call("GET", messages_path(tenant, box_id), tenant.token,
                                params={"paginate": "false"})
    assert resp.status == 200, body
    return sorted(row["media_id"] for row in body["data"])


async def run_pair(api: Api, stores: Stores, tenant: Tenant, boxes: Boxes, first: str,
                   second: str, each: int, rounds: int) -> Verdict:
    verdict = Verdict()
    all_boxes = {boxes.source, boxes.copy_to, *boxes.move_to}
    for number in range(rounds):
        audio = secrets.token_bytes(AUDIO_BYTES)
        data = await create_message_with_audio(api, tenant, boxes.source, audio,
                                               content_type="audio/mpeg")
        message_id = data["media_id"]
        plan = [(first, i) for i in range(each)] + [(second, each + i) for i in range(each)]
        outcomes = list(await asyncio.gather(
            *(fire(api, tenant, boxes, message_id, op, i) for op, i in plan)))
        verdict.statuses.update(o.status for o in outcomes)
        found = await stored_messages(stores, tenant, all_boxes)
        where = f"{first}+{second} x{each * 2} round {number}"
        verdict.problems += judge(outcomes, found, boxes, sha(audio), where)
        for box in all_boxes:
            expected = sorted(s.doc_id for s in found if s.box_id == box and not s.deleted)
            if await listed(api, tenant, box) != expected:
                verdict.problems.append(f"{where}: {box} lists other messages than it holds")
        # Clean slate for the next round: soft-delete whatever lives.
        for box in all_boxes:
            await api.call("DELETE", messages_path(tenant, box), tenant.token)
    return verdict


@pytest.mark.parametrize("size", [2, 20], ids=["n2", "n20"])
@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a}+{b}" for a, b in PAIRS])
async def test_racing_operations_lose_duplicate_and_resurrect_nothing(
    api: Api, stores: Stores, account: Tenant, first: str, second: str, size: int
) -> None:
    each = size // 2
    source = await create_box(api, account, "2000")
    copy_to = await create_box(api, account, "2001")
    move_to = [await create_box(api, account, str(2100 + n)) for n in range(size)]
    boxes = Boxes(source, copy_to, move_to)
    verdict = await run_pair(api, stores, account, boxes, first, second, each, ROUNDS)
    assert not verdict.problems, "\n".join(verdict.problems[:20])
