"""Audio that arrives (docs/audio.md, "Uploads"): durations as metadata.length, the stored type
taken from the bytes, PISTON_VM_REQUIRE_AUDIO's 415, and legacy messages measured on migration.

Every upload goes through the HTTP API against the CouchDB-protocol server; what matters is
read back from the stored documents.
"""

from __future__ import annotations

import base64
import io
import os
import secrets
from typing import Any

import pytest
from aiohttp import ClientResponse

from piston_vm.core import gregorian
from piston_vm.services import message_docs as docs
from piston_vm.storage.stores import Stores
from tests import audio_samples
from tests.conftest import AppFactory, Tenant
from tests.helpers import Api, assert_error, assert_success
from tests.test_legacy import element, put_box, put_media
from tests.test_legacy_api import month_prefix
from tests.test_message_support import (
    create_box,
    create_message,
    create_message_with_audio,
    get_raw,
    json_part,
    list_messages,
    message_path,
    messages_path,
    multipart,
    must_stored,
    raw_path,
    stored_attachments,
    stored_message_docs,
)

JsonObject = dict[str, Any]

THREE_S_MS = 3000
# docs/audio.md: every format's stated duration, within 50 ms. A streamed CBR MP3 states none:
# its frames are counted, and they hold the encoder's delay (1,105 samples; 46 ms at 24 kHz).
TOLERANCE_MS = {"mp3-cbr-streamed": 80}
DURATION_FORMATS = ("wav", "mp3", "mp3-cbr-streamed", "ogg", "m4a", "flac", "webm", "aiff")
CANONICAL = {"wav": "audio/wav", "mp3": "audio/mpeg", "mp3-cbr-streamed": "audio/mpeg",
             "ogg": "audio/ogg", "m4a": "audio/mp4", "flac": "audio/flac",
             "webm": "audio/webm", "aiff": "audio/aiff", "aac": "audio/aac"}
EXTENSION = {"wav": "wav", "mp3": "mp3", "mp3-cbr-streamed": "mp3", "ogg": "oga", "m4a": "mp4",
             "flac": "flac", "webm": "webm", "aiff": "aiff", "aac": "aac"}


async def raw_create(
    api: Api, tenant: Tenant, box: str, body: bytes, content_type: str, **params: str
) -> tuple[ClientResponse, Any]:
    return await api.call("PUT", messages_path(tenant, box), tenant.token, body=body,
                          headers={"Content-Type": content_type}, params=params or None)


async def put_raw(
    api: Api, tenant: Tenant, box: str, message_id: str, body: bytes, content_type: str,
    **params: str,
) -> tuple[ClientResponse, Any]:
    return await api.call("PUT", raw_path(tenant, box, message_id), tenant.token, body=body,
                          headers={"Content-Type": content_type}, params=params or None)


async def the_attachment(stores: Stores, tenant: Tenant, message_id: str) -> tuple[str, str, bytes]:
    """(name, content type, bytes) of the message's one stored attachment."""
    attachments = await stored_attachments(stores, tenant, message_id)
    assert len(attachments) == 1, attachments
    ((name, (content_type, data)),) = attachments.items()
    return name, content_type, data


def assert_duration(length: Any, kind: str, expected_ms: int = THREE_S_MS) -> None:
    assert isinstance(length, int), length
    assert abs(length - expected_ms) <= TOLERANCE_MS.get(kind, 50), (kind, length)


# -- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DURATION_FORMATS)
async def test_a_multipart_create_stores_the_audio_duration_as_length(
    api: Api, account: Tenant, stores: Stores, kind: str
) -> None:
    box = await create_box(api, account)
    data = await create_message_with_audio(api, account, box, audio_samples.sample(kind),
                                           CANONICAL[kind])
    assert_duration(data["length"], kind)
    doc = await must_stored(stores, account, data["media_id"])
    assert doc["metadata"]["length"] == data["length"]
    assert doc[docs.LENGTH_MEASURED] is True
    # The list rows come from the platform's view: they carry it too.
    _, rows = await list_messages(api, account, box)
    assert [row["length"] for row in rows] == [data["length"]]


async def test_raw_aac_is_measured_by_its_frames(
    api: Api, account: Tenant, stores: Stores
) -> None:
    # ADTS states no duration and cannot say how much of it is the encoder's priming: counted
    # frames hold it (1,024 samples and the last frame's padding, about 250 ms at 8 kHz).
    box = await create_box(api, account)
    data = await create_message_with_audio(api, account, box, audio_samples.sample("aac"),
                                           "audio/aac")
    assert THREE_S_MS <= data["length"] <= THREE_S_MS + 300


@pytest.mark.parametrize(("kind", "content_type"), [("ogg", "audio/ogg"), ("wav", "audio/x-wav"),
                                                    ("m4a", "application/octet-stream")])
async def test_a_raw_create_is_measured(
    api: Api, account: Tenant, stores: Stores, kind: str, content_type: str
) -> None:
    box = await create_box(api, account)
    resp, body = await raw_create(api, account, box, audio_samples.sample(kind), content_type)
    data = assert_success(resp, body, 201)
    assert_duration(data["length"], kind)


async def test_a_base64_create_is_measured_and_typed_by_its_bytes(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    encoded = base64.b64encode(audio_samples.sample("flac"))
    resp, body = await raw_create(api, account, box, b"data:audio/wav;base64," + encoded,
                                  "application/base64")
    data = assert_success(resp, body, 201)
    assert_duration(data["length"], "flac")
    name, content_type, stored = await the_attachment(stores, account, data["media_id"])
    assert (content_type, name.rsplit(".", 1)[1]) == ("audio/flac", "flac")
    assert stored == audio_samples.sample("flac")


async def test_an_upload_spooled_to_disk_is_measured(
    api: Api, account: Tenant, stores: Stores
) -> None:
    # 70 s of 8 kHz WAV is 1.12 MB: over the 1 MiB kept in memory, so FFmpeg reads the spool.
    audio = audio_samples.wav(70.0)
    assert len(audio) > 1024 * 1024
    box = await create_box(api, account)
    body, ctype = multipart(json_part({}), ("audio/wav", audio, None))
    # A file object: aiohttp warns about large bodies given as bytes.
    resp = await api.client.put(messages_path(account, box), data=io.BytesIO(body),
                                headers={"Content-Type": ctype, "X-Auth-Token": account.token})
    data = assert_success(resp, await resp.json(), 201)
    assert_duration(data["length"], "wav", 70_000)
    _, _, stored = await the_attachment(stores, account, data["media_id"])
    assert stored == audio


@pytest.mark.parametrize("given", [18400, "18400", 2])
async def test_a_length_the_client_gives_is_kept(
    api: Api, account: Tenant, stores: Stores, given: Any
) -> None:
    box = await create_box(api, account)
    data = await create_message_with_audio(api, account, box, audio_samples.sample("wav"),
                                           "audio/wav", length=given)
    assert data["length"] == int(given)
    doc = await must_stored(stores, account, data["media_id"])
    assert doc["metadata"]["length"] == int(given)
    assert docs.LENGTH_MEASURED not in doc


async def test_a_given_length_of_0_is_the_default_and_measured(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    data = await create_message_with_audio(api, account, box, audio_samples.sample("wav"),
                                           "audio/wav", length=0)
    assert_duration(data["length"], "wav")


async def test_unknown_bytes_are_stored_unchanged_with_the_default_length(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    noise = os.urandom(200_000)
    data = await create_message_with_audio(api, account, box, noise, "audio/wav")
    assert data["length"] == 1
    doc = await must_stored(stores, account, data["media_id"])
    assert docs.LENGTH_MEASURED not in doc
    name, content_type, stored = await the_attachment(stores, account, data["media_id"])
    assert (content_type, stored) == ("audio/wav", noise)
    assert name.endswith(".wav")
    resp, raw = await get_raw(api, raw_path(account, box, data["media_id"]),
                              {"X-Auth-Token": account.token})
    assert resp.status == 200
    assert (resp.headers["Content-Type"], raw) == ("audio/wav", noise)


async def test_bytes_with_an_audio_signature_that_do_not_decode_are_stored_as_declared(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    fake = b"RIFF\x24\x00\x00\x00WAVEjunk" + os.urandom(5000)
    data = await create_message_with_audio(api, account, box, fake, "audio/mpeg")
    assert data["length"] == 1
    _, content_type, stored = await the_attachment(stores, account, data["media_id"])
    assert (content_type, stored) == ("audio/mpeg", fake)


# -- the stored type ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*DURATION_FORMATS, "aac"])
async def test_a_wrong_declared_type_gives_way_to_the_type_of_the_bytes(
    api: Api, account: Tenant, stores: Stores, kind: str
) -> None:
    box = await create_box(api, account)
    declared = "audio/x-wav" if kind != "wav" else "audio/mpeg"
    audio = audio_samples.sample(kind)
    data = await create_message_with_audio(api, account, box, audio, declared)
    name, content_type, stored = await the_attachment(stores, account, data["media_id"])
    assert content_type == CANONICAL[kind]
    assert name.rsplit(".", 1)[1] == EXTENSION[kind]
    assert stored == audio
    resp, raw = await get_raw(api, raw_path(account, box, data["media_id"]),
                              {"X-Auth-Token": account.token})
    assert resp.headers["Content-Type"] == CANONICAL[kind]
    assert resp.headers["Content-Disposition"].endswith(f'.{EXTENSION[kind]}"')
    assert raw == audio


async def test_a_given_file_name_keeps_its_stem_and_gets_the_right_extension(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    body, ctype = multipart(json_part({"filename": "greeting.wav"}),
                            ("audio/wav", audio_samples.sample("mp3"), "greeting.wav"))
    resp, decoded = await api.call("PUT", messages_path(account, box), account.token,
                                   body=body, headers={"Content-Type": ctype})
    data = assert_success(resp, decoded, 201)
    name, content_type, _ = await the_attachment(stores, account, data["media_id"])
    assert (name, content_type) == ("greeting.mp3", "audio/mpeg")


@pytest.mark.parametrize(("kind", "declared", "extension"), [
    ("ogg", "audio/ogg; codecs=opus", "oga"),
    ("mp3", "audio/mp3", "mp3"),
    ("wav", "audio/x-wav", "wav"),
    ("webm", "video/webm", ""),  # the platform's table has no extension for it
])
async def test_a_declared_type_that_agrees_is_kept_verbatim(
    api: Api, account: Tenant, stores: Stores, kind: str, declared: str, extension: str
) -> None:
    box = await create_box(api, account)
    data = await create_message_with_audio(api, account, box, audio_samples.sample(kind),
                                           declared)
    name, content_type, _ = await the_attachment(stores, account, data["media_id"])
    assert content_type == declared
    assert name.rsplit(".", 1)[1] == extension


# -- PUT raw -----------------------------------------------------------------------------------


async def test_put_raw_measures_new_audio_and_measures_again_when_it_is_replaced(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    message_id = (await create_message(api, account, box))["media_id"]
    resp, body = await put_raw(api, account, box, message_id, audio_samples.sample("ogg"),
                               "audio/ogg")
    assert_duration(assert_success(resp, body, 201)["length"], "ogg")
    longer = audio_samples.sample("mp3", 5.0)
    resp, body = await put_raw(api, account, box, message_id, longer, "audio/wav")
    assert_duration(assert_success(resp, body, 201)["length"], "mp3", 5000)
    name, content_type, _ = await the_attachment(stores, account, message_id)
    assert content_type == "audio/mpeg"
    assert name.endswith(".mp3")
    # Audio nobody can measure: the earlier measure says nothing about it.
    resp, body = await put_raw(api, account, box, message_id, b"not audio at all",
                               "audio/basic")
    assert assert_success(resp, body, 201)["length"] == 1
    doc = await must_stored(stores, account, message_id)
    assert doc["metadata"]["length"] == 1
    assert docs.LENGTH_MEASURED not in doc


async def test_put_raw_keeps_a_length_the_client_gave(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    message_id = (await create_message(api, account, box, length=18400))["media_id"]
    resp, body = await put_raw(api, account, box, message_id, audio_samples.sample("wav"),
                               "audio/wav")
    assert assert_success(resp, body, 201)["length"] == 18400
    doc = await must_stored(stores, account, message_id)
    assert doc["metadata"]["length"] == 18400


# -- PISTON_VM_REQUIRE_AUDIO -------------------------------------------------------------------


@pytest.mark.parametrize("upload", [
    os.urandom(200_000),
    b"ABCDEFG",
    b"RIFF\x24\x00\x00\x00WAVEjunk" + b"\x00" * 5000,  # looks like WAV, decodes as nothing
])
async def test_strict_mode_refuses_what_is_no_known_audio_and_writes_nothing(
    make_client: AppFactory, account: Tenant, stores: Stores, upload: bytes
) -> None:
    api = Api(await make_client(require_audio=True))
    box = await create_box(api, account)
    body, ctype = multipart(json_part({"caller_id_number": "6001"}), ("audio/wav", upload, None))
    resp, decoded = await api.call("PUT", messages_path(account, box), account.token,
                                   body=body, headers={"Content-Type": ctype})
    data = assert_error(resp, decoded, 415, "unsupported_media_type")
    assert data == {"message": "unsupported media type", "cause": "audio/wav"}
    resp, decoded = await raw_create(api, account, box, upload, "application/octet-stream")
    assert assert_error(resp, decoded, 415)["cause"] == "application/octet-stream"
    assert await stored_message_docs(stores, account) == []
    assert await stores.messages.all_modbs(account.account.db) == []


async def test_strict_mode_keeps_the_old_audio_when_the_new_is_refused(
    make_client: AppFactory, account: Tenant, stores: Stores
) -> None:
    api = Api(await make_client(require_audio=True))
    box = await create_box(api, account)
    data = await create_message_with_audio(api, account, box, audio_samples.sample("wav"),
                                           "audio/wav")
    before = await must_stored(stores, account, data["media_id"])
    resp, body = await put_raw(api, account, box, data["media_id"], os.urandom(9000),
                               "audio/mpeg")
    assert assert_error(resp, body, 415)["cause"] == "audio/mpeg"
    after = await must_stored(stores, account, data["media_id"])
    assert after["_rev"] == before["_rev"]
    resp, body = await api.call("GET", message_path(account, box, data["media_id"]),
                                account.token)
    assert_duration(assert_success(resp, body)["length"], "wav")


@pytest.mark.parametrize("kind", ["mp3", "webm"])
async def test_strict_mode_takes_real_audio(
    make_client: AppFactory, account: Tenant, kind: str
) -> None:
    api = Api(await make_client(require_audio=True))
    box = await create_box(api, account)
    data = await create_message_with_audio(api, account, box, audio_samples.sample(kind),
                                           "application/octet-stream")
    assert_duration(data["length"], kind)


async def test_strict_mode_leaves_metadata_only_creates_alone(
    make_client: AppFactory, account: Tenant
) -> None:
    api = Api(await make_client(require_audio=True))
    box = await create_box(api, account)
    assert (await create_message(api, account, box))["length"] == 1


# -- legacy migration --------------------------------------------------------------------------


async def test_migration_measures_legacy_audio_without_a_length(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box_id = secrets.token_hex(16)
    wav, mp3, noise = audio_samples.sample("wav"), audio_samples.sample("mp3", 5.0), b"x" * 999
    unmeasured = await put_media(stores, account, box_id, wav)
    given = await put_media(stores, account, box_id, mp3)
    unreadable = await put_media(stores, account, box_id, noise)
    time = gregorian.now() - 3600
    elements = [element(unmeasured, time), element(given, time + 1),
                element(unreadable, time + 2)]
    del elements[0]["length"]
    elements[2]["length"] = None
    await put_box(stores, account, elements, _id=box_id)
    prefix = month_prefix(time)

    resp, body = await api.call("GET", message_path(account, box_id, prefix + unmeasured),
                                account.token)
    assert_duration(assert_success(resp, body)["length"], "wav")
    doc = await must_stored(stores, account, prefix + unmeasured)
    assert doc[docs.LENGTH_MEASURED] is True
    assert doc["pvt_attachments"]  # still the link form of docs/storage.md 5.4
    resp, body = await api.call("GET", message_path(account, box_id, prefix + given),
                                account.token)
    assert assert_success(resp, body)["length"] == 20520
    doc = await must_stored(stores, account, prefix + unreadable)
    assert doc["metadata"]["length"] is None
    assert docs.LENGTH_MEASURED not in doc
    resp, raw = await get_raw(api, raw_path(account, box_id, prefix + unmeasured),
                              {"X-Auth-Token": account.token})
    assert raw == wav
