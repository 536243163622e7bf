"""`piston-vm accounts create`: an account with its databases, printed with its API key."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from piston_vm.cli.settings import command_settings
from piston_vm.core.config import Settings
from piston_vm.storage import admin


def add_accounts_parser(subparsers: Any) -> None:
    accounts = subparsers.add_parser("accounts", help="manage accounts")
    account_commands = accounts.add_subparsers(dest="accounts_command", required=True)
    create = account_commands.add_parser("create", help="create an account, print its API key")
    create.add_argument("--name", required=True)
    create.add_argument("--realm")
    create.add_argument("--parent", help="parent account id")
    create.add_argument("--superduper", action="store_true")
    create.add_argument("--couchdb-url")


def main_accounts(args: argparse.Namespace) -> int:
    result = asyncio.run(_create_account(command_settings(args.couchdb_url), args))
    print(json.dumps(result))
    return 0


async def _create_account(settings: Settings, args: argparse.Namespace) -> dict[str, str]:
    if settings.couchdb is None:
        raise SystemExit("accounts create needs --couchdb-url or PISTON_VM_COUCHDB_URL")
    account, api_key = await admin.create_account(
        settings, name=args.name, realm=args.realm, parent_id=args.parent,
        superduper=args.superduper,
    )
    return {"account_id": account.id, "api_key": api_key}
