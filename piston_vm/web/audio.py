"""Audio answers: one recording with Range support, or a ZIP of several, streamed."""

from __future__ import annotations

import logging

from aiohttp import web

from piston_vm.core import errors, gregorian
from piston_vm.core.media import ZipStream, answer_range, content_disposition
from piston_vm.core.metrics import AUDIO_OUT
from piston_vm.services.audio import AudioService, AudioSource
from piston_vm.services.downloads import Download
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


async def zip_response(
    request: web.Request, audio: AudioService, entries: list[Download], filename: str
) -> web.StreamResponse:
    """Stream a ZIP of stored (not recompressed) entries; memory is one chunk (docs/decisions.md
    D-5, P-14)."""
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
            await body.write(archive.start_entry(entry.filename, entry.source.length, modified))
            async for chunk in audio.chunks(entry.source):
                await body.write(archive.write(chunk), len(chunk))
            await body.write(archive.end_entry())
        await body.write(archive.finish())
    except errors.ApiError as error:
        # Headers are gone: the only honest signal left is a broken download.
        log.error("ZIP stream aborted after it started: %s %s", error.message, error.data)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response
