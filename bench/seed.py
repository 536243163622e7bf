"""Realistic voicemail message documents written straight into the monthly databases."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import random
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.http import Couch
from piston_vm.core import gregorian
from piston_vm.core.config import DEFAULT_COUCHDB_DIR
from piston_vm.storage.names import DbName

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

MODB_DESIGN_DIR: Path = DEFAULT_COUCHDB_DIR / "modb"
ACCOUNT_DESIGN_DIR: Path = DEFAULT_COUCHDB_DIR / "account"
DESIGN = "mailbox_messages"
BOX_ZONE = "America/Los_Angeles"
SPREAD_S = 90 * 86_400  # messages spread over the last 3 months
BULK_DOCS = 1000
BULK_IN_FLIGHT = 2
# Inline audio of seeded messages: real recordings are 30-500 KB, but the views never read
# attachment bodies, so a small stub keeps tens of thousands of documents cheap to write.
SEED_AUDIO_BYTES = 1024
FOLDER_WEIGHTS = (("new", 0.35), ("saved", 0.55), ("deleted", 0.10))
TRANSCRIBED_SHARE = 0.2


@dataclass(frozen=True, slots=True)
class Box:
    id: str
    mailbox: str


def design_docs(directory: Path) -> list[JsonObject]:
    """The service's design documents for one kind of database (couchdb/<kind>/*.json)."""
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def design_views(directory: Path) -> list[tuple[str, str]]:
    """(design name, view name) of every view the service defines for that kind of database."""
    return [(str(doc["_id"]).removeprefix("_design/"), view)
            for doc in design_docs(directory) for view in doc.get("views", {})]


def message_name(mailbox: str, gregorian_s: int) -> str:
    """docs/storage.md 5.3: the time in the box zone, hour/minute/second unpadded."""
    moment = datetime.fromtimestamp(gregorian.to_unix(gregorian_s), ZoneInfo(BOX_ZONE))
    return (f"mailbox {mailbox} message {moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
            f"{moment.hour}:{moment.minute}:{moment.second}")


@dataclass
class MessageFactory:
    """Documents in the shape the platform's callflow and piston_vm write (docs/storage.md 5)."""

    account_id: str
    realm: str
    rng: random.Random
    node: str = "piston_vm@bench"

    def document(
        self, box: Box, timestamp: int, *, folder: str | None = None, inline_audio: bool = True
    ) -> tuple[DbName, JsonObject]:
        rng = self.rng
        month = gregorian.utc_month(timestamp)
        modb = DbName(self.account_id).modb(*month)
        message_id = f"{month[0]:04d}{month[1]:02d}-{secrets.token_hex(16)}"
        caller = f"+1415{rng.randrange(2_000_000, 9_999_999):07d}"
        sender = f"{caller}@{self.realm}"
        recipient = f"{box.mailbox}@{self.realm}"
        if folder is None:
            folder = rng.choices([f for f, _ in FOLDER_WEIGHTS],
                                 [w for _, w in FOLDER_WEIGHTS])[0]
        metadata: JsonObject = {
            "media_id": message_id,
            "call_id": secrets.token_hex(12),
            "caller_id_name": rng.choice(["WIRELESS CALLER", "ACME CORP", "J SMITH", caller]),
            "caller_id_number": caller,
            "from": sender, "from_user": caller, "from_realm": self.realm,
            "length": rng.randrange(2_000, 180_000),
            "timestamp": timestamp,
            "to": recipient, "to_user": box.mailbox, "to_realm": self.realm,
            "folder": folder,
        }
        created = timestamp + rng.randrange(1, 5)
        media_name = f"{secrets.token_hex(16)}.mp3"
        doc: JsonObject = {
            "_id": message_id,
            "name": message_name(box.mailbox, timestamp),
            "description": "voicemail message with media",
            "source_type": "voicemail",
            "source_id": box.id,
            "media_source": "recording",
            "media_filename": media_name,
            "streamable": True,
            "utc_seconds": timestamp,
            "metadata": metadata,
            "pvt_type": "mailbox_message",
            "pvt_account_id": self.account_id,
            "pvt_account_db": modb.encoded,
            "pvt_created": created,
            "pvt_modified": created,
            "pvt_vsn": "1",
            "pvt_node": self.node,
            "pvt_request_id": secrets.token_hex(16),
            "pvt_is_authenticated": True,
            "pvt_auth_account_id": self.account_id,
        }
        doc["pvt_alphanum_name"] = "".join(c for c in doc["name"].lower() if c.isalnum())
        if rng.random() < TRANSCRIBED_SHARE:
            doc["transcription"] = {"result": "success",
                                    "text": "Hi, it's me, please call me back when you can."}
        public = {k: v for k, v in doc.items() if not k.startswith(("pvt_", "_"))}
        doc["pvt_document_hash"] = hashlib.md5(
            json.dumps({"public": {**public, "id": message_id}}, sort_keys=True).encode()
        ).hexdigest()
        if inline_audio:
            audio = rng.randbytes(SEED_AUDIO_BYTES)
            doc["_attachments"] = {media_name: {
                "content_type": "audio/mpeg", "data": base64.b64encode(audio).decode("ascii")}}
        return modb, doc


def zipf_boxes(boxes: list[Box], count: int, rng: random.Random) -> list[Box]:
    """Busy and quiet boxes, as in real accounts: box i gets a share proportional to 1/(i+1)."""
    weights = [1.0 / (i + 1) for i in range(len(boxes))]
    return rng.choices(boxes, weights, k=count)


@dataclass
class Seeder:
    couch: Couch
    factory: MessageFactory
    boxes: list[Box]
    ready_modbs: set[DbName] = field(default_factory=set)
    per_box: dict[str, int] = field(default_factory=dict)
    # The newest message of each box: (MODB, id), for single-message reads.
    newest: dict[str, tuple[DbName, str]] = field(default_factory=dict)
    _newest_time: dict[str, int] = field(default_factory=dict)
    seeded: int = 0

    async def ensure_modb(self, modb: DbName) -> None:
        """Create a MODB with the service's design docs, as the service itself would
        (docs/decisions.md D-12)."""
        if modb in self.ready_modbs:
            return
        await self.couch.ensure_db(modb.unencoded)
        for design in design_docs(MODB_DESIGN_DIR):
            await self.couch.put_design(modb.unencoded, design)
        self.ready_modbs.add(modb)

    async def add(self, count: int, now: int) -> float:
        """Write `count` more messages dated over the last 3 months; seconds spent writing."""
        started = time.perf_counter()
        rng = self.factory.rng
        by_modb: dict[DbName, list[JsonObject]] = {}
        for box in zipf_boxes(self.boxes, count, rng):
            timestamp = now - rng.randrange(60, SPREAD_S)
            modb, doc = self.factory.document(box, timestamp)
            by_modb.setdefault(modb, []).append(doc)
            self.per_box[box.id] = self.per_box.get(box.id, 0) + 1
            if timestamp > self._newest_time.get(box.id, 0):
                self._newest_time[box.id] = timestamp
                self.newest[box.id] = (modb, str(doc["_id"]))
        for modb in by_modb:
            await self.ensure_modb(modb)
        batches = [(modb, docs[i:i + BULK_DOCS])
                   for modb, docs in by_modb.items() for i in range(0, len(docs), BULK_DOCS)]
        gate = asyncio.Semaphore(BULK_IN_FLIGHT)

        async def write(modb: DbName, batch: list[JsonObject]) -> None:
            async with gate:
                await self.couch.bulk_docs(modb.unencoded, batch)

        await asyncio.gather(*(write(m, b) for m, b in batches))
        self.seeded += count
        return time.perf_counter() - started

    async def build_indexes(self, account_db: DbName) -> JsonObject:
        """Bring every view of the service's design docs up to date (whatever the code reads
        today), one query each; seconds per view, summed per view name, and in total."""
        targets = [(modb.unencoded, design, view)
                   for modb in sorted(self.ready_modbs, key=lambda m: m.month or (0, 0))
                   for design, view in design_views(MODB_DESIGN_DIR)]
        targets += [(account_db.unencoded, design, view)
                    for design, view in design_views(ACCOUNT_DESIGN_DIR)]
        per_view: dict[str, float] = {}
        total_started = time.perf_counter()
        for db, design, view in targets:
            started = time.perf_counter()
            await self.couch.view(db, design, view, {"limit": 1})
            name = f"{design}/{view}"
            per_view[name] = per_view.get(name, 0.0) + time.perf_counter() - started
        return {"total_s": time.perf_counter() - total_started, "per_view_s": per_view}


def months_in_window(start: int, end: int) -> Iterable[tuple[int, int]]:
    year, month = gregorian.utc_month(start)
    last = gregorian.utc_month(end)
    while (year, month) <= last:
        yield year, month
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
