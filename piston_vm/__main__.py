"""Command line: `piston-vm serve | couchdb | accounts create`; logging is configured here, once."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from piston_vm import devserver
from piston_vm.app import create_app
from piston_vm.cli_migrate import add_migrate_parser, main_migrate
from piston_vm.cli_users import add_users_parser, main_users
from piston_vm.config import CouchEndpoint, Settings, settings_from_env
from piston_vm.storage import admin

log = logging.getLogger("piston_vm")

DEFAULT_DEVSERVER_PORT = 5984
# The bundled server's admin login when piston-vm starts it itself; it listens on loopback only.
DEV_ADMIN = ("admin", "admin")


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="piston-vm", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--couchdb-url", help="CouchDB URL with credentials; default: bundled")
    serve.add_argument("--data-dir", type=Path, help="bundled server data (default var/couchdb)")
    serve.add_argument("--couchdb-port", type=int, default=DEFAULT_DEVSERVER_PORT,
                       help="port of the bundled server when piston-vm starts it")

    couch = commands.add_parser("couchdb", help="run the bundled CouchDB-protocol server")
    couch.add_argument("--host", default="127.0.0.1")
    couch.add_argument("--port", type=int, default=DEFAULT_DEVSERVER_PORT)
    couch.add_argument("--data-dir", type=Path, default=Path("var/couchdb"))
    couch.add_argument("--in-memory", action="store_true")
    couch.add_argument("--admin", help="user:password of the server admin")

    accounts = commands.add_parser("accounts", help="manage accounts")
    account_commands = accounts.add_subparsers(dest="accounts_command", required=True)
    create = account_commands.add_parser("create", help="create an account, print its API key")
    create.add_argument("--name", required=True)
    create.add_argument("--realm")
    create.add_argument("--parent", help="parent account id")
    create.add_argument("--superduper", action="store_true")
    create.add_argument("--couchdb-url")
    add_users_parser(commands)
    add_migrate_parser(commands)
    return parser


def _settings(couchdb_url: str | None) -> Settings:
    settings = settings_from_env()
    if couchdb_url:
        settings = settings.with_overrides(couchdb=CouchEndpoint.parse(couchdb_url))
    return settings


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


async def _create_account(settings: Settings, args: argparse.Namespace) -> dict[str, str]:
    if settings.couchdb is None:
        raise SystemExit("accounts create needs --couchdb-url or PISTON_VM_COUCHDB_URL")
    account, api_key = await admin.create_account(
        settings, name=args.name, realm=args.realm, parent_id=args.parent,
        superduper=args.superduper,
    )
    return {"account_id": account.id, "api_key": api_key}


def _run(main_coroutine: Coroutine[Any, Any, None]) -> None:
    """Run the server on uvloop when it is installed: the service is mostly socket round
    trips to clients and CouchDB, and uvloop's loop and transports cost less per request."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
        return
    uvloop.run(main_coroutine)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        if args.command == "serve":
            settings = _settings(args.couchdb_url).with_overrides(
                host=args.host, port=args.port, data_dir=args.data_dir
            )
            _run(_serve(settings, args.couchdb_port))
            return 0
        if args.command == "couchdb":
            admin_login = tuple(args.admin.split(":", 1)) if args.admin else None
            if admin_login is not None and len(admin_login) != 2:
                raise SystemExit("--admin takes user:password")
            return devserver.run_foreground(
                host=args.host, port=args.port, data_dir=args.data_dir,
                in_memory=args.in_memory,
                admin=(admin_login[0], admin_login[1]) if admin_login else None,
            )
        if args.command == "migrate":
            return main_migrate(args)
        if args.command == "users":
            return main_users(args)
        if args.command == "accounts":
            result = asyncio.run(_create_account(_settings(args.couchdb_url), args))
            print(json.dumps(result))
            return 0
    except KeyboardInterrupt:
        return 0
    except (admin.CouchDBUnusable, devserver.DevServerError) as exc:
        log.error("%s", exc)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
