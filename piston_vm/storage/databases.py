"""Which databases exist and have their design documents: checked once per process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from piston_vm.storage.couch import CouchClient, DbNotFound
from piston_vm.storage.design import DesignDocs, install_all
from piston_vm.storage.names import DbName

log = logging.getLogger(__name__)

T = TypeVar("T")


class Databases:
    """Creates MODBs on demand and installs design docs before a database's first use.

    The caches only ever remember "this database is ready"; a database that vanishes later
    surfaces as a CouchDB 404 on the request that needs it.
    """

    def __init__(self, couch: CouchClient, design: DesignDocs) -> None:
        self.couch = couch
        self.design = design
        self._ready: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, db: str) -> asyncio.Lock:
        return self._locks.setdefault(db, asyncio.Lock())

    async def ensure_account_db(self, name: DbName) -> None:
        """Install `_design/vmboxes` (and the other account design docs) if missing."""
        db = name.unencoded
        if db in self._ready:
            return
        async with self._lock(db):
            if db not in self._ready:
                await install_all(self.couch, db, self.design.account)
                self._ready.add(db)

    async def ensure_modb(self, name: DbName, create: bool) -> bool:
        """Make a MODB usable; False when it does not exist and `create` is False.

        Creation is safe under races: CouchDB answers 412 to the loser, which counts as success.
        """
        db = name.unencoded
        if db in self._ready:
            return True
        async with self._lock(db):
            if db in self._ready:
                return True
            if create:
                await self.couch.create_db(db)
            elif not await self.couch.db_exists(db):
                return False
            await self._install_modb(db)
            return True

    async def write_to_modb(self, name: DbName, write: Callable[[], Awaitable[T]]) -> T:
        """Run `write` into a MODB, created first when needed (docs/storage.md 9); once more
        after creating it again when it vanished since it was cached as ready."""
        await self.ensure_modb(name, create=True)
        try:
            return await write()
        except DbNotFound:
            self.forget(name)
            await self.ensure_modb(name, create=True)
            return await write()

    async def ready_modbs(self, names: list[DbName]) -> list[DbName]:
        """Those of `names` (MODBs of one account, oldest first) that exist, made usable.

        Months not yet known to exist are looked up together: one `_all_dbs` range instead of
        a request per month, since most months of a retention window usually have no MODB.
        """
        unknown = [name for name in names if name.unencoded not in self._ready]
        if len(unknown) > 1:
            listed = set(await self.couch.all_dbs(unknown[0].unencoded, unknown[-1].unencoded))
            for name in unknown:
                if name.unencoded in listed:
                    async with self._lock(name.unencoded):
                        if name.unencoded not in self._ready:
                            await self._install_modb(name.unencoded)
        elif unknown:
            await self.ensure_modb(unknown[0], create=False)
        return [name for name in names if name.unencoded in self._ready]

    async def _install_modb(self, db: str) -> None:
        """Install the MODB design documents; the caller holds the database's lock."""
        await install_all(self.couch, db, self.design.modb)
        self._ready.add(db)

    def forget(self, name: DbName) -> None:
        self._ready.discard(name.unencoded)

    def forget_named(self, db: str) -> None:
        """Forget a database by its CouchDB name: its design documents are checked again."""
        self._ready.discard(db)
