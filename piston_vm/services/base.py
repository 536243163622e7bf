"""What every use-case service is built from, and the box lookup they all start with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, TypeVar

from piston_vm.core import errors
from piston_vm.core.config import Settings
from piston_vm.core.listing import Cursor, fill_page
from piston_vm.core.validation import SchemaValidator
from piston_vm.services.legacy import LegacyMigrator
from piston_vm.services.moves import Mover, RepairSchedule
from piston_vm.storage.accounts import Account
from piston_vm.storage.names import DbName, is_box_id, yyyymm
from piston_vm.storage.stores import Stores

JsonObject = dict[str, Any]
T = TypeVar("T")

# Read-modify-write saves: a fresh read and another try after a 409 (docs/storage.md 10).
SAVE_ATTEMPTS = 3
# Rows of one MODB from a cursor (None: the list's first row), at most `limit` (0: all).
ModbFetch = Callable[[DbName, Cursor | None, int], Awaitable[list[JsonObject]]]


async def retry_on_conflict(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run `attempt` (which reads afresh) again after a 409, up to SAVE_ATTEMPTS in all."""
    for number in range(SAVE_ATTEMPTS):
        try:
            return await attempt()
        except errors.ApiError as error:
            if error.status != HTTPStatus.CONFLICT or number + 1 == SAVE_ATTEMPTS:
                raise
    raise errors.datastore_conflict()


def modb_cursor(modb: DbName, row: JsonObject) -> Cursor:
    """The cursor of a list that spans MODBs: the row's key and id, and its month."""
    return Cursor(row["key"], str(row["id"]), yyyymm(*modb.month) if modb.month else None)


class Service:
    def __init__(
        self,
        stores: Stores,
        validator: SchemaValidator,
        settings: Settings,
        migrator: LegacyMigrator,
        repairs: RepairSchedule | None = None,
    ) -> None:
        self.stores = stores
        self.validator = validator
        self.settings = settings
        self.migrator = migrator
        self.repairs = repairs
        self.mover = Mover(stores, settings.default_timezone)

    async def repair_moves(self, account: Account) -> None:
        """Settle moves a crash left unfinished, at most once per interval per account."""
        if self.repairs is not None and self.repairs.due(account.id):
            await self.mover.repair(account)

    async def live_box(self, account: Account, box_id: str) -> JsonObject:
        """The box, or 404 `bad_identifier` (its id's shape is checked before any CouchDB path)."""
        if not is_box_id(box_id):
            raise errors.bad_identifier(box_id)
        box = await self.stores.vmboxes.get(account.db, box_id)
        if box is None:
            raise errors.bad_identifier(box_id)
        return box

    async def scan_modbs(
        self,
        modbs: list[DbName],
        fetch: ModbFetch,
        cursor: Cursor | None,
        wanted: int | None,
        accept: Callable[[JsonObject], bool] | None,
        desc: bool,
    ) -> list[tuple[DbName, JsonObject]]:
        """Up to `wanted` accepted rows (all when None) of `modbs`, in the order given, each
        month's rows in view order (docs/api.md 8.1, 8.4).

        A cursor names its month: months before it were on earlier pages, and only its own
        month's rows start at it. MODBs that do not exist are skipped (reads never create one),
        and only the months the page reaches are looked up.
        """
        if cursor is not None and cursor.month is not None:
            modbs = [m for m in modbs if _month_at_or_after(m, cursor.month, desc)]
        collected: list[tuple[DbName, JsonObject]] = []
        for modb in modbs:
            if not await self.stores.databases.ensure_modb(modb, create=False):
                continue
            month = yyyymm(*modb.month) if modb.month else None
            start = cursor if cursor is not None and cursor.month == month else None

            async def fetch_rows(at: Cursor | None, limit: int,
                                 modb: DbName = modb) -> list[JsonObject]:
                return await fetch(modb, at, limit)

            need = None if wanted is None else wanted - len(collected)
            rows = await fill_page(fetch_rows, start, need, accept, desc)
            collected += [(modb, row) for row in rows]
            if wanted is not None and len(collected) >= wanted:
                break
        return collected


def _month_at_or_after(modb: DbName, month: str, desc: bool) -> bool:
    """Whether `modb` comes at or after the cursor's month in the listing's order."""
    own = yyyymm(*modb.month) if modb.month else ""
    return own <= month if desc else own >= month
