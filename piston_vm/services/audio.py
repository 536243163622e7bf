"""Message audio: find it (inline or linked), stream it out with ranges, replace it, copy it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any, BinaryIO
from urllib.parse import unquote

from piston_vm.core import errors, gregorian
from piston_vm.core.audio_formats import SNIFF_BYTES, format_of_type, sniff
from piston_vm.core.call import Call
from piston_vm.core.documents import stamp_auth
from piston_vm.core.media import extension_for, with_extension
from piston_vm.services import message_docs as docs
from piston_vm.services.message_docs import Located
from piston_vm.services.transcoding import ByteSource, Measured, Transcoder
from piston_vm.storage.couch import Attachment, DbNotFound, DocConflict, DocNotFound
from piston_vm.storage.names import DbName
from piston_vm.storage.stores import Stores

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

CHUNK_BYTES = 256 * 1024
# Read-modify-write steps re-read and retry this many times on a CouchDB 409 (docs/storage.md 10).
SAVE_ATTEMPTS = 3
NO_AUDIO_CAUSE = "voicemail message does not have any audio file"


@dataclass(frozen=True, slots=True)
class AudioInput:
    """Audio a client sent: its attachment name and type, its size, and fresh byte streams.

    `reader` opens the bytes as a file of their own (FFmpeg reads it on a worker thread).
    """

    name: str
    content_type: str
    size: int
    chunks: Callable[[], AsyncIterator[bytes]]
    reader: Callable[[], BinaryIO] | None = None

    def attachment(self) -> Attachment:
        return Attachment(self.name, self.content_type, self.size, self.chunks())


@dataclass(frozen=True, slots=True)
class Examined:
    """An upload after a look at its bytes: stored as the type they are, and how long it is."""

    audio: AudioInput
    duration_ms: int | None


async def _head(audio: AudioInput) -> bytes:
    head = bytearray()
    chunks = audio.chunks()
    try:
        async for chunk in chunks:
            head += chunk
            if len(head) >= SNIFF_BYTES:
                break
    finally:
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            await closer()
    return bytes(head[:SNIFF_BYTES])


async def examine_upload(
    audio: AudioInput, transcoder: Transcoder, require_audio: bool
) -> Examined:
    """docs/audio.md, "Uploads": bytes of a known audio format are stored as that type (and
    extension) whatever was declared, and measured; other bytes are stored as declared, or
    refused with 415 when the operator requires audio (before anything is written)."""
    sniffed = sniff(await _head(audio), audio.size)
    # Without a reader (no file to hand FFmpeg) the signature is all there is to go on.
    measured = Measured(sniffed is not None, None)
    if sniffed is not None and audio.reader is not None:
        measured = await transcoder.measure(audio.reader, sniffed)
    if sniffed is None or not measured.audio:
        if require_audio:
            raise errors.unsupported_media_type(audio.content_type or "application/octet-stream")
        return Examined(audio, None)
    if format_of_type(audio.content_type) is not sniffed.format:
        content_type = sniffed.format.content_type
        # The platform's extension where its table has one (docs/storage.md 5.4), else the
        # format's own (flac, webm, …).
        extension = extension_for(content_type) or sniffed.format.extension
        audio = replace(audio, content_type=content_type,
                        name=with_extension(audio.name, extension))
    return Examined(audio, measured.duration_ms)


@dataclass(frozen=True, slots=True)
class AudioSource:
    """Where a message's audio bytes are (database, document, attachment), and its name.

    `label` is the attachment name the message itself uses; for link-form audio the bytes live
    under another name in the legacy media document.
    """

    db: DbName | str
    doc_id: str
    name: str
    content_type: str
    length: int
    digest: str | None
    label: str
    # The revision of the document that holds the bytes: reads stay on it while it changes.
    rev: str | None = None

    @property
    def db_name(self) -> str:
        return self.db.unencoded if isinstance(self.db, DbName) else self.db


def _pick_inline(attachments: JsonObject) -> str | None:
    """docs/decisions.md P-13: the attachment with the highest revpos; on a tie the first by
    name."""
    if not attachments:
        return None
    return sorted(attachments, key=lambda n: (-int(attachments[n].get("revpos", 0) or 0), n))[0]


def _db_from_stored(name: str) -> DbName | str:
    try:
        return DbName.parse(name)
    except ValueError:
        return unquote(name)


class AudioService:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    async def source(self, located: Located) -> AudioSource | None:
        """The message's audio, or None when it has none (external stores answer 500,
        docs/decisions.md P-29)."""
        doc = located.doc
        attachments = doc.get("_attachments")
        if isinstance(attachments, dict) and (name := _pick_inline(attachments)):
            stub = attachments[name]
            return AudioSource(located.modb, located.id, name, str(stub.get("content_type")),
                               int(stub.get("length", 0)), stub.get("digest"), name,
                               doc.get("_rev"))
        linked = doc.get("pvt_attachments")
        if not isinstance(linked, dict) or not linked:
            return None
        name, entry = next(iter(linked.items()))
        handler = (entry or {}).get("handler") or {}
        link = handler.get("kz_att_link") if isinstance(handler, dict) else None
        if not isinstance(link, dict):
            kind = next(iter(handler), "unknown") if isinstance(handler, dict) else "unknown"
            raise errors.unspecified_fault(f"audio is kept by the external handler {kind}")
        db = _db_from_stored(str(link.get("att_dbname", "")))
        db_name = db.unencoded if isinstance(db, DbName) else db
        media = await self.stores.couch.get_doc(db_name, str(link.get("att_docid", "")))
        media_attachments = (media or {}).get("_attachments") or {}
        att_name = link.get("att_name") or next(iter(media_attachments), None)
        if media is None or att_name not in media_attachments:
            return None
        stub = media_attachments[att_name]
        return AudioSource(db, str(media["_id"]), str(att_name),
                           str(entry.get("content_type") or stub.get("content_type")),
                           int(stub.get("length", 0)), stub.get("digest"), name,
                           media.get("_rev"))

    async def chunks(
        self, source: AudioSource, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Bytes start..end (inclusive) of the audio, read from CouchDB one chunk at a time."""
        last = source.length - 1 if end is None else end
        if last < start:
            return
        wanted_range = (start, last) if (start, last) != (0, source.length - 1) else None
        async with self.stores.couch.open_attachment(
            source.db_name, source.doc_id, source.name, wanted_range, source.rev
        ) as response:
            # CouchDB honours the range (206); the bundled server sends it all (200): skip.
            to_skip = start if response.status != 206 else 0
            remaining = last - start + 1
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                if to_skip:
                    if len(chunk) <= to_skip:
                        to_skip -= len(chunk)
                        continue
                    chunk = chunk[to_skip:]
                    to_skip = 0
                if len(chunk) >= remaining:
                    yield chunk[:remaining]
                    return
                remaining -= len(chunk)
                yield chunk

    async def replace(
        self, call: Call, located: Located, audio: AudioInput, duration_ms: int | None = None
    ) -> JsonObject:
        """Swap the message's audio in one write: the new recording in, every old one out.

        One revision carries both, so no reader ever sees a message with two recordings or
        none, and a change that got in first makes this write fail (and re-read) instead of
        being overwritten. The new audio's duration becomes metadata.length unless a client
        or the callflow gave one (docs/audio.md).
        """
        doc = dict(located.doc)
        for _ in range(SAVE_ATTEMPTS):
            updated = {k: v for k, v in doc.items()
                       if k not in ("_attachments", "pvt_attachments")}
            if updated.get("media_filename") not in (None, audio.name):
                updated.pop("media_filename")
            updated["pvt_modified"] = gregorian.now()
            stamp_auth(updated, call)
            if isinstance(updated.get("name"), str):
                docs.set_name(updated, updated["name"])
            docs.set_measured_length(updated, duration_ms)
            try:
                await self.stores.messages.save_with_audio(
                    located.modb, updated, [audio.attachment()])
                return updated
            except (DocNotFound, DbNotFound):
                raise errors.bad_identifier(located.id) from None
            except DocConflict:
                fresh = await self.stores.messages.get(located.modb, located.id)
                if (fresh is None or fresh.get("pvt_deleted")
                        or fresh.get("source_id") != doc.get("source_id")):
                    # Deleted or moved away meanwhile: there is no message here to give audio.
                    raise errors.bad_identifier(located.id) from None
                doc = fresh
        raise errors.datastore_conflict()

    def byte_source(self, source: AudioSource) -> ByteSource:
        """The audio as FFmpeg reads it: from any offset, straight from CouchDB."""
        return ByteSource(source.length, lambda start: self.chunks(source, start))

    def holds(self, copy: JsonObject, audio: AudioSource | None) -> bool:
        """True when `copy` stores exactly `audio` (same name, length and digest), or no audio
        when there is none."""
        attachments = copy.get("_attachments") or {}
        if audio is None:
            return not attachments
        stub = attachments.get(audio.label)
        if not isinstance(stub, dict) or int(stub.get("length", -1)) != audio.length:
            return False
        return audio.digest is None or stub.get("digest") == audio.digest

    def copy_attachment(self, audio: AudioSource) -> Attachment:
        """The source's audio as an attachment of a copy, streamed from the revision read."""
        return Attachment(audio.label, audio.content_type, audio.length, self.chunks(audio))
