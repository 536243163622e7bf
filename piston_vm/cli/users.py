"""`piston-vm users create`: a user doc in an account database, as the platform stores it."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any

from piston_vm.cli.settings import command_settings
from piston_vm.core import errors
from piston_vm.core.config import Settings
from piston_vm.core.mail import mail_address
from piston_vm.storage.couch import CouchClient
from piston_vm.storage.names import is_account_id
from piston_vm.storage.stores import Stores
from piston_vm.storage.users import UserStore

log = logging.getLogger(__name__)

EXIT_USAGE = 2


class UserCreationFailed(Exception):
    """Something an operator must fix: the message says what."""


def add_users_parser(subparsers: Any) -> None:
    """Register `users create` on the top-level subparsers (the `commands` of __main__)."""
    users = subparsers.add_parser("users", help="manage users")
    user_commands = users.add_subparsers(dest="users_command", required=True)
    create = user_commands.add_parser("create", help="create a user, print its id")
    create.add_argument("--account", required=True, help="account id")
    create.add_argument("--username", required=True)
    create.add_argument("--password", required=True)
    create.add_argument("--first-name")
    create.add_argument("--last-name")
    create.add_argument("--timezone")
    create.add_argument("--language")
    create.add_argument("--email", help="where the user's voicemail is emailed (docs/email.md)")
    create.add_argument("--couchdb-url")


async def create_user(settings: Settings, args: argparse.Namespace) -> str:
    """Create the user in an existing, usable account; returns the new user id."""
    if settings.couchdb is None:
        raise UserCreationFailed("users create needs --couchdb-url or PISTON_VM_COUCHDB_URL")
    if not is_account_id(args.account):
        raise UserCreationFailed(f"not an account id: {args.account!r}")
    if not args.username or not args.password:
        raise UserCreationFailed("--username and --password must not be empty")
    if args.email is not None and mail_address(args.email) is None:
        raise UserCreationFailed(f"--email: not a plain email address: {args.email!r}")
    couch = CouchClient(settings.couchdb, settings.couchdb_timeout_s, settings.couchdb_w)
    await couch.start()
    try:
        stores = Stores.build(settings, couch)
        account = await stores.accounts.get(args.account)
        if account is None or account.doc.get("pvt_deleted"):
            raise UserCreationFailed(f"account {args.account} does not exist")
        # Logins query users/creds_by_*; an account made elsewhere may not have them yet.
        await stores.databases.ensure_account_db(account.db)
        doc = await UserStore(couch).create(
            account.id, args.username, args.password, first_name=args.first_name,
            last_name=args.last_name, timezone=args.timezone, language=args.language,
            email=args.email,
        )
    finally:
        await couch.close()
    return str(doc["_id"])


def main_users(args: argparse.Namespace) -> int:
    if args.users_command != "create":
        return EXIT_USAGE
    if args.username != args.username.lower():
        log.warning("the browser UI lowercases usernames before hashing: %r can only log in "
                    "from clients that send it as typed", args.username)
    try:
        user_id = asyncio.run(create_user(command_settings(args.couchdb_url), args))
    except (UserCreationFailed, ValueError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except errors.ApiError as exc:
        log.error("CouchDB: %s %s", exc.message, exc.data.get("cause", ""))
        return EXIT_USAGE
    print(json.dumps({"user_id": user_id}))
    return 0
