"""What a download serves: one message's recording, or the recordings of several for a ZIP,
each with the file name the platform gives it (docs/decisions.md D-10, P-14), as stored or in
the format the client asked for (docs/audio.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from piston_vm.core import errors, gregorian
from piston_vm.core.audio_formats import OutputFormat, choose_output
from piston_vm.core.media import download_filename, unique_names, with_extension
from piston_vm.services import message_docs as docs
from piston_vm.services.audio import NO_AUDIO_CAUSE, AudioService, AudioSource
from piston_vm.services.messages import MessageService
from piston_vm.services.timezones import box_timezone
from piston_vm.storage.accounts import Account

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Download:
    """One recording to send: where its bytes are, its file name, when it was recorded, and
    the format to transcode it to (None: the stored bytes as they are)."""

    source: AudioSource
    filename: str
    recorded_gregorian_s: int
    message_id: str = ""
    output: OutputFormat | None = None


class DownloadService:
    def __init__(self, messages: MessageService) -> None:
        self.messages = messages
        self.audio = AudioService(messages.stores)

    def transcoded(self, download: Download) -> AsyncIterator[bytes]:
        """The recording in its output format, streamed as FFmpeg writes it: 406 before the
        first chunk when it cannot be decoded."""
        assert download.output is not None
        return self.messages.transcoder.stream(
            self.audio.byte_source(download.source), download.output, download.message_id)

    async def decodable(self, download: Download) -> None:
        """406 unless the recording decodes (a ZIP checks every entry before it starts)."""
        await self.messages.transcoder.check_decodes(
            self.audio.byte_source(download.source), download.message_id)

    async def recording(
        self, account: Account, box_id: str, message_id: str, format_value: str | None = None,
        accept: str | None = None,
    ) -> Download:
        """The message's audio; 404 when the message, the box or the audio is missing, 406 when
        no acceptable format can be produced."""
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
        output = choose_output(source.content_type, format_value, accept)
        return await self._download(account, loaded, found.doc, source, output)

    async def recordings(
        self, account: Account, box_id: str, ids: list[str], format_value: str | None = None
    ) -> list[Download]:
        """The audio of every listed message (each id checked first, docs/api.md 9.12), with
        unique entry names; 404 when none of them has audio, 406 when one of them cannot be
        given in the format asked for."""
        box = await self.messages.load_box(account, box_id)
        downloads = []
        for found in await self.messages.for_zip(account, box_id, ids):
            source = await self.audio.source(found)
            if source is not None:
                output = choose_output(source.content_type, format_value, None)
                downloads.append(await self._download(account, box, found.doc, source, output))
        if not downloads:
            raise errors.not_found()
        for download in downloads:
            if download.output is not None:
                await self.decodable(download)
        names = unique_names([d.filename for d in downloads])
        return [replace(d, filename=name) for d, name in zip(downloads, names, strict=True)]

    async def _download(
        self, account: Account, box: JsonObject, doc: JsonObject, source: AudioSource,
        output: OutputFormat | None,
    ) -> Download:
        metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        settings = self.messages.settings
        zone_name = await box_timezone(self.messages.stores, account, box,
                                       settings.default_timezone)
        timestamp = metadata.get("timestamp") if isinstance(metadata, dict) else None
        caller = metadata.get("caller_id_number") if isinstance(metadata, dict) else None
        # A transcoded answer's name ends like its format (`.m4a`), not like the stored file.
        label = source.label if output is None else with_extension(source.label, output.extension)
        filename = download_filename(
            caller if isinstance(caller, str) else None,
            timestamp if isinstance(timestamp, int) else docs.message_time(doc),
            zone_name, label)
        return Download(source, filename, docs.message_time(doc) or gregorian.now(),
                        str(doc.get("_id", "")), output)
