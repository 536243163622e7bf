"""Audio answers: one recording with Range support, one transcoded as it streams, or a ZIP of
several, streamed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from piston_vm.core import errors, gregorian
from piston_vm.core.media import ZipStream, answer_range, content_disposition
from piston_vm.core.metrics import AUDIO_OUT
from piston_vm.services.audio import AudioService, AudioSource
from piston_vm.services.downloads import Download, DownloadService
from piston_vm.services.transcoding import TranscodeFailed
from piston_vm.web.keys import CONTEXT, METRICS

log = logging.getLogger(__name__)


class _Body:
    """A streamed body's writes, counted: its bytes for the access log (web/observe.py) and
    the audio in it for piston_vm_audio_bytes_total{direction="out"}."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.response = response
        self.ctx = request[CONTEXT]
        self.count_audio = request.app[METRICS].audio_bytes

    async def write(self, data: bytes, audio_bytes: int = 0) -> None:
        await self.response.write(data)
        self.ctx.bytes_streamed += len(data)
        if audio_bytes:
            self.count_audio(AUDIO_OUT, audio_bytes)


async def audio_response(
    request: web.Request, audio: AudioService, source: AudioSource, filename_header: str
) -> web.StreamResponse:
    """Stream the audio with the platform's headers and Range table (docs/api.md 9.16)."""
    answer = answer_range(request.headers.get("Range"), source.length)
    response = web.StreamResponse(status=answer.status)
    response.headers["Content-Type"] = source.content_type
    response.headers["Content-Disposition"] = filename_header
    response.headers["Accept-Ranges"] = "bytes"
    response.content_length = max(answer.end - answer.start + 1, 0)
    if answer.content_range is not None:
        response.headers["Content-Range"] = answer.content_range
    # Bytes come from CouchDB only once the headers are decided: a failure before this
    # point is still a JSON error, after it the connection is cut (nothing else is honest).
    chunks = audio.chunks(source, answer.start, answer.end)
    first = await anext(chunks, b"")
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    body = _Body(request, response)
    if first:
        await body.write(first, len(first))
    async for chunk in chunks:
        await body.write(chunk, len(chunk))
    await response.write_eof()
    return response


async def transcoded_response(
    request: web.Request, chunks: AsyncIterator[bytes], content_type: str, filename_header: str
) -> web.StreamResponse:
    """Stream a recording as FFmpeg writes it (docs/audio.md): its length is known only at the
    end, so no Content-Length and no ranges; a Range header gets the whole body, 200."""
    try:
        # 406 (or CouchDB's 503) is still a JSON error here: nothing has been sent.
        first = await anext(chunks, b"")
    except BaseException:
        await _close(chunks)
        raise
    response = web.StreamResponse(status=200)
    response.headers["Content-Type"] = content_type
    response.headers["Content-Disposition"] = filename_header
    response.headers["Accept-Ranges"] = "none"
    if request.method == "HEAD":
        await _close(chunks)
        await response.prepare(request)
        return response
    response.enable_chunked_encoding()
    await response.prepare(request)
    body = _Body(request, response)
    try:
        await body.write(first, len(first))
        async for chunk in chunks:
            await body.write(chunk, len(chunk))
    except (TranscodeFailed, errors.ApiError) as failure:
        _cut(request, "transcoded download", failure)
        return response
    finally:
        await _close(chunks)
    await response.write_eof()
    return response


async def _close(chunks: AsyncIterator[bytes]) -> None:
    """End a byte stream now: its CouchDB response, or its transcode, is released at once."""
    closer = getattr(chunks, "aclose", None)
    if closer is not None:
        await closer()


def _cut(request: web.Request, what: str, failure: BaseException) -> None:
    # Headers are gone: the only honest signal left is a broken download.
    log.error("%s aborted after it started: %r", what, failure)
    if request.transport is not None:
        request.transport.close()


async def zip_response(
    request: web.Request, downloads: DownloadService, entries: list[Download], filename: str
) -> web.StreamResponse:
    """Stream a ZIP of stored (not recompressed) entries; memory is one chunk (docs/decisions.md
    D-5, P-14). Entries with an output format are transcoded on the way (docs/audio.md)."""
    response = web.StreamResponse(status=200)
    response.headers["Content-Type"] = "application/zip"
    response.headers["Content-Disposition"] = content_disposition(filename)
    response.enable_chunked_encoding()
    await response.prepare(request)
    archive = ZipStream()
    body = _Body(request, response)
    try:
        for entry in entries:
            modified = gregorian.to_datetime(entry.recorded_gregorian_s)
            if entry.output is None:
                size: int | None = entry.source.length
                chunks = downloads.audio.chunks(entry.source)
            else:
                size, chunks = None, downloads.transcoded(entry)
            await body.write(archive.start_entry(entry.filename, size, modified))
            try:
                async for chunk in chunks:
                    await body.write(archive.write(chunk), len(chunk))
            finally:
                await _close(chunks)
            await body.write(archive.end_entry())
        await body.write(archive.finish())
    except (errors.ApiError, TranscodeFailed, ValueError) as failure:
        _cut(request, "ZIP stream", failure)
        return response
    await response.write_eof()
    return response
