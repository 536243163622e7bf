"""Pure audio-format rules without I/O (docs/audio.md): sniffing, Accept and `format`
negotiation, file names, the length rule, and ZIP entries of unknown size."""

from __future__ import annotations

import io
import os
import zipfile
from datetime import datetime
from typing import Any

import pytest

from piston_vm.core import errors
from piston_vm.core.audio_formats import (
    AAC,
    AIFF,
    FLAC,
    MP3,
    MP4,
    OGG,
    SNIFF_BYTES,
    WAV,
    WEBM,
    AudioFormat,
    choose_output,
    format_of_type,
    parse_accept,
    sniff,
)
from piston_vm.core.media import ZipStream, with_extension
from piston_vm.services import message_docs as docs
from tests import audio_samples

SNIFFED = {"wav": WAV, "mp3": MP3, "mp3-cbr-streamed": MP3, "ogg": OGG, "m4a": MP4,
           "flac": FLAC, "webm": WEBM, "aiff": AIFF, "aac": AAC}


@pytest.mark.parametrize("kind", audio_samples.FORMATS)
def test_every_sample_is_sniffed_as_its_format(kind: str) -> None:
    data = audio_samples.sample(kind)
    found = sniff(data[:SNIFF_BYTES], len(data))
    assert found is not None, kind
    assert found.format is SNIFFED[kind]


def test_a_mp3_with_a_xing_header_says_so_and_a_streamed_one_does_not() -> None:
    tagged = audio_samples.sample("mp3")
    streamed = audio_samples.sample("mp3-cbr-streamed")
    assert sniff(tagged) == sniff(tagged[:SNIFF_BYTES], len(tagged))
    found, plain = sniff(tagged), sniff(streamed)
    assert found is not None
    assert found.vbr_header
    assert plain is not None
    assert not plain.vbr_header


def test_a_mp3_without_its_id3_tag_is_still_mp3() -> None:
    data = audio_samples.sample("mp3-cbr-streamed")
    size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
    frames = data[10 + size:]
    assert frames[0] == 0xFF
    found = sniff(frames)
    assert found is not None
    assert found.format is MP3


@pytest.mark.parametrize("data", [
    b"",
    b"ABCDEFG",
    os.urandom(200_000),
    b"\x00" * 5000,
    b"RIFF\x00\x00\x00\x00AVI LIST",  # a RIFF that is not WAVE
    b"OggS\x00\x02" + b"\x00" * 20 + b"\x01\x1e\x80theora" + b"\x00" * 40,  # Ogg video
    b"\x1a\x45\xdf\xa3\x9f\x42\x82\x84abcd" + b"\x00" * 40,  # EBML, not Matroska
    b"\xff\xfb\x90\x64" + b"\x00" * 3000,  # one MP3 frame header, no second frame
    b'{"data": {}}',
    b"%PDF-1.7\n",
])
def test_bytes_that_are_no_known_audio_are_not_sniffed(data: bytes) -> None:
    assert sniff(data[:SNIFF_BYTES], len(data)) is None


def test_random_bytes_are_never_taken_for_audio() -> None:
    # One sync word appears in about one random file in 2,000: the second frame must follow.
    for _ in range(3000):
        data = os.urandom(4096)
        assert sniff(data) is None or data[:4] in (b"RIFF", b"OggS"), data[:16]


@pytest.mark.parametrize(("content_type", "expected"), [
    ("audio/mp3", MP3), ("audio/mpeg", MP3), ("AUDIO/MPEG; x=1", MP3), ("audio/x-wav", WAV),
    ("audio/wav", WAV), ("audio/wave", WAV), ("audio/ogg; codecs=opus", OGG),
    ("audio/opus", OGG), ("audio/mp4", MP4), ("audio/x-m4a", MP4), ("audio/webm", WEBM),
    ("video/webm", WEBM), ("audio/flac", FLAC), ("application/octet-stream", None),
    ("", None), ("audio/basic", None),
])
def test_format_of_type_knows_every_spelling(
    content_type: str, expected: AudioFormat | None
) -> None:
    assert format_of_type(content_type) is expected


def test_parse_accept_reads_q_values_and_drops_malformed_elements() -> None:
    ranges = parse_accept("audio/wav;q=0.5, audio/*; q=0.2, bogus, */x, audio/ogg;q=abc, "
                          "audio/mpeg;Q=1.7, */*;q=0")
    assert [(r.type, r.subtype, r.q) for r in ranges] == [
        ("audio", "wav", 0.5), ("audio", "*", 0.2), ("audio", "mpeg", 1.0), ("*", "*", 0.0)]


def keyword(stored: str, format_value: str | None = None, accept: str | None = None) -> Any:
    output = choose_output(stored, format_value, accept)
    return None if output is None else output.keyword


@pytest.mark.parametrize(("stored", "accept", "expected"), [
    # No audio type named: the stored bytes, as today (docs/decisions.md P-13).
    ("audio/mpeg", None, None),
    ("audio/mpeg", "", None),
    ("audio/mpeg", "*/*", None),
    ("audio/mpeg", "audio/*", None),
    ("audio/mpeg", "application/json", None),
    ("audio/mpeg", "text/html,application/xhtml+xml,*/*;q=0.8", None),
    ("application/octet-stream", "audio/*", None),
    # The stored type itself, in any spelling.
    ("audio/mp3", "audio/mpeg", None),
    ("audio/x-wav", "audio/wav", None),
    ("audio/ogg; codecs=opus", "audio/ogg", None),
    # Another type: transcoded.
    ("audio/mpeg", "audio/wav", "wav"),
    ("audio/mpeg", "audio/x-wav", "wav"),
    ("audio/wav", "audio/mpeg", "mp3"),
    ("audio/wav", "audio/mp3", "mp3"),
    ("audio/mpeg", "audio/ogg", "ogg"),
    ("audio/mpeg", "audio/mp4", "m4a"),
    ("audio/mpeg", "audio/x-m4a", "m4a"),
    ("audio/webm", "audio/wav", "wav"),
    # q-values: the highest wins; the stored type wins ties and beats lower preferences.
    ("audio/mpeg", "audio/wav;q=0.9, audio/mpeg;q=0.5", "wav"),
    ("audio/mpeg", "audio/wav;q=0.5, audio/mpeg;q=0.9", None),
    ("audio/mpeg", "audio/wav;q=0.5, audio/mpeg;q=0.5", None),
    ("audio/mpeg", "audio/wav, audio/*", None),
    ("audio/mpeg", "audio/wav, audio/*;q=0.5", "wav"),
    ("audio/mpeg", "audio/wav;q=0.3, */*;q=0.3", None),
    ("audio/mpeg", "audio/wav;q=0.3, */*;q=0.2", "wav"),
    ("audio/mpeg", "audio/ogg;q=0.4, audio/wav;q=0.6", "wav"),
    # Equal q among outputs: the first named in the header.
    ("audio/webm", "audio/ogg, audio/wav", "ogg"),
    ("audio/webm", "audio/mp4, audio/mpeg", "m4a"),
    # Equal q through a wildcard: the stored type if it matches, else wav, mp3, ogg, m4a.
    ("audio/webm", "audio/flac, audio/*;q=0.5", None),
    ("application/octet-stream", "audio/flac, audio/*;q=0.5", "wav"),
    ("application/octet-stream", "audio/wav;q=0, audio/mpeg;q=0.1, audio/*;q=0.1", "mp3"),
    # q=0 refuses the stored type.
    ("audio/mpeg", "audio/mpeg;q=0, audio/wav;q=0.1", "wav"),
    # A type we cannot produce does not outrank the stored one it cannot replace.
    ("audio/mpeg", "audio/flac, */*;q=0.1", None),
])
def test_accept_negotiation(stored: str, accept: str | None, expected: str | None) -> None:
    assert keyword(stored, accept=accept) == expected


@pytest.mark.parametrize(("stored", "accept"), [
    ("audio/mpeg", "audio/flac"),
    ("audio/mpeg", "audio/mpeg;q=0, audio/flac"),
    ("audio/wav", "audio/wav;q=0, audio/mpeg;q=0, audio/ogg;q=0, audio/mp4;q=0"),
    ("application/octet-stream", "audio/wav;q=0, audio/*;q=0, audio/basic"),
])
def test_accept_that_nothing_producible_meets_is_406(stored: str, accept: str) -> None:
    with pytest.raises(errors.ApiError) as caught:
        choose_output(stored, None, accept)
    assert caught.value.status == 406
    assert caught.value.message == "not_acceptable"
    assert caught.value.data == {"message": "cannot produce an acceptable audio format",
                                 "cause": accept}


@pytest.mark.parametrize(("stored", "value", "expected"), [
    ("audio/mpeg", "wav", "wav"), ("audio/mpeg", "WAV", "wav"), ("audio/mpeg", " ogg ", "ogg"),
    ("audio/mpeg", "m4a", "m4a"), ("audio/wav", "mp3", "mp3"), ("audio/mpeg", "mp3", None),
    ("audio/mp3", "mp3", None), ("audio/x-wav", "wav", None), ("audio/mp4", "m4a", None),
    ("application/octet-stream", "mp3", "mp3"), ("audio/mpeg", "", None),
])
def test_format_wins_over_accept(stored: str, value: str, expected: str | None) -> None:
    assert keyword(stored, value, "audio/ogg;q=1") == (expected if value.strip() else "ogg")


@pytest.mark.parametrize("value", ["flac", "opus", "mp4", "aac", "wav;q=1", "x" * 300])
def test_a_format_that_cannot_be_produced_is_406(value: str) -> None:
    with pytest.raises(errors.ApiError) as caught:
        choose_output("audio/mpeg", value, None)
    assert caught.value.status == 406
    assert caught.value.data["cause"] == value


@pytest.mark.parametrize(("name", "extension", "expected"), [
    ("voice.wav", "mp3", "voice.mp3"), ("voice", "mp3", "voice.mp3"),
    ("uploaded_file_63880000000.", "wav", "uploaded_file_63880000000.wav"),
    ("a.b.c", "oga", "a.b.oga"), (".hidden", "mp3", ".hidden.mp3"), ("x.mp3", "", "x.mp3"),
])
def test_with_extension(name: str, extension: str, expected: str) -> None:
    assert with_extension(name, extension) == expected


@pytest.mark.parametrize(("metadata", "measured", "duration", "length", "marked"), [
    ({"length": 1}, False, 4200, 4200, True),  # the platform's default: measured
    ({"length": 0}, False, 4200, 4200, True),
    ({}, False, 4200, 4200, True),
    ({"length": 18400}, False, 4200, 18400, False),  # given by a client or the callflow
    ({"length": 5000}, True, 4200, 4200, True),  # measured from earlier audio: again
    ({"length": 5000}, True, None, 1, False),  # earlier audio's length says nothing now
    ({"length": 1}, False, None, 1, False),
    ({"length": 18400}, False, None, 18400, False),
])
def test_the_length_rule(
    metadata: dict[str, Any], measured: bool, duration: int | None, length: int, marked: bool
) -> None:
    doc: dict[str, Any] = {"metadata": dict(metadata)}
    if measured:
        doc[docs.LENGTH_MEASURED] = True
    docs.set_measured_length(doc, duration)
    assert doc["metadata"].get("length", 1) == length
    assert (docs.LENGTH_MEASURED in doc) is marked


def test_a_zip_entry_of_unknown_size_gets_its_size_at_the_end() -> None:
    archive = ZipStream()
    when = datetime(2024, 4, 10, 16, 26, 40)
    out = bytearray()
    out += archive.start_entry("known.mp3", 3, when)
    out += archive.write(b"abc")
    out += archive.end_entry()
    out += archive.start_entry("streamed.wav", None, when)
    for part in (b"RIFF", b"x" * 70_000, b"end"):
        out += archive.write(part)
    out += archive.end_entry()
    out += archive.finish()
    with zipfile.ZipFile(io.BytesIO(bytes(out))) as opened:
        assert opened.testzip() is None
        assert opened.read("known.mp3") == b"abc"
        assert opened.read("streamed.wav") == b"RIFF" + b"x" * 70_000 + b"end"
        assert opened.getinfo("streamed.wav").file_size == 70_007


def test_a_zip_entry_of_unknown_size_may_not_outgrow_the_32_bit_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("piston_vm.core.media.ZIP64_LIMIT_BYTES", 100)
    archive = ZipStream()
    archive.start_entry("streamed.wav", None, datetime(2024, 4, 10))
    archive.write(b"x" * 99)
    with pytest.raises(ValueError, match="more than"):
        archive.write(b"x")
