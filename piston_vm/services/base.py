"""What every use-case service is built from, and the box lookup they all start with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

from piston_vm.core import errors, gregorian
from piston_vm.core.call import Call
from piston_vm.core.config import Settings
from piston_vm.core.listing import Cursor, fill_page
from piston_vm.core.validation import SchemaValidator
from piston_vm.services.legacy import LegacyMigrator
from piston_vm.services.moves import Mover, RepairSchedule
from piston_vm.services.transcoding import Transcoder
from piston_vm.storage.accounts import Account
from piston_vm.storage.names import DbName, is_box_id, yyyymm
from piston_vm.storage.stores import Stores

JsonObject = dict[str, Any]
T = TypeVar("T")

# Read-modify-write saves: a fresh read and another try after a 409 (docs/storage.md 10).
SAVE_ATTEMPTS = 3
# Rows of one MODB from a cursor (None: the list's first row), at most `limit` (0: all).
ModbFetch = Callable[[DbName, Cursor | None, int], Awaitable[list[JsonObject]]]


@dataclass(frozen=True, slots=True)
class Window:
    """The inclusive `created_from`…`created_to` bounds of a list (docs/api.md 8.4)."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ListPage:
    rows: list[JsonObject]
    next_cursor: Cursor | None
    start_key: str | None
    paginated: bool


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
        transcoder: Transcoder | None = None,
    ) -> None:
        self.stores = stores
        self.validator = validator
        self.settings = settings
        self.migrator = migrator
        self.repairs = repairs
        # Shared with the app (one FFmpeg pool per process); a service built alone (a command,
        # a test) gets its own, which starts no thread until audio needs one.
        self.transcoder = transcoder if transcoder is not None else Transcoder(
            settings.transcode_workers)
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

    async def window(self, call: Call, account: Account) -> Window:
        """The `created_from`…`created_to` window of docs/api.md 8.4."""
        def positive(name: str) -> int | None:
            raw = call.value(name)
            try:
                value = int(raw) if raw is not None and not isinstance(raw, bool) else None
            except (TypeError, ValueError):
                return None
            # Past the year 9999 no calendar month (and so no MODB) exists: say so, rather
            # than hand CouchDB a key it cannot compare (docs/api.md 8.4).
            if value is not None and value > gregorian.LATEST_GREGORIAN_S:
                raise errors.validation_error(name, "maximum", {
                    "message": f"Value must be at most {gregorian.LATEST_GREGORIAN_S}",
                    "target": gregorian.LATEST_GREGORIAN_S, "value": value})
            return value if value is not None and value > 0 else None

        end = positive("created_to") or gregorian.now()
        given_start = positive("created_from")
        retention_s = await self.stores.accounts.retention_s(account, self.settings)
        start = given_start if given_start is not None else end - retention_s
        widest = self.settings.max_created_window_s if given_start is not None else retention_s
        if end - start < 0:
            raise errors.validation_error("created_from", "date_range", {
                "message": f"created_to {end} is prior to created_from {start}", "cause": start})
        if end - start > widest:
            raise errors.validation_error("created_from", "date_range", {
                "message": f"created_to {end} is more than {widest} seconds from "
                           f"created_from {start}", "cause": end})
        return Window(start, end)

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
