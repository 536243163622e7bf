"""Request bodies that carry audio (docs/api.md 3.2), streamed to temporary files, never held
whole."""

from __future__ import annotations

import asyncio
import binascii
import io
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiofiles.threadpool
from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from piston_vm.core import errors
from piston_vm.core.metrics import AUDIO_IN, Metrics
from piston_vm.web.routing import BASE64_TYPES, FORM_TYPE, JSON_TYPES, MULTIPART_TYPES, request_mime

READ_CHUNK_BYTES = 256 * 1024
TEMP_PREFIX = "piston_vm-upload-"
OCTET_STREAM = "application/octet-stream"
# A data URL's header (`data:audio/ogg;codecs=opus;base64,`) is short; a body that does not
# reach its comma within this many bytes is not one we can read.
MAX_DATA_URL_HEADER_BYTES = 1024

_BASE64_WHITESPACE = b" \t\r\n\x0b\x0c"

ParseEnvelope = Callable[[bytes], dict[str, Any]]
# Files up to this size are kept in memory instead of a temp file (bounded per request).
MEMORY_SPOOL_BYTES = 1024 * 1024


@dataclass(slots=True)
class UploadedFile:
    """One uploaded file: in `memory` when small, else spooled to the unnamed file `spool`.

    The spool file has no name in the file system (it is unlinked as it is made), so it
    vanishes with the process even when that is killed. The caller must `discard()` it.
    """

    spool: BinaryIO | None
    content_type: str
    size: int
    filename: str | None
    memory: bytes | None = None

    async def chunks(self, chunk_size: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]:
        """The file's bytes from the start; each call reads them anew (retries need that)."""
        if self.memory is not None:
            for start in range(0, len(self.memory), chunk_size):
                yield self.memory[start : start + chunk_size]
            return
        if self.spool is None:
            return
        # Plain reads: the spool file was just written and its pages are still cached.
        self.spool.seek(0)
        while chunk := self.spool.read(chunk_size):
            yield chunk
            await asyncio.sleep(0)

    def reader(self) -> BinaryIO:
        """The bytes as a read-only file with a position of its own: a decoder on another thread
        reads it while nothing else moves the spool's offset."""
        if self.memory is not None:
            return io.BytesIO(self.memory)
        assert self.spool is not None
        self.spool.flush()
        return io.BufferedReader(_PositionalReader(self.spool.fileno(), self.size))

    def discard(self) -> None:
        if self.spool is not None:
            self.spool.close()


class _PositionalReader(io.RawIOBase):
    """Reads a file descriptor with pread: its offset is its own, and the fd stays open."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__()
        self.fd = fd
        self.size = size
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(base + offset, 0)
        return self.position

    def readinto(self, buffer: Any) -> int:
        data = os.pread(self.fd, min(len(buffer), max(self.size - self.position, 0)),
                        self.position)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


@dataclass(slots=True)
class Upload:
    """What an upload body held: its envelope (multipart only) and its non-empty files."""

    envelope: dict[str, Any] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)

    def discard(self) -> None:
        for upload in self.files:
            upload.discard()


async def read_upload(
    request: web.Request,
    limit_bytes: int,
    parse_json_envelope: ParseEnvelope,
    *,
    temp_dir: Path | None = None,
    metrics: Metrics | None = None,
) -> Upload:
    """Read an upload body by its Content-Type (docs/api.md 3.2); callers `discard()` in `finally`.

    JSON and form-urlencoded bodies are the envelope the pipeline already parsed, so they give an
    empty Upload here. The envelope is only filled from a multipart body's JSON part.
    Files left over from a failed read are removed before the error propagates.
    """
    mime = request_mime(request)
    if mime in JSON_TYPES or mime == FORM_TYPE:
        return Upload()
    if not (
        mime in MULTIPART_TYPES
        or mime in BASE64_TYPES
        or mime.startswith("audio/")
        or mime == OCTET_STREAM
    ):
        # The dispatcher answers 415 before a handler runs; this guards other callers.
        raise errors.unsupported_media_type(mime)
    if request.content_length is not None and request.content_length > limit_bytes:
        raise errors.payload_too_large(limit_bytes)

    spool = _Spool(temp_dir, metrics if metrics is not None else Metrics())
    try:
        if mime in MULTIPART_TYPES:
            envelope = await _read_multipart(request, limit_bytes, parse_json_envelope, spool)
            return Upload(envelope, list(spool.files))
        body = _body_chunks(request, limit_bytes)
        if mime in BASE64_TYPES:
            content_type, decoded = await _base64_body(body)
            await spool.add(decoded, content_type, None)
        else:
            # docs/storage.md 5.4: the attachment keeps the uploaded Content-Type verbatim.
            content_type = request.headers.get(hdrs.CONTENT_TYPE, "").strip()
            await spool.add(body, content_type, None)
        return Upload({}, list(spool.files))
    except BaseException:
        spool.discard()
        raise


class _Spool:
    """Temp files being written; everything it created is removed on `discard()`."""

    def __init__(self, directory: Path | None, metrics: Metrics) -> None:
        self.directory = directory
        self.metrics = metrics
        self.files: list[UploadedFile] = []

    async def add(
        self, source: AsyncIterator[bytes], content_type: str, filename: str | None
    ) -> None:
        # Most voicemail is small: it stays in memory up to MEMORY_SPOOL_BYTES, which spares a
        # temp file per message; anything larger goes to disk as it arrives.
        head: list[bytes] = []
        size = 0
        # piston_vm_audio_bytes_total{direction="in"} counts bytes as they arrive, so an upload
        # that is cut short or refused still shows what it cost.
        count = self.metrics.audio_bytes
        async for chunk in source:
            count(AUDIO_IN, len(chunk))
            head.append(chunk)
            size += len(chunk)
            if size > MEMORY_SPOOL_BYTES:
                break
        else:
            if size:  # docs/api.md 3.2: an empty file counts as "no file".
                self.files.append(
                    UploadedFile(None, content_type, size, filename, b"".join(head)))
            return
        # Owned by the UploadedFile (closed by its discard()), so no context manager here.
        spool = tempfile.TemporaryFile(prefix=TEMP_PREFIX, dir=self.directory)  # noqa: SIM115
        upload = UploadedFile(spool, content_type, 0, filename)
        self.files.append(upload)
        # Writes run in a worker thread so that a slow disk never stalls the event loop.
        sink = aiofiles.threadpool.wrap(spool)
        for chunk in head:
            await sink.write(chunk)
        upload.size = size
        head.clear()
        async for chunk in source:
            count(AUDIO_IN, len(chunk))
            await sink.write(chunk)
            upload.size += len(chunk)

    def discard(self) -> None:
        for upload in self.files:
            upload.discard()
        self.files.clear()


def _check_limit(request: web.Request, limit_bytes: int) -> None:
    # total_bytes counts every body byte received so far (multipart framing included, and after
    # any Content-Encoding is undone, so a compressed bomb stops too): one check for every form.
    if request.content.total_bytes > limit_bytes:
        raise errors.payload_too_large(limit_bytes)


async def _body_chunks(request: web.Request, limit_bytes: int) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
        _check_limit(request, limit_bytes)
        yield chunk
    _check_limit(request, limit_bytes)


class _Base64Decoder:
    """Incremental base64: whitespace ignored, whole quartets decoded, missing padding allowed."""

    def __init__(self) -> None:
        self._carry = b""
        self._padded = False

    def feed(self, data: bytes) -> bytes:
        data = self._carry + data.translate(None, _BASE64_WHITESPACE)
        cut = len(data) - len(data) % 4
        quartets, self._carry = data[:cut], data[cut:]
        if not quartets:
            return b""
        if self._padded:  # data after the final, padded quartet
            raise errors.bad_base64()
        self._padded = quartets.endswith(b"=")
        return _decode_quartets(quartets)

    def finish(self) -> bytes:
        carry, self._carry = self._carry, b""
        if not carry:
            return b""
        if self._padded or len(carry) == 1:  # one leftover character can't encode a byte
            raise errors.bad_base64()
        return _decode_quartets(carry + b"=" * (4 - len(carry)))


def _decode_quartets(quartets: bytes) -> bytes:
    try:
        return binascii.a2b_base64(quartets, strict_mode=True)
    except binascii.Error:
        raise errors.bad_base64() from None


async def _decode_base64(source: AsyncIterator[bytes], first: bytes = b"") -> AsyncIterator[bytes]:
    decoder = _Base64Decoder()
    if first:
        yield decoder.feed(first)
    async for chunk in source:
        yield decoder.feed(chunk)
    yield decoder.finish()


async def _base64_body(body: AsyncIterator[bytes]) -> tuple[str, AsyncIterator[bytes]]:
    """The file type and decoded bytes of a base64 body, which may be a `data:` URL."""
    head = b""
    async for chunk in body:
        head = (head + chunk).lstrip()
        if len(head) >= len(b"data:"):
            break
    if head[:5].lower() != b"data:":
        return OCTET_STREAM, _decode_base64(body, head)
    while b"," not in head:
        if len(head) > MAX_DATA_URL_HEADER_BYTES:
            raise errors.bad_base64()
        chunk = await anext(body, b"")
        if not chunk:
            raise errors.bad_base64()
        head += chunk
    header, _, rest = head.partition(b",")
    if len(header) > MAX_DATA_URL_HEADER_BYTES:
        raise errors.bad_base64()
    try:
        media_type = header[5:].decode("ascii").strip()
    except UnicodeDecodeError:
        raise errors.bad_base64() from None
    if media_type.lower().endswith(";base64"):
        media_type = media_type[: -len(";base64")]
    # A data URL without ";base64" is still decoded as base64: this body type says it is.
    return media_type.strip() or OCTET_STREAM, _decode_base64(body, rest)


def _invalid_multipart() -> errors.ApiError:
    return errors.validation_error(
        "multipart", "invalid", {"message": "failed to parse multipart body"}
    )


# aiohttp reports a broken body (no or bad boundary, truncation, oversized headers) as these.
_MULTIPART_FAILURES = (ValueError, AssertionError, HttpProcessingError)


async def _next_part(reader: MultipartReader) -> BodyPartReader | None:
    try:
        part = await reader.next()
    except _MULTIPART_FAILURES as exc:
        raise _invalid_multipart() from exc
    if isinstance(part, MultipartReader):
        # Nested multipart (RFC 2388's "multipart/mixed" inside a form field) is not a form
        # any client of this API sends; refuse it rather than guess which part is the file.
        raise errors.validation_error(
            "multipart", "invalid", {"message": "nested multipart bodies are not supported"}
        )
    return part


async def _part_chunks(
    part: BodyPartReader, request: web.Request, limit_bytes: int
) -> AsyncIterator[bytes]:
    raw = _raw_part_chunks(part, request, limit_bytes)
    encoding = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING, "").strip().lower()
    source = _decode_base64(raw) if encoding == "base64" else raw
    async for chunk in source:
        yield chunk


async def _raw_part_chunks(
    part: BodyPartReader, request: web.Request, limit_bytes: int
) -> AsyncIterator[bytes]:
    while True:
        try:
            chunk = await part.read_chunk(READ_CHUNK_BYTES)
        except _MULTIPART_FAILURES as exc:
            raise _invalid_multipart() from exc
        _check_limit(request, limit_bytes)
        if not chunk:
            return
        yield chunk


async def _read_multipart(
    request: web.Request, limit_bytes: int, parse_json_envelope: ParseEnvelope, spool: _Spool
) -> dict[str, Any]:
    try:
        reader = await request.multipart()
    except _MULTIPART_FAILURES as exc:
        raise _invalid_multipart() from exc
    envelope: dict[str, Any] = {}
    while (part := await _next_part(reader)) is not None:
        content_type = part.headers.get(hdrs.CONTENT_TYPE, "").strip()
        part_mime = content_type.split(";", 1)[0].strip().lower()
        chunks = _part_chunks(part, request, limit_bytes)
        if not part_mime or part_mime in JSON_TYPES:
            # Bounded: _check_limit stops the part at the body limit.
            raw = b"".join([chunk async for chunk in chunks])
            envelope = parse_json_envelope(raw)  # the last JSON part wins (docs/api.md 3.2)
        else:
            await spool.add(chunks, content_type, part.filename)
    return envelope
