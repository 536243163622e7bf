"""Command line: parse, configure logging once, and hand over to the command's module in cli/."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from piston_vm.cli.accounts import add_accounts_parser, main_accounts
from piston_vm.cli.couchdb import add_couchdb_parser, main_couchdb
from piston_vm.cli.events import add_events_parser, main_events
from piston_vm.cli.migrate import add_migrate_parser, main_migrate
from piston_vm.cli.openapi import add_openapi_parser, main_openapi
from piston_vm.cli.serve import add_serve_parser, main_serve
from piston_vm.cli.users import add_users_parser, main_users
from piston_vm.core import logs
from piston_vm.core.config import log_format_from_env
from piston_vm.storage import admin, devserver

log = logging.getLogger("piston_vm")

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": main_serve,
    "couchdb": main_couchdb,
    "accounts": main_accounts,
    "users": main_users,
    "migrate": main_migrate,
    "openapi": main_openapi,
    "events": main_events,
}


def _configure_logging(verbose: bool) -> None:
    # PISTON_VM_LOG_FORMAT (text or json) applies to every record of every command.
    logs.configure(log_format_from_env(), logging.DEBUG if verbose else logging.INFO)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="piston-vm", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(commands)
    add_couchdb_parser(commands)
    add_accounts_parser(commands)
    add_users_parser(commands)
    add_migrate_parser(commands)
    add_openapi_parser(commands)
    add_events_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _configure_logging(args.verbose)
    except ValueError as exc:
        print(f"piston-vm: {exc}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 0
    except (admin.CouchDBUnusable, devserver.DevServerError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
