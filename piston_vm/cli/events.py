"""`piston-vm events`: the event engine on its own (docs/events.md "Running the engine").

`piston-vm serve` runs the engine too unless PISTON_VM_EVENTS=off; this command is for
operators who run it apart from the API (any number of them: they share the work).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from piston_vm.app import message_service, running_engine
from piston_vm.cli.serve import _run
from piston_vm.cli.settings import command_settings
from piston_vm.core.config import Settings
from piston_vm.storage import admin
from piston_vm.storage.couch import CouchClient
from piston_vm.storage.stores import Stores

log = logging.getLogger("piston_vm")


def add_events_parser(subparsers: Any) -> None:
    events = subparsers.add_parser("events", help="run the event engine (webhooks, stream)")
    events.add_argument("--couchdb-url", help="CouchDB URL with credentials "
                        "(default: PISTON_VM_COUCHDB_URL)")


def main_events(args: argparse.Namespace) -> int:
    settings = command_settings(args.couchdb_url)
    if settings.couchdb is None:
        print("piston-vm events: no CouchDB (PISTON_VM_COUCHDB_URL or --couchdb-url)",
              file=sys.stderr)
        return 2
    _run(_events(settings))
    return 0


async def _events(settings: Settings) -> None:
    assert settings.couchdb is not None
    await admin.check_server(settings.couchdb)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    couch = CouchClient(settings.couchdb, settings.couchdb_timeout_s, settings.couchdb_w)
    await couch.start()
    try:
        stores = Stores.build(settings, couch)
        await stores.accounts.ensure_accounts_db()
        messages = message_service(stores, settings)
        async with running_engine(stores, settings, messages) as engine:
            log.info("event engine %s running; SIGTERM stops it", engine.worker_id)
            await stop.wait()
            log.info("stopping the event engine")
    finally:
        await couch.close()
