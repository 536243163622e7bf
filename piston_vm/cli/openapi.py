"""`piston-vm openapi [SCHEMAS_DIR]`: print the OpenAPI document that schemas/openapi.json keeps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from piston_vm.api.routes import ENDPOINTS
from piston_vm.core.config import DEFAULT_SCHEMAS_DIR
from piston_vm.web.openapi import build_openapi, render


def add_openapi_parser(subparsers: Any) -> None:
    command = subparsers.add_parser("openapi", help="print the OpenAPI document of the API")
    command.add_argument("schemas_dir", nargs="?", type=Path, default=DEFAULT_SCHEMAS_DIR)


def main_openapi(args: argparse.Namespace) -> int:
    sys.stdout.write(render(build_openapi(args.schemas_dir, ENDPOINTS)))
    return 0
