"""Downloads in the format asked for (docs/audio.md, "Formats on request"): `?format=` and
`Accept` on the raw download, `format` on the ZIP, Range, HEAD and 406.

Every transcoded answer is decoded again (PyAV) and checked: container, codec and duration.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import zipfile
from typing import Any

import pytest
from aiohttp import ClientResponse

from piston_vm.core import gregorian
from piston_vm.storage.stores import Stores
from piston_vm.web.keys import DOWNLOADS
from tests import audio_samples
from tests.conftest import AppFactory, Tenant
from tests.helpers import Api, assert_error
from tests.test_legacy import element, put_box, put_media
from tests.test_legacy_api import month_prefix
from tests.test_message_support import (
    create_box,
    create_message_with_audio,
    get_raw,
    json_part,
    messages_path,
    multipart,
    raw_path,
    zip_path,
)

JsonObject = dict[str, Any]

SOURCES = ("wav", "mp3", "ogg", "m4a", "flac", "webm")
STORED_TYPE = {"wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg", "m4a": "audio/mp4",
               "flac": "audio/flac", "webm": "audio/webm"}
# What each output is once decoded: container, codec (prefix), and the type it is served as.
OUTPUT = {
    "wav": ("wav", "pcm_s16le", "audio/wav"),
    "mp3": ("mp3", "mp3", "audio/mpeg"),
    "ogg": ("ogg", "opus", "audio/ogg"),
    "m4a": ("mov,mp4,m4a,3gp,3g2,mj2", "aac", "audio/mp4"),
}
SAME_FORMAT = {("wav", "wav"), ("mp3", "mp3"), ("ogg", "ogg"), ("m4a", "m4a")}
SECONDS = audio_samples.SECONDS


def auth(tenant: Tenant, **extra: str) -> dict[str, str]:
    return {"X-Auth-Token": tenant.token, **extra}


async def message_of(api: Api, tenant: Tenant, box: str, kind: str, **fields: Any) -> str:
    data = await create_message_with_audio(api, tenant, box, audio_samples.sample(kind),
                                           STORED_TYPE.get(kind, "audio/mpeg"), **fields)
    return str(data["media_id"])


def assert_transcoded(resp: ClientResponse, raw: bytes, keyword: str,
                      seconds: float = SECONDS) -> None:
    container, codec, content_type = OUTPUT[keyword]
    assert resp.status == 200, raw[:300]
    assert resp.headers["Content-Type"] == content_type
    assert resp.headers["Accept-Ranges"] == "none"
    assert "Content-Length" not in resp.headers
    assert "Content-Range" not in resp.headers
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert resp.headers["Content-Disposition"].endswith(f'.{keyword}"')
    found = audio_samples.decoded(raw)
    assert found.container == container
    assert found.codec.startswith(codec), found
    assert found.channels == 1
    assert abs(found.seconds - seconds) <= 0.1, found


def assert_as_stored(resp: ClientResponse, raw: bytes, kind: str) -> None:
    assert resp.status == 200
    assert raw == audio_samples.sample(kind)
    assert resp.headers["Content-Type"] == STORED_TYPE[kind]
    assert resp.headers["Content-Length"] == str(len(raw))
    assert resp.headers["Accept-Ranges"] == "bytes"


def error_of(resp: ClientResponse, raw: bytes, status: int) -> JsonObject:
    assert resp.headers["Content-Type"] == "application/json", raw[:200]
    return assert_error(resp, json.loads(raw), status)


# -- ?format= ----------------------------------------------------------------------------------


@pytest.mark.parametrize("keyword", list(OUTPUT))
@pytest.mark.parametrize("kind", SOURCES)
async def test_every_stored_format_in_every_output_format(
    api: Api, account: Tenant, kind: str, keyword: str
) -> None:
    box = await create_box(api, account)
    message_id = await message_of(api, account, box, kind, caller_id_number="6001")
    resp, raw = await get_raw(api, raw_path(account, box, message_id), auth(account),
                              format=keyword)
    if (kind, keyword) in SAME_FORMAT:
        assert_as_stored(resp, raw, kind)
    else:
        assert_transcoded(resp, raw, keyword)
        assert resp.headers["Content-Disposition"].startswith('attachment; filename="6001_')


async def test_format_wins_over_accept_and_is_a_request_value(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    message_id = await message_of(api, account, box, "mp3")
    path = raw_path(account, box, message_id)
    resp, raw = await get_raw(api, path, auth(account, Accept="audio/wav"), format="ogg")
    assert_transcoded(resp, raw, "ogg")
    resp, raw = await get_raw(api, path, auth(account, Accept="audio/mpeg"), format="M4A")
    assert_transcoded(resp, raw, "m4a")
    # Like every request value (docs/api.md 3.3), it may come in the envelope.
    resp = await api.client.get(path, headers=auth(account, **{"Content-Type": "application/json"}),
                                data=json.dumps({"data": {"format": "wav"}}))
    assert_transcoded(resp, await resp.read(), "wav")


async def test_a_long_recording_is_transcoded_as_it_streams(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    body, ctype = multipart(json_part({}), ("audio/wav", audio_samples.wav(70.0), None))
    resp = await api.client.put(messages_path(account, box), data=io.BytesIO(body),
                                headers=auth(account, **{"Content-Type": ctype}))
    message_id = (await resp.json())["data"]["media_id"]
    resp = await api.client.get(raw_path(account, box, message_id), headers=auth(account),
                                params={"format": "mp3"})
    chunks = [chunk async for chunk in resp.content.iter_chunked(16 * 1024)]
    assert len(chunks) > 3  # it came in pieces, as written
    assert_transcoded(resp, b"".join(chunks), "mp3", 70.0)


# -- Accept ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("accept", "expected"), [
    ("audio/wav", "wav"),
    ("audio/x-wav", "wav"),
    ("audio/mp4", "m4a"),
    ("audio/ogg;q=0.9, audio/mp4;q=0.8", "ogg"),
    ("audio/mp4;q=0.8, audio/ogg;q=0.8", "m4a"),
    ("audio/mpeg;q=0.4, audio/wav;q=0.6", "wav"),
    ("audio/mpeg;q=0, audio/*;q=0.5", "wav"),
    ("audio/wav;q=0.5, audio/mpeg", None),
    ("audio/wav;q=0.5, audio/mp3;q=0.5", None),
    ("audio/wav, audio/*", None),
    ("audio/*", None),
    ("*/*", None),
    ("application/json", None),
    ("text/html,application/xhtml+xml,*/*;q=0.8", None),
    ("audio/flac, */*;q=0.1", None),
])
async def test_accept_chooses_the_format(
    api: Api, account: Tenant, accept: str, expected: str | None
) -> None:
    box = await create_box(api, account)
    message_id = await message_of(api, account, box, "mp3")
    resp, raw = await get_raw(api, raw_path(account, box, message_id),
                              auth(account, Accept=accept))
    if expected is None:
        assert_as_stored(resp, raw, "mp3")
    else:
        assert_transcoded(resp, raw, expected)


async def test_no_accept_and_no_format_serve_the_stored_bytes(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    message_id = await message_of(api, account, box, "webm")
    resp = await api.client.get(raw_path(account, box, message_id),
                                params={"auth_token": account.token},
                                skip_auto_headers=["Accept"])
    assert_as_stored(resp, await resp.read(), "webm")


# -- Range -------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, {"Accept": "application/json"}, {"Accept": "audio/*"},
                                   {"Accept": "audio/wav"}])
async def test_range_on_the_stored_bytes_is_unchanged(
    api: Api, account: Tenant, extra: dict[str, str]
) -> None:
    box = await create_box(api, account)
    message_id = await message_of(api, account, box, "wav")
    audio = audio_samples.sample("wav")
    resp, raw = await get_raw(api, raw_path(account, box, message_id),
                              auth(account, Range="bytes=10-19", **extra))
    assert resp.status == 206
    assert raw == audio[10:20]
    assert resp.headers["Content-Range"] == f"bytes 10-19/{len(audio)}"
    assert resp.headers["Accept-Ranges"] == "bytes"
    resp, raw = await get_raw(api, raw_path(account, box, message_id),
                              auth(account, Range="bytes=100-", **extra), format="wav")
    assert (resp.status, raw) == (206, audio[100:])
    resp, raw = await get_raw(api, raw_path(account, box, message_id),
                              auth(account, Range=f"bytes={len(audio)}-", **extra))
    assert error_of(resp, raw, 416) == {"message": "range not satisfiable"}


async def test_range_on_a_transcoded_answer_gets_the_whole_body(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    message_id = await message_of(api, account, box, "wav")
    for header in ("bytes=0-99", "bytes=100-", f"bytes={10**9}-"):
        resp, raw = await get_raw(api, raw_path(account, box, message_id),
                                  auth(account, Range=header), format="mp3")
        assert_transcoded(resp, raw, "mp3")


# -- HEAD --------------------------------------------------------------------------------------


async def test_head_of_a_transcoded_answer_has_its_headers_and_no_body(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    message_id = await message_of(api, account, box, "mp3")
    resp = await api.client.head(raw_path(account, box, message_id), headers=auth(account),
                                 params={"format": "wav"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "audio/wav"
    assert resp.headers["Accept-Ranges"] == "none"
    assert resp.headers["Content-Disposition"].endswith('.wav"')
    assert await resp.read() == b""
    resp = await api.client.head(raw_path(account, box, message_id), headers=auth(account),
                                 params={"format": "flac"})
    assert resp.status == 406


# -- 406 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "headers", "cause"), [
    ({"format": "flac"}, {}, "flac"),
    ({"format": "opus"}, {"Accept": "audio/wav"}, "opus"),
    ({}, {"Accept": "audio/flac"}, "audio/flac"),
    ({}, {"Accept": "audio/mpeg;q=0, audio/wav;q=0, audio/ogg;q=0, audio/mp4;q=0"},
     "audio/mpeg;q=0, audio/wav;q=0, audio/ogg;q=0, audio/mp4;q=0"),
])
async def test_a_format_that_cannot_be_produced_is_406(
    api: Api, account: Tenant, params: dict[str, str], headers: dict[str, str], cause: str
) -> None:
    box = await create_box(api, account)
    message_id = await message_of(api, account, box, "mp3")
    resp, raw = await get_raw(api, raw_path(account, box, message_id),
                              auth(account, **headers), **params)
    data = error_of(resp, raw, 406)
    assert data["cause"] == cause
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_audio_that_cannot_be_decoded_is_406_and_still_served_as_stored(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    noise = os.urandom(50_000)
    message_id = (await create_message_with_audio(api, account, box, noise,
                                                  "audio/mpeg"))["media_id"]
    path = raw_path(account, box, message_id)
    for params, headers in (({"format": "wav"}, {}), ({}, {"Accept": "audio/ogg"})):
        resp, raw = await get_raw(api, path, auth(account, **headers), **params)
        assert error_of(resp, raw, 406) == {"message": "the audio cannot be decoded",
                                            "cause": message_id}
    resp, raw = await get_raw(api, path, auth(account))
    assert (resp.status, raw) == (200, noise)


@pytest.mark.parametrize("stored", [
    # FFmpeg's probing would take it, and read the file it names: only known formats decode.
    b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
    b"ffconcat version 1.0\nfile /etc/passwd\n",
    # Sun audio: a format FFmpeg decodes that piston_vm does not know.
    b".snd\x00\x00\x00\x18\xff\xff\xff\xff\x00\x00\x00\x03\x00\x00\x1f\x40\x00\x00\x00\x01"
    + b"\x00\x10" * 8000,
])
async def test_only_known_formats_are_decoded(
    api: Api, account: Tenant, stored: bytes
) -> None:
    box = await create_box(api, account)
    message_id = (await create_message_with_audio(api, account, box, stored,
                                                  "audio/mpeg"))["media_id"]
    resp, raw = await get_raw(api, raw_path(account, box, message_id), auth(account),
                              format="wav")
    assert error_of(resp, raw, 406)["cause"] == message_id


async def test_a_missing_message_is_404_before_any_406(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    missing = f"{gregorian.utc_month(gregorian.now())[0]}01-{secrets.token_hex(16)}"
    resp, raw = await get_raw(api, raw_path(account, box, missing), auth(account),
                              format="flac")
    assert error_of(resp, raw, 404)["cause"] == missing


# -- ZIP ---------------------------------------------------------------------------------------


async def post_zip(api: Api, tenant: Tenant, box: str, data: JsonObject,
                   **params: str) -> tuple[ClientResponse, bytes]:
    resp = await api.client.post(zip_path(tenant, box), data=json.dumps({"data": data}),
                                 headers=auth(tenant, **{"Content-Type": "application/json"}),
                                 params=params or None)
    return resp, await resp.read()


@pytest.mark.parametrize("where", ["query", "data"])
async def test_the_zip_takes_a_format_for_every_entry(
    api: Api, account: Tenant, where: str
) -> None:
    box = await create_box(api, account)
    kinds = ("wav", "mp3", "ogg", "webm")
    ids = [await message_of(api, account, box, kind, caller_id_number="6001",
                            timestamp=gregorian.now() - 60) for kind in kinds]
    request: JsonObject = {"messages": ids}
    params = {"format": "wav"} if where == "query" else {}
    if where == "data":
        request["format"] = "wav"
    resp, raw = await post_zip(api, account, box, request, **params)
    assert resp.status == 200, raw[:300]
    assert resp.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert len(names) == 4
        assert len(set(names)) == 4
        for name in names:
            assert name.endswith(".wav"), names
            assert name.startswith("6001_"), names
            found = audio_samples.decoded(archive.read(name))
            assert found.container == "wav"
            assert found.codec == "pcm_s16le"
            assert abs(found.seconds - SECONDS) <= 0.1, (name, found)
        # The WAV was stored as WAV: its entry is the stored bytes.
        assert audio_samples.sample("wav") in [archive.read(name) for name in names]


async def test_a_zip_without_a_format_is_unchanged(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    ids = [await message_of(api, account, box, kind) for kind in ("mp3", "ogg")]
    _resp, raw = await post_zip(api, account, box, {"messages": ids})
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        contents = sorted(archive.read(name) for name in archive.namelist())
        assert {name.rsplit(".", 1)[1] for name in archive.namelist()} == {"mp3", "oga"}
    assert contents == sorted([audio_samples.sample("mp3"), audio_samples.sample("ogg")])


async def test_a_zip_with_a_format_refuses_before_it_starts(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    good = await message_of(api, account, box, "mp3")
    noise = (await create_message_with_audio(api, account, box, os.urandom(30_000),
                                             "audio/mpeg"))["media_id"]
    resp, raw = await post_zip(api, account, box, {"messages": [good, noise]}, format="ogg")
    assert error_of(resp, raw, 406) == {"message": "the audio cannot be decoded",
                                        "cause": noise}
    resp, raw = await post_zip(api, account, box, {"messages": [good]}, format="flac")
    assert error_of(resp, raw, 406)["cause"] == "flac"


# -- link-form audio and a download that goes away ---------------------------------------------


async def test_migrated_link_form_audio_is_transcoded(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box_id = secrets.token_hex(16)
    media_id = await put_media(stores, account, box_id, audio_samples.sample("m4a"))
    time = gregorian.now() - 3600
    await put_box(stores, account, [element(media_id, time)], _id=box_id)
    resp, raw = await get_raw(api, raw_path(account, box_id, month_prefix(time) + media_id),
                              auth(account), format="mp3")
    assert_transcoded(resp, raw, "mp3")


async def test_a_download_that_goes_away_stops_its_transcode(
    make_client: AppFactory, account: Tenant
) -> None:
    client = await make_client(transcode_workers=1)
    api = Api(client)
    box = await create_box(api, account)
    # Five minutes of Opus decode to 28 MB of 48 kHz WAV: far more than the queue and the
    # socket buffers hold, so the transcode can only end by being called off.
    opus = audio_samples.sample("ogg", 300.0)
    resp = await client.put(messages_path(account, box), data=io.BytesIO(opus),
                            headers=auth(account, **{"Content-Type": "audio/ogg"}))
    message_id = (await resp.json())["data"]["media_id"]
    transcoder = client.app[DOWNLOADS].messages.transcoder
    resp = await client.get(raw_path(account, box, message_id), headers=auth(account),
                            params={"format": "wav"})
    assert resp.status == 200
    await resp.content.read(1000)
    assert transcoder.in_flight == 1
    resp.close()  # the client hangs up mid-download
    for _ in range(200):
        if not transcoder.in_flight:
            break
        await asyncio.sleep(0.05)
    assert transcoder.in_flight == 0
    # The one worker is free again: the next transcode runs.
    resp, raw = await get_raw(api, raw_path(account, box, message_id),
                              auth(account, Range="bytes=0-"), format="mp3")
    assert_transcoded(resp, raw, "mp3", 300.0)
