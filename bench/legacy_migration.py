"""`python -m bench.legacy_migration`: bulk legacy-migration throughput on a 1,000-message account.

Starts its own bundled CouchDB-protocol server (temporary data directory), builds one account
whose boxes hold legacy `messages` entries with their media docs and audio in the account
database (spread over 12 months), then times `run_migrate` (the `piston-vm migrate --account`
path) and a second, idempotent run, and prints entries per second: once with the account's box
view still to be built (cold), once with it built (warm, as on a deployed account).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from piston_vm.cli.migrate import run_migrate
from piston_vm.core import gregorian
from piston_vm.core.config import CouchEndpoint, Settings
from piston_vm.services.audio import AudioService
from piston_vm.services.message_docs import Located
from piston_vm.storage import devserver
from piston_vm.storage.couch import CouchClient
from piston_vm.storage.stores import Stores

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

ADMIN = ("admin", "bench")
# Setup only: media docs go in with their audio inline, this many per `_bulk_docs`.
SETUP_BATCH_DOCS = 200
FIRST_TIME = 63_840_000_000  # 2023-01-08: twelve months of messages from here
YEAR_S = 365 * 86_400


def audio_for(seed: str, size: int) -> bytes:
    block = hashlib.sha256(seed.encode()).digest()
    return (block * (size // len(block) + 1))[:size]


async def build_account(
    stores: Stores, entries: int, boxes: int, audio_bytes: int
) -> tuple[str, dict[str, bytes]]:
    """An account whose `boxes` boxes hold `entries` legacy entries between them."""
    account, _ = await stores.accounts.create("Legacy bench", "bench.example.net")
    db = account.db.unencoded
    audio: dict[str, bytes] = {}
    per_box = [entries // boxes + (1 if n < entries % boxes else 0) for n in range(boxes)]
    for box_number, count in enumerate(per_box):
        box_id = secrets.token_hex(16)
        elements: list[JsonObject] = []
        media_docs: list[JsonObject] = []
        for n in range(count):
            media_id = secrets.token_hex(16)
            body = audio_for(media_id, audio_bytes)
            audio[media_id] = body
            timestamp = FIRST_TIME + (box_number * count + n) * YEAR_S // max(entries, 1)
            media_docs.append({
                "_id": media_id, "name": f"mailbox {3000 + box_number} message {n}",
                "media_source": "recording", "source_type": "voicemail", "source_id": box_id,
                "streamable": True, "pvt_type": "private_media", "pvt_created": timestamp,
                "pvt_modified": timestamp, "pvt_account_id": account.id,
                "_attachments": {f"{media_id}.mp3": {
                    "content_type": "audio/mpeg",
                    "data": base64.b64encode(body).decode("ascii")}},
            })
            elements.append({
                "timestamp": timestamp, "from": f"1555000{n:04d}@10.0.1.1",
                "to": f"{3000 + box_number}@bench.example.net",
                "caller_id_number": f"1555000{n:04d}", "caller_id_name": "BENCH",
                "call_id": secrets.token_hex(16), "folder": "new", "length": 20_520,
                "media_id": media_id,
            })
        for start in range(0, len(media_docs), SETUP_BATCH_DOCS):
            await stores.couch.bulk_docs(db, media_docs[start : start + SETUP_BATCH_DOCS])
        await stores.couch.put_doc(db, {
            "_id": box_id, "name": f"Box {box_number}", "mailbox": str(3000 + box_number),
            "timezone": "America/Los_Angeles", "media_extension": "mp3", "messages": elements,
            "pvt_type": "vmbox", "pvt_account_id": account.id,
            "pvt_account_db": account.db.encoded, "pvt_created": FIRST_TIME,
            "pvt_modified": FIRST_TIME,
        })
    return account.id, audio


async def check_sample(stores: Stores, account_id: str, audio: dict[str, bytes]) -> int:
    """Read a few migrated messages' audio back through their links; returns how many."""
    account = await stores.accounts.get(account_id)
    assert account is not None
    checked = 0
    service = AudioService(stores)
    for modb in await stores.messages.all_modbs(account.db):
        assert modb.month is not None
        prefix = f"{modb.month[0]:04d}{modb.month[1]:02d}-"
        sample = [prefix + media_id for media_id in list(audio)[:: max(len(audio) // 50, 1)]]
        for doc in await stores.messages.get_docs(modb, sample):
            source = await service.source(Located(modb, doc))
            assert source is not None
            body = b"".join([chunk async for chunk in service.chunks(source)])
            if body != audio[str(doc["pvt_previous_id"])]:
                raise SystemExit(f"audio of {doc['_id']} differs from its legacy media")
            checked += 1
    return checked


async def timed_migration(
    stores: Stores, settings: Settings, entries: int, boxes: int, audio_bytes: int, warm: bool
) -> JsonObject:
    """Build an account, migrate it (optionally after building its box view), check it."""
    started = time.perf_counter()
    account_id, audio = await build_account(stores, entries, boxes, audio_bytes)
    setup_s = time.perf_counter() - started
    if warm:
        # A deployed account's `crossbar_listing` index already exists (the box listing uses
        # it); the bundled server builds views 10-100x slower than CouchDB, which would
        # otherwise dominate the number.
        account = await stores.accounts.get(account_id)
        assert account is not None
        await stores.vmboxes.listing(account.db, None, 1, False, False)
    started = time.perf_counter()
    report = await run_migrate(settings, account_id, False, False)
    migrate_s = time.perf_counter() - started
    started = time.perf_counter()
    rerun = await run_migrate(settings, account_id, False, False)
    rerun_s = time.perf_counter() - started
    checked = await check_sample(stores, account_id, audio)
    if report.migrated != entries or rerun.processed != 0:
        raise SystemExit(f"unexpected reports: {report.as_dict()} then {rerun.as_dict()}")
    return {
        "box_view": "warm" if warm else "cold", "setup_s": round(setup_s, 2),
        "migrate_s": round(migrate_s, 3), "entries_per_s": round(entries / migrate_s, 1),
        "rerun_s": round(rerun_s, 3), "audio_checked": checked, "report": report.as_dict(),
    }


async def main_async(entries: int, boxes: int, audio_bytes: int) -> JsonObject:
    with tempfile.TemporaryDirectory(prefix="piston-vm-bench-") as data_dir:
        server = await devserver.start_devserver(data_dir=Path(data_dir), admin=ADMIN)
        try:
            endpoint = CouchEndpoint(server.url, *ADMIN)
            settings = Settings(couchdb=endpoint)
            couch = CouchClient(endpoint, settings.couchdb_timeout_s)
            await couch.start()
            try:
                stores = Stores.build(settings, couch)
                await stores.accounts.ensure_accounts_db()
                runs = [await timed_migration(stores, settings, entries, boxes, audio_bytes, warm)
                        for warm in (False, True)]
            finally:
                await couch.close()
        finally:
            await server.stop()
    return {"entries": entries, "boxes": boxes, "audio_bytes": audio_bytes, "runs": runs,
            "measured_at": gregorian.iso8601()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.legacy_migration",
                                     description=__doc__)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--boxes", type=int, default=10)
    parser.add_argument("--audio-bytes", type=int, default=16_000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = asyncio.run(main_async(args.entries, max(args.boxes, 1), args.audio_bytes))
    for run in result["runs"]:
        print(f"{result['entries']} legacy entries in {result['boxes']} boxes, "
              f"{run['box_view']} box view: {run['migrate_s']} s = {run['entries_per_s']} "
              f"entries/s (idempotent re-run {run['rerun_s']} s)", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
