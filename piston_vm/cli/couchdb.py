"""`piston-vm couchdb`: the bundled CouchDB-protocol server in the foreground."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from piston_vm.storage import devserver

DEFAULT_PORT = 5984


def add_couchdb_parser(subparsers: Any) -> None:
    couch = subparsers.add_parser("couchdb", help="run the bundled CouchDB-protocol server")
    couch.add_argument("--host", default="127.0.0.1")
    couch.add_argument("--port", type=int, default=DEFAULT_PORT)
    couch.add_argument("--data-dir", type=Path, default=Path("var/couchdb"))
    couch.add_argument("--in-memory", action="store_true")
    couch.add_argument("--admin", help="user:password of the server admin")


def main_couchdb(args: argparse.Namespace) -> int:
    admin_login = tuple(args.admin.split(":", 1)) if args.admin else None
    if admin_login is not None and len(admin_login) != 2:
        raise SystemExit("--admin takes user:password")
    return devserver.run_foreground(
        host=args.host, port=args.port, data_dir=args.data_dir, in_memory=args.in_memory,
        admin=(admin_login[0], admin_login[1]) if admin_login else None,
    )
