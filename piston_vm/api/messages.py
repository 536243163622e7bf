"""Voicemail message endpoints (docs/api.md 9.7–9.17): read the request, call the service,
respond."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from aiohttp import web

from piston_vm.api import account_of, call_of, list_response
from piston_vm.core import errors, gregorian
from piston_vm.core.media import (
    attachment_name,
    content_disposition,
)
from piston_vm.services import message_docs as docs
from piston_vm.services.audio import AudioInput
from piston_vm.services.messages import MessageService, message_ids
from piston_vm.web import envelope
from piston_vm.web.audio import audio_response, transcoded_response, zip_response
from piston_vm.web.keys import (
    CONTEXT,
    DOWNLOADS,
    MESSAGES,
    METRICS,
    SETTINGS,
)
from piston_vm.web.middlewares import parse_envelope
from piston_vm.web.routing import FORM_TYPE, JSON_TYPES, request_mime
from piston_vm.web.uploads import Upload, UploadedFile, read_upload


def _service(request: web.Request) -> MessageService:
    return request.app[MESSAGES]


def _ids(request: web.Request) -> tuple[str, str]:
    return request.match_info["box_id"], request.match_info.get("message_id", "")


def _location(request: web.Request, message_id: str) -> str:
    box_id, _ = _ids(request)
    return f"/v2/accounts/{account_of(request).id}/vmboxes/{box_id}/messages/{message_id}"


@asynccontextmanager
async def _upload(request: web.Request) -> AsyncIterator[Upload]:
    """Files of an upload request, removed when the block ends; JSON bodies were already parsed
    by the pipeline. A real upload counts in piston_vm_uploads_in_flight until it is stored."""
    ctx = request[CONTEXT]
    mime = request_mime(request)
    if mime in JSON_TYPES or mime == FORM_TYPE or not request.can_read_body:
        yield Upload(envelope={}, files=[])
        return
    metrics = request.app[METRICS]
    with metrics.uploads_in_flight():
        upload = await read_upload(
            request, request.app[SETTINGS].max_upload_bytes,
            lambda raw: parse_envelope(raw, form_fallback=False), metrics=metrics,
        )
        try:
            if upload.envelope:
                ctx.envelope = upload.envelope
            yield upload
        finally:
            upload.discard()


def _single_file(files: list[UploadedFile], required: bool) -> UploadedFile | None:
    if len(files) > 1:
        raise errors.validation_error("file", "maxItems", {
            "message": "Please provide a single media file"})
    if not files and required:
        raise errors.validation_error("file", "required", {
            "message": "Please provide a media file"})
    return files[0] if files else None


async def list_account_messages(request: web.Request) -> web.StreamResponse:
    page = await _service(request).listing(call_of(request), account_of(request), None)
    return list_response(request, page)


async def list_box_messages(request: web.Request) -> web.StreamResponse:
    box_id, _ = _ids(request)
    page = await _service(request).listing(call_of(request), account_of(request), box_id)
    return list_response(request, page)


async def create_message(request: web.Request) -> web.StreamResponse:
    ctx, account, service = request[CONTEXT], account_of(request), _service(request)
    box_id, _ = _ids(request)
    box = await service.load_box(account, box_id)
    async with _upload(request) as upload:
        audio_file = _single_file(upload.files, required=False)
        audio = _audio_input(ctx.value("filename"), audio_file) if audio_file else None
        doc = await service.create(ctx.call(), account, box, audio,
                                   request.headers.get("Idempotency-Key"))
    data = docs.public_metadata(doc, 0)
    return envelope.success(request, data, status=HTTPStatus.CREATED,
                            headers={"Location": _location(request, doc["_id"])})


def _audio_input(filename: Any, upload: UploadedFile) -> AudioInput:
    name = attachment_name(_filename(filename), upload.content_type, gregorian.now())
    return AudioInput(name, upload.content_type, upload.size, upload.chunks, upload.reader)


def _filename(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


async def bulk_change(request: web.Request) -> web.StreamResponse:
    box_id, _ = _ids(request)
    result = await _service(request).bulk_change(call_of(request), account_of(request), box_id)
    return envelope.success(request, result)


async def bulk_delete(request: web.Request) -> web.StreamResponse:
    box_id, _ = _ids(request)
    result = await _service(request).bulk_delete(call_of(request), account_of(request), box_id)
    return envelope.success(request, result)


async def get_message(request: web.Request) -> web.StreamResponse:
    box_id, message_id = _ids(request)
    data = await _service(request).fetch(account_of(request), box_id, message_id)
    return envelope.success(request, data)


async def change_message(request: web.Request) -> web.StreamResponse:
    box_id, message_id = _ids(request)
    data, _ = await _service(request).change(
        call_of(request), account_of(request), box_id, message_id)
    return envelope.success(request, data)


async def delete_message(request: web.Request) -> web.StreamResponse:
    box_id, message_id = _ids(request)
    data = await _service(request).delete(call_of(request), account_of(request), box_id, message_id)
    return envelope.success(request, data)


async def get_audio(request: web.Request) -> web.StreamResponse:
    box_id, message_id = _ids(request)
    downloads = request.app[DOWNLOADS]
    download = await downloads.recording(
        account_of(request), box_id, message_id, _format(request), request.headers.get("Accept"))
    disposition = content_disposition(download.filename)
    if download.output is not None:
        return await transcoded_response(request, downloads.transcoded(download),
                                         download.output.content_type, disposition)
    return await audio_response(request, downloads.audio, download.source, disposition)


def _format(request: web.Request) -> str | None:
    """The request value `format` (docs/audio.md): `?format=mp3`, or `data.format`."""
    value = request[CONTEXT].value("format")
    return value if isinstance(value, str) else None


async def put_audio(request: web.Request) -> web.StreamResponse:
    ctx, account, service = request[CONTEXT], account_of(request), _service(request)
    box_id, message_id = _ids(request)
    found = await service.locate(account, box_id, message_id)
    await service.check_changeable(account, found)
    async with _upload(request) as upload:
        audio_file = _single_file(upload.files, required=True)
        assert audio_file is not None
        doc = await service.replace_audio(
            ctx.call(), found, _audio_input(ctx.value("filename"), audio_file))
    return envelope.success(request, docs.public_metadata(doc, 0), status=HTTPStatus.CREATED,
                            headers={"Location": _location(request, message_id)})


async def zip_audio(request: web.Request) -> web.StreamResponse:
    ctx, box_id = request[CONTEXT], _ids(request)[0]
    downloads = request.app[DOWNLOADS]
    entries = await downloads.recordings(account_of(request), box_id, message_ids(ctx.data),
                                         _format(request))
    return await zip_response(request, downloads, entries, f"{ctx.request_id}.zip")
