"""Design documents from couchdb/: load once, install, never overwrite a view (docs/storage.md
7)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from piston_vm.storage.couch import CouchClient, DocConflict

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

# Another writer (a second piston_vm instance, or the original platform) may install the same
# document at the same moment; a few re-reads settle it.
INSTALL_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class DesignDocs:
    """The design documents each kind of database needs, read from couchdb/ at startup."""

    accounts: tuple[JsonObject, ...]
    account: tuple[JsonObject, ...]
    modb: tuple[JsonObject, ...]
    # The event engine's own database (storage/events.py).
    events: tuple[JsonObject, ...] = ()

    @classmethod
    def load(cls, couchdb_dir: Path, modb_extra_dir: Path | None = None) -> DesignDocs:
        modb = _load_dir(couchdb_dir / "modb")
        if modb_extra_dir is not None:
            modb += _load_dir(modb_extra_dir)
        return cls(
            accounts=_load_dir(couchdb_dir / "accounts"),
            account=_load_dir(couchdb_dir / "account"),
            modb=modb,
            events=_load_dir(couchdb_dir / "events"),
        )


def _load_dir(directory: Path) -> tuple[JsonObject, ...]:
    docs = []
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text())
        if not str(doc.get("_id", "")).startswith("_design/"):
            raise ValueError(f"{path}: not a design document")
        docs.append(doc)
    return tuple(docs)


# piston_vm's own design documents: kept exactly as couchdb/ has them.
OWN_PREFIX = "_design/piston_vm"


async def install(couch: CouchClient, db: str, wanted: JsonObject) -> None:
    """Create the design doc, or add the views it lacks; existing views are left as they are.

    The platform's documents may carry views of the platform's, which are never touched; our
    own (`_design/piston_vm…`) are replaced when they differ, so that an upgrade drops a view
    it no longer uses instead of indexing it forever.
    """
    own = str(wanted["_id"]).startswith(OWN_PREFIX)
    for _ in range(INSTALL_ATTEMPTS):
        current = await couch.get_doc(db, wanted["_id"])
        if current is None:
            doc = {k: v for k, v in wanted.items() if k != "_rev"}
        elif own:
            if all(current.get(k) == v for k, v in wanted.items() if k != "_rev"):
                return
            doc = {**{k: v for k, v in wanted.items() if k != "_rev"}, "_rev": current["_rev"]}
        else:
            views = dict(current.get("views") or {})
            missing = {k: v for k, v in wanted.get("views", {}).items() if k not in views}
            if not missing:
                return
            views.update(missing)
            doc = {**current, "views": views}
            doc.setdefault("language", wanted.get("language", "javascript"))
        try:
            await couch.put_doc(db, doc)
            log.info("installed %s in %s", wanted["_id"], db)
            return
        except DocConflict:
            continue
    log.warning("gave up installing %s in %s after %d conflicts", wanted["_id"], db,
                INSTALL_ATTEMPTS)


async def install_all(couch: CouchClient, db: str, docs: tuple[JsonObject, ...]) -> None:
    for doc in docs:
        await install(couch, db, doc)
