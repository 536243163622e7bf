"""`piston-vm migrate`: move legacy box messages into MODBs, one account or all
(docs/decisions.md D-13, docs/api.md 9.18)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

from piston_vm.cli.settings import command_settings
from piston_vm.core.config import Settings
from piston_vm.services.legacy import LegacyMigrator, MigrationReport
from piston_vm.storage import admin
from piston_vm.storage.accounts import ACCOUNTS_DB
from piston_vm.storage.couch import CouchClient, DbNotFound, json_param
from piston_vm.storage.names import is_account_id
from piston_vm.storage.stores import Stores

log = logging.getLogger(__name__)

# Rows of `accounts/_all_docs` per request while walking every account.
ACCOUNTS_PAGE_ROWS = 1000
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_INTERRUPTED = 130

# (accounts done, accounts in all, entries done in this account, entries in this account)
Progress = Callable[[int, int, int, int], None]


class MigrateError(Exception):
    """The command cannot run as asked (unknown account, no CouchDB configured)."""


async def account_ids(couch: CouchClient) -> list[str]:
    """Every account id listed in the `accounts` database, in id order."""
    ids: list[str] = []
    last: str | None = None
    while True:
        params = {"limit": str(ACCOUNTS_PAGE_ROWS)}
        if last is not None:
            params.update(startkey=json_param(last), skip="1")
        try:
            _, result = await couch.request(
                "GET", couch.url(ACCOUNTS_DB, "_all_docs"), params=params, db=ACCOUNTS_DB)
        except DbNotFound:
            return ids
        rows = result.get("rows", []) if isinstance(result, dict) else []
        ids += [str(row["id"]) for row in rows if is_account_id(str(row.get("id", "")))]
        if len(rows) < ACCOUNTS_PAGE_ROWS:
            return ids
        last = str(rows[-1]["id"])


async def run_migrate(
    settings: Settings,
    account_id: str | None,
    all_accounts: bool,
    dry_run: bool,
    *,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
) -> MigrationReport:
    """Migrate one account (or every account) in bulk: failed entries are retried regardless
    of their tries (docs/decisions.md P-25). With `stop` set, boxes in progress finish and nothing
    new starts."""
    if settings.couchdb is None:
        raise MigrateError("migrate needs --couchdb-url or PISTON_VM_COUCHDB_URL")
    if not all_accounts and (account_id is None or not is_account_id(account_id)):
        raise MigrateError(f"not an account id: {account_id!r}")
    couch = CouchClient(settings.couchdb, settings.couchdb_timeout_s, settings.couchdb_w)
    await couch.start()
    try:
        stores = Stores.build(settings, couch)
        migrator = LegacyMigrator(stores, settings)
        ids = await account_ids(couch) if all_accounts else [str(account_id)]
        report = MigrationReport()
        for number, current_id in enumerate(ids):
            if stop is not None and stop.is_set():
                break
            account = await stores.accounts.get(current_id)
            if account is None:
                if not all_accounts:
                    raise MigrateError(f"account {current_id} does not exist")
                continue  # listed in `accounts` but its database is gone

            def account_progress(done: int, total: int, number: int = number) -> None:
                if progress is not None:
                    progress(number, len(ids), done, total)

            report.merge(await migrator.migrate_account(
                account, lazy=False, dry_run=dry_run, progress=account_progress, stop=stop))
        if progress is not None and ids:
            progress(len(ids), len(ids), 0, 0)
        return report
    finally:
        await couch.close()


class ProgressBar:
    """A tqdm bar on the terminal: the current account's entries, titled with the account count."""

    def __init__(self, stream: TextIO) -> None:
        self._bar = tqdm(file=stream, unit=" entries", dynamic_ncols=True, leave=True)

    def __call__(self, accounts_done: int, accounts: int, done: int, total: int) -> None:
        account = min(accounts_done + 1, accounts)
        self._bar.set_description_str(f"account {account}/{accounts}", refresh=False)
        if self._bar.total != total:
            self._bar.reset(total=total)
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def add_migrate_parser(subparsers: Any) -> None:
    """Register `migrate` on the CLI's subparsers (argparse's private action type)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "migrate", help="move legacy (pre-4.0) voicemail messages into monthly databases")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--account", metavar="ACCOUNT_ID", help="one account")
    target.add_argument("--all", action="store_true", help="every account in `accounts`")
    parser.add_argument("--dry-run", action="store_true",
                        help="count what would be migrated; write nothing")
    parser.add_argument("--couchdb-url", help="CouchDB URL with credentials")


async def _run(
    settings: Settings, args: argparse.Namespace, bar: ProgressBar | None
) -> tuple[MigrationReport, bool]:
    assert settings.couchdb is not None
    await admin.check_server(settings.couchdb)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def on_interrupt() -> None:
        # First Ctrl-C: let the boxes in progress finish, so the summary is exact. Second:
        # abort at once; every box is still consistent (see services/legacy.py).
        if stop.is_set():
            if main_task is not None:
                main_task.cancel()
            return
        stop.set()
        log.warning("interrupted: finishing the boxes in progress (Ctrl-C again to abort)")

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        report = await run_migrate(settings, args.account, args.all, args.dry_run,
                                   progress=bar, stop=stop)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    return report, stop.is_set()


def main_migrate(args: argparse.Namespace) -> int:
    """Run the command; the JSON summary goes to stdout, the progress bar to a terminal only."""
    try:
        settings = command_settings(args.couchdb_url)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_UNUSABLE
    if settings.couchdb is None:
        log.error("migrate needs --couchdb-url or PISTON_VM_COUCHDB_URL")
        return EXIT_UNUSABLE
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    try:
        report, interrupted = asyncio.run(_run(settings, args, bar))
    except admin.CouchDBUnusable as exc:
        log.error("%s", exc)
        return EXIT_UNUSABLE
    except MigrateError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except (asyncio.CancelledError, KeyboardInterrupt):
        log.error("aborted; re-run the command to finish (it is idempotent)")
        return EXIT_INTERRUPTED
    finally:
        if bar is not None:
            bar.close()
    summary = {**report.as_dict(), "dry_run": args.dry_run, "interrupted": interrupted}
    print(json.dumps(summary))
    return EXIT_INTERRUPTED if interrupted else EXIT_OK
