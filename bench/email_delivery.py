"""`python -m bench.email_delivery`: voicemail-to-email throughput with 100 KB attachments.

Starts its own bundled CouchDB-protocol server (or uses `--couchdb-url`) and a real SMTP server
(aiosmtpd) in this process, creates voicemails with audio through the message use case, then
times `EmailNotifier.handle` for their `voicemail_new` events at 1 and 8 events at once and
prints emails per second (every email carries its attachment; each is recorded as pending, then
accepted, in CouchDB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP as SmtpServer  # noqa: N811
from aiosmtpd.smtp import Envelope, Session

from piston_vm.core import gregorian
from piston_vm.core.call import Call
from piston_vm.core.config import CouchEndpoint, Settings
from piston_vm.core.events import NOTIFICATION, VOICEMAIL_NEW, Event
from piston_vm.core.validation import SchemaValidator
from piston_vm.services.audio import AudioInput
from piston_vm.services.email_notify import EmailNotifier
from piston_vm.services.legacy import LegacyMigrator
from piston_vm.services.messages import MessageService
from piston_vm.storage import devserver
from piston_vm.storage.couch import CouchClient
from piston_vm.storage.stores import Stores

JsonObject = dict[str, Any]
ADMIN = ("admin", "bench")


class Sink:
    """Accepts every email; counts them and their bytes."""

    def __init__(self) -> None:
        self.emails = 0
        self.bytes = 0

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SmtpServer, session: Session, envelope: Envelope,
    ) -> str:
        self.emails += 1
        self.bytes += len(envelope.original_content or b"")
        return "250 2.0.0 Ok"


def audio_input(body: bytes) -> AudioInput:
    async def chunks() -> AsyncIterator[bytes]:
        yield body

    return AudioInput("bench.mp3", "audio/mpeg", len(body), chunks)


async def voicemails(stores: Stores, messages: MessageService, count: int,
                     audio_bytes: int) -> list[Event]:
    account, _ = await stores.accounts.create("Email bench", "bench.example.net")
    await stores.databases.ensure_account_db(account.db)
    user = await stores.users.create(account.id, "owner", "pw", email="owner@bench.example.net")
    box: JsonObject = {
        "_id": secrets.token_hex(16), "name": "Bench box", "mailbox": "3000",
        "owner_id": user["_id"], "timezone": "America/New_York",
        "include_message_on_notify": True, "pvt_type": "vmbox", "pvt_account_id": account.id,
        "pvt_account_db": account.db.encoded, "pvt_created": gregorian.now(),
        "pvt_modified": gregorian.now()}
    await stores.couch.put_doc(account.db.unencoded, box)
    body = secrets.token_bytes(audio_bytes)
    events = []
    for n in range(count):
        call = Call(f"bench-{n}", envelope={"data": {"caller_id_number": f"1555000{n:04d}",
                                                     "caller_id_name": "Bench Caller",
                                                     "length": 20_000}})
        doc = await messages.create(call, account, box, audio_input(body), None)
        events.append(Event(id=f"bench-{doc['_id']}", category=NOTIFICATION, name=VOICEMAIL_NEW,
                            account_id=account.id, payload={}, timestamp=gregorian.now(),
                            box_id=box["_id"], message_id=doc["_id"]))
    return events


async def timed(notifier: EmailNotifier, events: list[Event], concurrency: int) -> float:
    queue = list(events)

    async def worker() -> None:
        while queue:
            result = await notifier.handle(queue.pop())
            assert len(result.accepted) == 1, result

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def measure(endpoint: CouchEndpoint, count: int, audio_bytes: int) -> JsonObject:
    sink = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SmtpServer(sink, data_size_limit=0),
                                      "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = Settings(couchdb=endpoint, smtp_host="127.0.0.1", smtp_port=port,
                        smtp_tls="none", smtp_from="voicemail@bench.example.net")
    couch = CouchClient(endpoint, settings.couchdb_timeout_s)
    await couch.start()
    try:
        stores = Stores.build(settings, couch)
        await stores.accounts.ensure_accounts_db()
        validator = SchemaValidator(settings.schemas_dir, settings.max_pin_length,
                                    settings.transcribe_default)
        messages = MessageService(stores, validator, settings, LegacyMigrator(stores, settings))
        notifier = EmailNotifier(stores, settings, messages)
        runs = []
        for concurrency in (1, 8):
            events = await voicemails(stores, messages, count, audio_bytes)
            before = sink.emails
            seconds = await timed(notifier, events, concurrency)
            assert sink.emails - before == count
            runs.append({"concurrency": concurrency, "emails": count,
                         "seconds": round(seconds, 3),
                         "emails_per_s": round(count / seconds, 1)})
    finally:
        await couch.close()
        server.close()
        await server.wait_closed()
    return {"audio_bytes": audio_bytes, "email_bytes": sink.bytes // max(sink.emails, 1),
            "runs": runs, "measured_at": gregorian.iso8601()}


async def main_async(couchdb_url: str | None, count: int, audio_bytes: int) -> JsonObject:
    if couchdb_url:
        return await measure(CouchEndpoint.parse(couchdb_url), count, audio_bytes)
    with tempfile.TemporaryDirectory(prefix="piston-vm-bench-") as data_dir:
        server = await devserver.start_devserver(data_dir=Path(data_dir), admin=ADMIN)
        try:
            return await measure(CouchEndpoint(server.url, *ADMIN), count, audio_bytes)
        finally:
            await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.email_delivery", description=__doc__)
    parser.add_argument("--couchdb-url", help="default: a bundled server of its own")
    parser.add_argument("--emails", type=int, default=200)
    parser.add_argument("--audio-bytes", type=int, default=100_000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = asyncio.run(main_async(args.couchdb_url, args.emails, args.audio_bytes))
    for run in result["runs"]:
        print(f"{run['emails']} emails ({result['email_bytes']} bytes each), "
              f"{run['concurrency']} at once: {run['seconds']} s = {run['emails_per_s']} "
              "emails/s", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
