"""What a download serves: one message's recording, or the recordings of several for a ZIP,
each with the file name the platform gives it (docs/decisions.md D-10, P-14)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from piston_vm.core import errors, gregorian
from piston_vm.core.media import download_filename, unique_names
from piston_vm.services import message_docs as docs
from piston_vm.services.audio import NO_AUDIO_CAUSE, AudioService, AudioSource
from piston_vm.services.messages import MessageService
from piston_vm.services.timezones import box_timezone
from piston_vm.storage.accounts import Account

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Download:
    """One recording to send: where its bytes are, its file name, and when it was recorded."""

    source: AudioSource
    filename: str
    recorded_gregorian_s: int


class DownloadService:
    def __init__(self, messages: MessageService) -> None:
        self.messages = messages
        self.audio = AudioService(messages.stores)

    async def recording(self, account: Account, box_id: str, message_id: str) -> Download:
        """The message's audio; 404 when the message, the box or the audio is missing."""
        # The two reads are independent: run them side by side, then report in the order of
        # docs/api.md 9.16 (the message's 404 before the box's).
        located, loaded = await asyncio.gather(
            self.messages.locate(account, box_id, message_id),
            self.messages.load_box(account, box_id), return_exceptions=True)
        if isinstance(located, BaseException):
            raise located
        if isinstance(loaded, BaseException):
            raise loaded
        found = await self.messages.fix_folder(located)
        source = await self.audio.source(found)
        if source is None:
            raise errors.bad_identifier(NO_AUDIO_CAUSE)
        return await self._download(account, loaded, found.doc, source)

    async def recordings(self, account: Account, box_id: str, ids: list[str]) -> list[Download]:
        """The audio of every listed message (each id checked first, docs/api.md 9.12), with
        unique entry names; 404 when none of them has audio."""
        box = await self.messages.load_box(account, box_id)
        downloads = []
        for found in await self.messages.for_zip(account, box_id, ids):
            source = await self.audio.source(found)
            if source is not None:
                downloads.append(await self._download(account, box, found.doc, source))
        if not downloads:
            raise errors.not_found()
        names = unique_names([d.filename for d in downloads])
        return [Download(d.source, name, d.recorded_gregorian_s)
                for d, name in zip(downloads, names, strict=True)]

    async def _download(
        self, account: Account, box: JsonObject, doc: JsonObject, source: AudioSource
    ) -> Download:
        metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        settings = self.messages.settings
        zone_name = await box_timezone(self.messages.stores, account, box,
                                       settings.default_timezone)
        timestamp = metadata.get("timestamp") if isinstance(metadata, dict) else None
        caller = metadata.get("caller_id_number") if isinstance(metadata, dict) else None
        filename = download_filename(
            caller if isinstance(caller, str) else None,
            timestamp if isinstance(timestamp, int) else docs.message_time(doc),
            zone_name, source.label)
        return Download(source, filename, docs.message_time(doc) or gregorian.now())
