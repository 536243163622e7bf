"""The design documents in couchdb/: valid ES5 that real CouchDB's JavaScript engines accept."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

COUCHDB_DIR = Path(__file__).resolve().parent.parent / "couchdb"
DESIGN_FILES = sorted(
    p for d in ("account", "accounts", "modb") for p in (COUCHDB_DIR / d).glob("*.json")
)

# Parses each map function as ES5 when acorn is available (it ships with the devserver's
# dependencies), otherwise with V8; either way a syntax error fails the test, because the bundled
# server would accept such a view silently and real CouchDB would reject it.
_CHECK_JS = r"""
const fs = require('fs');
let parse;
try {
  const acorn = require('acorn');
  parse = (src) => acorn.parse('(' + src + ')', {ecmaVersion: 5});
}
catch (e) { const vm = require('vm'); parse = (src) => new vm.Script('(' + src + ')'); }
const doc = JSON.parse(fs.readFileSync(process.argv[1], 'utf8'));
for (const [name, view] of Object.entries(doc.views)) {
  try { parse(view.map); }
  catch (e) { console.error(name + ': ' + e.message); process.exit(1); }
}
"""


@pytest.mark.parametrize("path", DESIGN_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_map_functions_are_es5(path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "node is required (it runs the bundled CouchDB server)"
    result = subprocess.run(
        [node, "-e", _CHECK_JS, str(path)], cwd=COUCHDB_DIR / "devserver",
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr


# Our own design documents (names starting with piston_vm) may use CouchDB's built-in reduces;
# the platform's documents have none (docs/storage.md 7).
OWN_PREFIX = "_design/piston_vm"


@pytest.mark.parametrize("path", DESIGN_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_design_docs_use_javascript_and_only_builtin_reduces(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert doc["_id"].startswith("_design/")
    assert doc["language"] == "javascript"
    for view in doc["views"].values():
        if doc["_id"].startswith(OWN_PREFIX):
            assert set(view) <= {"map", "reduce"}
            assert view.get("reduce", "_count") in ("_count", "_sum", "_stats")
        else:
            assert set(view) == {"map"}


def test_the_image_carries_every_folder_of_design_documents() -> None:
    """The Dockerfile copies couchdb/ folder by folder (not the bundled server): a new folder
    of design documents left out would start a service without those views."""
    root = Path(__file__).resolve().parents[1]
    dockerfile = (root / "Dockerfile").read_text()
    folders = sorted(p.name for p in (root / "couchdb").iterdir()
                     if p.is_dir() and p.name != "devserver")
    assert folders
    for name in folders:
        assert f"COPY couchdb/{name} ./couchdb/{name}" in dockerfile, name
