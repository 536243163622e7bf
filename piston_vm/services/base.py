"""What every use-case service is built from, and the box lookup they all start with."""

from __future__ import annotations

from typing import Any

from piston_vm.core import errors
from piston_vm.core.config import Settings
from piston_vm.core.validation import SchemaValidator
from piston_vm.services.legacy import LegacyMigrator
from piston_vm.services.moves import Mover, RepairSchedule
from piston_vm.services.transcoding import Transcoder
from piston_vm.storage.accounts import Account
from piston_vm.storage.names import is_box_id
from piston_vm.storage.stores import Stores

JsonObject = dict[str, Any]


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
