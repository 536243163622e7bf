"""Upload bodies through a tiny app that calls read_upload: every form, limit and error path."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from piston_vm.core.errors import ApiError
from piston_vm.web.middlewares import parse_envelope
from piston_vm.web.uploads import MEMORY_SPOOL_BYTES, OCTET_STREAM, read_upload

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]

LIMIT_BYTES = 64_000
BIG_LIMIT_BYTES = 30_000_000
BIG_BODY_BYTES = 20 * 1024 * 1024
TRACED_PEAK_LIMIT_BYTES = 5 * 1024 * 1024
BOUNDARY = "------------------------d74496d66958873e"
AUDIO = b"ID3\x04\x00" + bytes(range(256)) * 8
ENVELOPE = {"data": {"caller_id_number": "6001", "folder": "new"}}
TOO_LARGE = {
    "file": {
        "maxSize": {
            "message": f"Payload or Files must not be more than {LIMIT_BYTES} bytes",
            "target": LIMIT_BYTES,
        }
    }
}
BAD_BASE64 = {"file": {"encoding": {"message": "failed to decode base64 data"}}}
BAD_MULTIPART = {"multipart": {"invalid": {"message": "failed to parse multipart body"}}}


def parse_json(raw: bytes) -> dict[str, Any]:
    return parse_envelope(raw, form_fallback=False)


def error_response(exc: ApiError) -> web.Response:
    body = {"status": int(exc.status), "message": exc.message, "data": exc.data}
    return web.json_response(body, status=exc.status, headers=exc.headers)


def upload_app(temp_dir: Path, limit_bytes: int) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        try:
            upload = await read_upload(request, limit_bytes, parse_json, temp_dir=temp_dir)
        except ApiError as exc:
            return error_response(exc)
        try:
            files = []
            for item in upload.files:
                body = b"".join([chunk async for chunk in item.chunks(chunk_size=1000)])
                assert len(body) == item.size
                # Small files stay in memory; larger ones are spooled into temp_dir.
                # A spool file has no name anywhere: it cannot outlive the process.
                if item.size <= MEMORY_SPOOL_BYTES:
                    assert item.spool is None
                else:
                    assert item.spool is not None
                    assert os.fstat(item.spool.fileno()).st_size == item.size
                    assert os.fstat(item.spool.fileno()).st_nlink == 0
                    assert not os.listdir(temp_dir)
                files.append(
                    {
                        "content_type": item.content_type,
                        "filename": item.filename,
                        "size": item.size,
                        "body": base64.b64encode(body).decode() if item.size < 100_000 else None,
                    }
                )
        finally:
            upload.discard()
        return web.json_response({"envelope": upload.envelope, "files": files})

    async def measure(request: web.Request) -> web.Response:
        """The big upload: traced memory growth across read_upload only, and a digest."""
        tracemalloc.reset_peak()
        baseline, _ = tracemalloc.get_traced_memory()
        upload = await read_upload(request, limit_bytes, parse_json, temp_dir=temp_dir)
        _, peak = tracemalloc.get_traced_memory()
        try:
            digest = hashlib.sha256()
            async for chunk in upload.files[0].chunks():
                digest.update(chunk)
            return web.json_response(
                {
                    "peak_growth": peak - baseline,
                    "size": upload.files[0].size,
                    "sha256": digest.hexdigest(),
                }
            )
        finally:
            upload.discard()

    app = web.Application()
    app.router.add_put("/upload", receive)
    app.router.add_put("/measure", measure)
    return app


@pytest.fixture
def temp_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "uploads"
    directory.mkdir()
    return directory


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, temp_dir: Path) -> Client:
    return await aiohttp_client(upload_app(temp_dir, LIMIT_BYTES))


async def put(
    client: Client, body: Any, content_type: str | None = None, **headers: str
) -> tuple[int, dict[str, Any]]:
    all_headers = dict(headers)
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    async with client.put("/upload", data=body, headers=all_headers) as resp:
        return resp.status, await resp.json()


def multipart_body(*parts: tuple[dict[str, str], bytes], boundary: str = BOUNDARY) -> bytes:
    out = b""
    for headers, payload in parts:
        out += f"--{boundary}\r\n".encode()
        out += "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()
        out += b"\r\n" + payload + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def json_part() -> tuple[dict[str, str], bytes]:
    return {"Content-Disposition": 'form-data; name="json"'}, json.dumps(ENVELOPE).encode()


def file_part(
    payload: bytes, content_type: str = "audio/mp3", filename: str = "voice.mp3"
) -> tuple[dict[str, str], bytes]:
    disposition = f'form-data; name="content"; filename="{filename}"'
    return {"Content-Disposition": disposition, "Content-Type": content_type}, payload


def as_file(item: dict[str, Any]) -> tuple[str, str | None, bytes]:
    return item["content_type"], item["filename"], base64.b64decode(item["body"])


def assert_no_temp_files(temp_dir: Path) -> None:
    assert list(temp_dir.iterdir()) == []


async def test_multipart_mixed_as_curl_sends_it(client: Client, temp_dir: Path) -> None:
    # curl -H "Content-Type: multipart/mixed" -F … replaces the type but keeps the boundary and
    # the form-data part headers.
    body = multipart_body(json_part(), file_part(AUDIO))
    status, got = await put(client, body, f"multipart/mixed; boundary={BOUNDARY}")
    assert status == HTTPStatus.OK, got
    assert got["envelope"] == ENVELOPE
    assert [as_file(item) for item in got["files"]] == [("audio/mp3", "voice.mp3", AUDIO)]
    assert_no_temp_files(temp_dir)


async def test_multipart_form_data_from_aiohttp_formdata(client: Client) -> None:
    form = aiohttp.FormData()
    form.add_field("json", json.dumps(ENVELOPE), content_type="application/json")
    form.add_field("content", AUDIO, filename="v.wav", content_type="audio/x-wav; rate=8000")
    status, got = await put(client, form)
    assert status == HTTPStatus.OK, got
    assert got["envelope"] == ENVELOPE
    assert [as_file(item) for item in got["files"]] == [("audio/x-wav; rate=8000", "v.wav", AUDIO)]


async def test_multipart_part_in_base64_is_decoded(client: Client) -> None:
    encoded = base64.encodebytes(AUDIO).replace(b"\n", b"\r\n")  # 76-column lines
    headers = {
        "Content-Disposition": 'attachment; filename="b64.mp3"',
        "Content-Type": "audio/mpeg",
        "Content-Transfer-Encoding": "base64",
    }
    body = multipart_body(json_part(), (headers, encoded))
    status, got = await put(client, body, f"multipart/mixed; boundary={BOUNDARY}")
    assert status == HTTPStatus.OK, got
    assert [as_file(item) for item in got["files"]] == [("audio/mpeg", "b64.mp3", AUDIO)]


async def test_multipart_part_with_bad_base64_is_413(client: Client, temp_dir: Path) -> None:
    headers = {"Content-Type": "audio/mpeg", "Content-Transfer-Encoding": "base64"}
    body = multipart_body(file_part(AUDIO), (headers, b"AAAA*AAA"))
    status, got = await put(client, body, f"multipart/mixed; boundary={BOUNDARY}")
    assert (status, got["data"]) == (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, BAD_BASE64)
    assert_no_temp_files(temp_dir)


async def test_multipart_envelope_rules(client: Client) -> None:
    untyped = ({"Content-Disposition": 'form-data; name="a"'}, b'{"data":{"n":1}}')
    typed = ({"Content-Type": "application/x-json; charset=utf-8"}, b'{"data":{"n":2}}')
    body = multipart_body(untyped, file_part(AUDIO), typed)
    status, got = await put(client, body, f"multipart/form-data; boundary={BOUNDARY}")
    assert status == HTTPStatus.OK, got
    assert got["envelope"] == {"data": {"n": 2}}  # the last JSON part wins
    assert len(got["files"]) == 1


async def test_multipart_without_json_part_has_an_empty_envelope(client: Client) -> None:
    body = multipart_body(file_part(AUDIO, content_type="audio/ogg", filename="v.ogg"))
    status, got = await put(client, body, f"multipart/mixed; boundary={BOUNDARY}")
    assert status == HTTPStatus.OK, got
    assert got["envelope"] == {}
    assert [as_file(item) for item in got["files"]] == [("audio/ogg", "v.ogg", AUDIO)]


async def test_two_files_are_both_returned(client: Client) -> None:
    second = AUDIO[::-1]
    body = multipart_body(
        json_part(), file_part(AUDIO), file_part(second, "application/octet-stream", "b.bin")
    )
    status, got = await put(client, body, f"multipart/mixed; boundary={BOUNDARY}")
    assert status == HTTPStatus.OK, got
    assert [as_file(item) for item in got["files"]] == [
        ("audio/mp3", "voice.mp3", AUDIO),
        ("application/octet-stream", "b.bin", second),
    ]


async def test_empty_file_part_is_dropped(client: Client, temp_dir: Path) -> None:
    body = multipart_body(json_part(), file_part(b""), file_part(AUDIO, filename="b.mp3"))
    status, got = await put(client, body, f"multipart/mixed; boundary={BOUNDARY}")
    assert status == HTTPStatus.OK, got
    assert [item["filename"] for item in got["files"]] == ["b.mp3"]
    assert_no_temp_files(temp_dir)


async def test_invalid_json_part_removes_files_already_spooled(
    client: Client, temp_dir: Path
) -> None:
    body = multipart_body(file_part(AUDIO), ({"Content-Type": "application/json"}, b"{nope"))
    status, got = await put(client, body, f"multipart/mixed; boundary={BOUNDARY}")
    assert status == HTTPStatus.BAD_REQUEST
    invalid = {"message": "All JSON must be valid", "target": "body"}
    assert got["data"] == {"json": {"invalid": invalid}}
    assert_no_temp_files(temp_dir)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/mixed", multipart_body(file_part(AUDIO))),  # no boundary
        (f"multipart/mixed; boundary={BOUNDARY}", b"no boundary line anywhere"),
        (  # truncated: no closing boundary
            f"multipart/mixed; boundary={BOUNDARY}",
            multipart_body(json_part(), file_part(AUDIO)).rsplit(b"\r\n--", 1)[0],
        ),
        (  # truncated inside the part headers
            f"multipart/mixed; boundary={BOUNDARY}",
            f"--{BOUNDARY}\r\nContent-Type: audio/mp3\r\n".encode(),
        ),
    ],
)
async def test_broken_multipart_is_400(
    client: Client, temp_dir: Path, content_type: str, body: bytes
) -> None:
    status, got = await put(client, body, content_type)
    assert (status, got["data"]) == (HTTPStatus.BAD_REQUEST, BAD_MULTIPART)
    assert_no_temp_files(temp_dir)


async def test_nested_multipart_is_400(client: Client) -> None:
    inner = multipart_body(file_part(AUDIO), boundary="inner")
    outer = multipart_body(({"Content-Type": "multipart/mixed; boundary=inner"}, inner))
    status, got = await put(client, outer, f"multipart/form-data; boundary={BOUNDARY}")
    assert status == HTTPStatus.BAD_REQUEST
    assert list(got["data"]) == ["multipart"]


@pytest.mark.parametrize(
    "content_type",
    ["audio/mpeg", "audio/mp3", "Audio/X-Wav; rate=8000", "application/octet-stream"],
)
async def test_raw_body_is_one_file_with_the_request_type(
    client: Client, temp_dir: Path, content_type: str
) -> None:
    status, got = await put(client, AUDIO, f" {content_type} ")
    assert status == HTTPStatus.OK, got
    assert got["envelope"] == {}
    assert [as_file(item) for item in got["files"]] == [(content_type, None, AUDIO)]
    assert_no_temp_files(temp_dir)


async def test_empty_raw_body_is_no_file(client: Client, temp_dir: Path) -> None:
    status, got = await put(client, b"", "audio/mpeg")
    assert (status, got) == (HTTPStatus.OK, {"envelope": {}, "files": []})
    assert_no_temp_files(temp_dir)


@pytest.mark.parametrize(
    ("content_type", "body", "file_type"),
    [
        ("application/base64", base64.b64encode(AUDIO), "application/octet-stream"),
        ("application/x-base64", base64.encodebytes(AUDIO), "application/octet-stream"),
        # Padding may be left off.
        ("application/base64", base64.b64encode(AUDIO[:-1]).rstrip(b"="), None),
        (
            "application/base64; charset=us-ascii",
            b"data:audio/mpeg;base64," + base64.b64encode(AUDIO),
            "audio/mpeg",
        ),
        (
            "application/base64",
            b"\r\n DATA:audio/ogg;codecs=opus;base64," + base64.encodebytes(AUDIO),
            "audio/ogg;codecs=opus",
        ),
        ("application/base64", b"data:;base64," + base64.b64encode(AUDIO), OCTET_STREAM),
    ],
)
async def test_base64_body(
    client: Client, content_type: str, body: bytes, file_type: str | None
) -> None:
    status, got = await put(client, body, content_type)
    assert status == HTTPStatus.OK, got
    expected = AUDIO if file_type is not None else AUDIO[:-1]
    assert [as_file(item) for item in got["files"]] == [
        (file_type or "application/octet-stream", None, expected)
    ]


async def test_base64_body_streams_in_small_chunks(client: Client) -> None:
    encoded = b"data:audio/wav;base64," + base64.encodebytes(AUDIO)

    async def trickle() -> AsyncIterator[bytes]:
        for index in range(0, len(encoded), 3):
            yield encoded[index : index + 3]

    status, got = await put(client, trickle(), "application/base64")
    assert status == HTTPStatus.OK, got
    assert [as_file(item) for item in got["files"]] == [("audio/wav", None, AUDIO)]


@pytest.mark.parametrize(
    "body",
    [
        b"not base64!",
        b"AAAA*AAA",
        b"AA==AAAA",  # data after the padding
        b"AAAAA",  # one character cannot encode a byte
        b"data:audio/mpeg;base64,%%%%",
        b"data:audio/mpeg;base64",  # no comma
        b"data:" + b"x" * 2000 + b",AAAA",  # runaway header
    ],
)
async def test_bad_base64_body_is_413(client: Client, temp_dir: Path, body: bytes) -> None:
    status, got = await put(client, body, "application/base64")
    assert status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert got == {"status": 413, "message": "validation error", "data": BAD_BASE64}
    assert_no_temp_files(temp_dir)


async def test_empty_base64_body_is_no_file(client: Client) -> None:
    assert await put(client, b" \r\n", "application/base64") == (
        HTTPStatus.OK,
        {"envelope": {}, "files": []},
    )


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
async def test_envelope_bodies_are_left_to_the_caller(client: Client, content_type: str) -> None:
    assert await put(client, json.dumps(ENVELOPE), content_type) == (
        HTTPStatus.OK,
        {"envelope": {}, "files": []},
    )


async def test_other_types_are_415(client: Client) -> None:
    status, got = await put(client, b"hello", "text/plain")
    assert status == HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    assert got["data"]["cause"] == "text/plain"


async def chunked(body: bytes, chunk_bytes: int = 4096) -> AsyncIterator[bytes]:
    """A body without Content-Length, so only the streaming count can stop it."""
    for index in range(0, len(body), chunk_bytes):
        yield body[index : index + chunk_bytes]


OVER_LIMIT = bytes(LIMIT_BYTES + 1)


@pytest.mark.parametrize(
    ("content_type", "make_body"),
    [
        ("audio/mpeg", lambda: OVER_LIMIT),
        ("audio/mpeg", lambda: chunked(OVER_LIMIT)),
        ("application/base64", lambda: chunked(base64.b64encode(OVER_LIMIT[:50_000]))),
        (
            f"multipart/mixed; boundary={BOUNDARY}",
            lambda: multipart_body(json_part(), file_part(OVER_LIMIT)),
        ),
        (
            f"multipart/mixed; boundary={BOUNDARY}",
            lambda: chunked(multipart_body(file_part(AUDIO), file_part(OVER_LIMIT))),
        ),
        (  # the JSON part is bounded too
            f"multipart/mixed; boundary={BOUNDARY}",
            lambda: chunked(multipart_body(({"Content-Type": "application/json"}, OVER_LIMIT))),
        ),
    ],
)
async def test_over_the_limit_is_413_and_leaves_no_file(
    client: Client, temp_dir: Path, content_type: str, make_body: Callable[[], Any]
) -> None:
    status, got = await put(client, make_body(), content_type)
    assert status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert got == {"status": 413, "message": "validation error", "data": TOO_LARGE}
    assert_no_temp_files(temp_dir)


async def test_exactly_the_limit_is_accepted(client: Client) -> None:
    status, got = await put(client, chunked(bytes(LIMIT_BYTES)), "application/octet-stream")
    assert status == HTTPStatus.OK, got
    assert got["files"][0]["size"] == LIMIT_BYTES


async def test_a_20_mb_upload_is_streamed(aiohttp_client: AiohttpClient, temp_dir: Path) -> None:
    client = await aiohttp_client(upload_app(temp_dir, BIG_LIMIT_BYTES))
    chunk = bytes(range(256)) * 1024  # 256 KiB, sent again and again: the client holds one

    async def body() -> AsyncIterator[bytes]:
        for _ in range(BIG_BODY_BYTES // len(chunk)):
            yield chunk

    expected = hashlib.sha256()
    for _ in range(BIG_BODY_BYTES // len(chunk)):
        expected.update(chunk)
    tracemalloc.start()
    try:
        async with client.put(
            "/measure", data=body(), headers={"Content-Type": "audio/mpeg"}
        ) as resp:
            got = await resp.json()
    finally:
        tracemalloc.stop()
    assert resp.status == HTTPStatus.OK, got
    assert got["size"] == BIG_BODY_BYTES
    assert got["sha256"] == expected.hexdigest()
    assert got["peak_growth"] < TRACED_PEAK_LIMIT_BYTES
    assert_no_temp_files(temp_dir)
