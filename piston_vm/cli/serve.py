"""`piston-vm serve`: the HTTP API, on the configured CouchDB or on a bundled server it starts."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import subprocess
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from piston_vm.app import create_app, create_metrics_app
from piston_vm.cli.settings import command_settings
from piston_vm.core.config import CouchEndpoint, Settings
from piston_vm.core.tokens import MIN_SECRET_BYTES
from piston_vm.storage import admin, devserver
from piston_vm.web.keys import LIFECYCLE

log = logging.getLogger("piston_vm")

DEFAULT_DEVSERVER_PORT = 5984
# The bundled server's admin login when piston-vm starts it itself; it listens on loopback only.
DEV_ADMIN = ("admin", "admin")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
GIT_TIMEOUT_S = 2.0
# aiohttp's own shutdown runs once no request is in flight (or the drain timed out): what is
# left is sending the last answers' bytes.
FINAL_WRITES_TIMEOUT_S = 2.0


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
    if settings.commit is None:
        settings = settings.with_overrides(commit=git_commit())
    _run(_serve(settings, args.couchdb_port))
    return 0


def git_commit() -> str:
    """The checkout's short commit for piston_vm_build_info; "unknown" outside a git checkout
    (an installed package: set PISTON_VM_COMMIT at build time instead)."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PACKAGE_DIR,
                              capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


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
        await _serve_until_sigterm(settings)
    finally:
        if server is not None:
            await server.stop()


async def _serve_until_sigterm(settings: Settings) -> None:
    """Serve; on SIGTERM drain (docs/operations.md, "Shutdown"): /readyz answers 503 at once,
    requests are still served for the grace period so load balancers can notice, then new
    connections and requests are refused and those in flight get up to the shutdown timeout
    to finish (uploads included: web/lifecycle.py says why aiohttp's shutdown cannot do that)."""
    app = create_app(settings)
    lifecycle = app[LIFECYCLE]
    # Our own access log (web/observe.py) replaces aiohttp's.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=FINAL_WRITES_TIMEOUT_S)
    metrics_app = create_metrics_app(app)
    metrics_runner = (web.AppRunner(metrics_app, access_log=None)
                      if metrics_app is not None else None)
    sigterm = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_sigterm() -> None:
        if sigterm.is_set():
            log.warning("SIGTERM again: already shutting down")
        sigterm.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.host, settings.port).start()
            if metrics_runner is not None:
                await metrics_runner.setup()
                # The scraper's own listener: it stays up while the API drains.
                await web.TCPSite(metrics_runner, settings.host, settings.metrics_port).start()
            assert settings.couchdb is not None
            log.info("piston_vm listening on http://%s:%d (CouchDB %s)", settings.host,
                     settings.port, settings.couchdb.url)
            if metrics_runner is not None:
                log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
            await sigterm.wait()
            lifecycle.begin_draining()
            log.info("SIGTERM: draining; /readyz answers 503, new requests are refused in "
                     "%.1f s", settings.shutdown_grace_s)
            await asyncio.sleep(settings.shutdown_grace_s)
            lifecycle.refuse_new_requests()
            for site in list(runner.sites):
                await site.stop()
            log.info("refusing new requests; waiting up to %.1f s for %d in flight",
                     settings.shutdown_timeout_s, lifecycle.in_flight)
            if not await lifecycle.wait_idle(settings.shutdown_timeout_s):
                log.warning("%d requests still in flight after %.1f s: cutting them off",
                            lifecycle.in_flight, settings.shutdown_timeout_s)
        finally:
            # Closes the connections (letting the last answers go out), then runs the cleanup
            # contexts: the CouchDB client closes last.
            await runner.cleanup()
            if metrics_runner is not None and metrics_runner.server is not None:
                await metrics_runner.cleanup()
        log.info("piston_vm stopped")
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _run(main_coroutine: Coroutine[Any, Any, None]) -> None:
    """Run the server on uvloop when it is installed: the service is mostly socket round
    trips to clients and CouchDB, and uvloop's loop and transports cost less per request."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
        return
    uvloop.run(main_coroutine)
