"""`piston-vm serve`: the HTTP API, on the configured CouchDB or on a bundled server it starts."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from piston_vm.app import create_app
from piston_vm.cli.settings import command_settings
from piston_vm.core.config import CouchEndpoint, Settings
from piston_vm.core.tokens import MIN_SECRET_BYTES
from piston_vm.storage import admin, devserver

log = logging.getLogger("piston_vm")

DEFAULT_DEVSERVER_PORT = 5984
# The bundled server's admin login when piston-vm starts it itself; it listens on loopback only.
DEV_ADMIN = ("admin", "admin")


def add_serve_parser(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--couchdb-url", help="CouchDB URL with credentials; default: bundled")
    serve.add_argument("--data-dir", type=Path, help="bundled server data (default var/couchdb)")
    serve.add_argument("--couchdb-port", type=int, default=DEFAULT_DEVSERVER_PORT,
                       help="port of the bundled server when piston-vm starts it")


def main_serve(args: argparse.Namespace) -> int:
    settings = command_settings(args.couchdb_url).with_overrides(
        host=args.host, port=args.port, data_dir=args.data_dir
    )
    _run(_serve(settings, args.couchdb_port))
    return 0


async def _serve(settings: Settings, couchdb_port: int) -> None:
    server: devserver.DevServer | None = None
    if settings.couchdb is None:
        log.info("no CouchDB URL given: starting the bundled server (data in %s)",
                 settings.data_dir)
        server = await devserver.start_devserver(
            port=couchdb_port, data_dir=settings.data_dir, admin=DEV_ADMIN
        )
        settings = settings.with_overrides(
            couchdb=CouchEndpoint(server.url, DEV_ADMIN[0], DEV_ADMIN[1])
        )
    if len(settings.token_secret.encode()) < MIN_SECRET_BYTES:
        log.warning("PISTON_VM_TOKEN_SECRET is shorter than %d bytes: tokens are easier to forge",
                    MIN_SECRET_BYTES)
    try:
        assert settings.couchdb is not None
        await admin.check_server(settings.couchdb)
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        log.info("piston_vm listening on http://%s:%d (CouchDB %s)", settings.host,
                 settings.port, settings.couchdb.url)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
    finally:
        if server is not None:
            await server.stop()


def _run(main_coroutine: Coroutine[Any, Any, None]) -> None:
    """Run the server on uvloop when it is installed: the service is mostly socket round
    trips to clients and CouchDB, and uvloop's loop and transports cost less per request."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
        return
    uvloop.run(main_coroutine)
