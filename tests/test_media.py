"""Pure media helpers: names, extensions, the Range table, download names and the ZIP writer."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import zipfile
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path

import pytest

from piston_vm.core import errors, media
from piston_vm.core.media import RangeAnswer

LA_TIMESTAMP = 63630058722  # 2016-05-09 17:18:42 in America/Los_Angeles, 2016-05-10 00:18:42 UTC


@pytest.mark.parametrize(
    ("content_type", "extension"),
    [
        ("audio/mp3", "mp3"),
        ("audio/mpeg", "mp3"),
        ("Audio/MPEG; codecs=mp3", "mp3"),
        ("audio/wav", "wav"),
        ("audio/x-wav", "wav"),
        ("audio/x-wave", "wav"),
        ("audio/ogg", "oga"),
        ("audio/mp4", "mp4"),
        ("audio/webm", ""),
        ("application/octet-stream", ""),
        ("", ""),
    ],
)
def test_extension_for_content_type(content_type: str, extension: str) -> None:
    assert media.extension_for(content_type) == extension


@pytest.mark.parametrize(
    ("extension", "content_type"),
    [
        ("mp3", "audio/mpeg"),
        ("wav", "audio/x-wav"),
        ("mp4", "audio/mp4"),
        ("MP3", "audio/mpeg"),
        ("oga", "audio/mpeg"),
        ("", "audio/mpeg"),
    ],
)
def test_content_type_for_extension(extension: str, content_type: str) -> None:
    assert media.content_type_for_extension(extension) == content_type


@pytest.mark.parametrize(
    ("filename", "content_type", "expected"),
    [
        (None, "audio/mpeg", "uploaded_file_63630058722.mp3"),
        ("", "audio/x-wav", "uploaded_file_63630058722.wav"),
        (None, "application/octet-stream", "uploaded_file_63630058722."),
        ("my voice\tmail.wav", "audio/mpeg", "myvoicemail.wav"),
        ("voice", "audio/ogg", "voice.oga"),
        ("voice", "text/plain", "voice."),
        ("voice.", "audio/mpeg", "voice."),
        ("C:\\Users\\me\\voice.mp3", "audio/mpeg", "voice.mp3"),
        ("../../etc/passwd", "audio/mpeg", "passwd.mp3"),
        ("__design.mp3", "audio/mpeg", "design.mp3"),
        ("dir/", "audio/mpeg", "uploaded_file_63630058722.mp3"),
        ("  _  ", "audio/mp4", "uploaded_file_63630058722.mp4"),
    ],
)
def test_attachment_name(filename: str | None, content_type: str, expected: str) -> None:
    assert media.attachment_name(filename, content_type, LA_TIMESTAMP) == expected


def whole(length: int, content_range: str | None) -> RangeAnswer:
    return RangeAnswer(HTTPStatus.OK, 0, length - 1, content_range)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # absent: whole body, no Content-Range
        (None, whole(7, None)),
        # bytes=S- with S < L
        ("bytes=0-", whole(7, "bytes 0-6/7")),
        ("bytes=3-", RangeAnswer(HTTPStatus.PARTIAL_CONTENT, 3, 6, "bytes 3-6/7")),
        ("bytes=6-", RangeAnswer(HTTPStatus.PARTIAL_CONTENT, 6, 6, "bytes 6-6/7")),
        # bytes=S-E with S <= E < L
        ("bytes=0-0", RangeAnswer(HTTPStatus.PARTIAL_CONTENT, 0, 0, "bytes 0-0/7")),
        ("bytes=2-4", RangeAnswer(HTTPStatus.PARTIAL_CONTENT, 2, 4, "bytes 2-4/7")),
        ("Bytes = 2 - 4", RangeAnswer(HTTPStatus.PARTIAL_CONTENT, 2, 4, "bytes 2-4/7")),
        ("bytes=0-6", whole(7, "bytes 0-6/7")),
        # bytes=S-E with E >= L
        ("bytes=0-9", whole(7, "bytes 0-6/7")),
        ("bytes=5-9", whole(7, "bytes 0-6/7")),
        ("bytes=8-9", whole(7, "bytes 0-6/7")),
        # malformed, suffix, multiple, empty
        ("bytes", whole(7, "bytes 0-6/7")),
        ("bytes=", whole(7, "bytes 0-6/7")),
        ("bytes=4-2", whole(7, "bytes 0-6/7")),
        ("bytes=-3", whole(7, "bytes 0-6/7")),
        ("bytes=0-1,3-4", whole(7, "bytes 0-6/7")),
        ("items=0-1", whole(7, "bytes 0-6/7")),
        ("bytes=a-b", whole(7, "bytes 0-6/7")),
        ("", whole(7, "bytes 0-6/7")),
    ],
)
def test_range_table(header: str | None, expected: RangeAnswer) -> None:
    assert media.answer_range(header, 7) == expected


@pytest.mark.parametrize("header", ["bytes=7-", "bytes=100-", "bytes=" + "9" * 40 + "-"])
def test_open_range_at_or_past_the_end_is_416(header: str) -> None:
    with pytest.raises(errors.ApiError) as caught:
        media.answer_range(header, 7)
    assert caught.value.status == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
    assert caught.value.message == "range_not_satisfiable"
    assert caught.value.headers == {"Content-Range": "bytes */7"}


def test_range_answer_lengths() -> None:
    answer = media.answer_range("bytes=2-4", 7)
    assert answer.length == 3
    assert answer.byte_range == media.ByteRange(2, 4)
    assert answer.byte_range.length == 3
    assert media.answer_range(None, 7).length == 7


def test_range_on_an_empty_file() -> None:
    assert media.answer_range(None, 0) == RangeAnswer(HTTPStatus.OK, 0, -1, None)
    assert media.answer_range(None, 0).length == 0
    # No `first-last` exists for 0 bytes, so no Content-Range even though a Range came.
    assert media.answer_range("bytes=0-0", 0) == RangeAnswer(HTTPStatus.OK, 0, -1, None)
    assert media.answer_range("bytes=-5", 0) == RangeAnswer(HTTPStatus.OK, 0, -1, None)
    with pytest.raises(errors.ApiError):
        media.answer_range("bytes=0-", 0)


def test_download_filename_uses_the_box_time_zone() -> None:
    name = media.download_filename("1001", LA_TIMESTAMP, "America/Los_Angeles", "a1b2.mp3")
    assert name == "1001_2016-05-09_17-18-42.mp3"


@pytest.mark.parametrize("zone", [None, "", "Mars/Olympus_Mons", "../../etc/passwd", "/etc"])
def test_download_filename_falls_back_to_utc(zone: str | None) -> None:
    assert media.download_filename("1001", LA_TIMESTAMP, zone, "x.wav") == (
        "1001_2016-05-10_00-18-42.wav"
    )


@pytest.mark.parametrize(
    ("cid", "attachment", "expected"),
    [
        (None, "x.mp3", "unknown_2016-05-10_00-18-42.mp3"),
        ("", "x.mp3", "unknown_2016-05-10_00-18-42.mp3"),
        ('"/\\\r\n', "x.mp3", "unknown_2016-05-10_00-18-42.mp3"),
        ('+1 "555"/01\\\x7f', "x.mp3", "+1 55501_2016-05-10_00-18-42.mp3"),
        ("1001", "noextension", "1001_2016-05-10_00-18-42"),
        ("1001", "trailing.", "1001_2016-05-10_00-18-42"),
        ("1001", "two.dots.WAV", "1001_2016-05-10_00-18-42.WAV"),
    ],
)
def test_download_filename_parts(cid: str | None, attachment: str, expected: str) -> None:
    assert media.download_filename(cid, LA_TIMESTAMP, "UTC", attachment) == expected


@pytest.mark.parametrize("timestamp", [None, 0, 10**15])
def test_download_filename_without_a_usable_timestamp_uses_now(timestamp: int | None) -> None:
    before = datetime.now(UTC)
    name = media.download_filename("1001", timestamp, "UTC", "x.mp3")
    after = datetime.now(UTC)
    assert re.fullmatch(r"1001_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\.mp3", name)
    assert name[5:15] in {before.strftime("%Y-%m-%d"), after.strftime("%Y-%m-%d")}


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        (
            "1001_2016-05-09_17-18-42.mp3",
            'attachment; filename="1001_2016-05-09_17-18-42.mp3"',
        ),
        ("req.zip", 'attachment; filename="req.zip"'),
        (
            "Ünïcødé 1.mp3",
            'attachment; filename="Unic_de 1.mp3"; '
            "filename*=UTF-8''%C3%9Cn%C3%AFc%C3%B8d%C3%A9%201.mp3",
        ),
        ("日本.mp3", "attachment; filename=\"__.mp3\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.mp3"),
        ('a"b\\c.mp3', "attachment; filename=\"a_b_c.mp3\"; filename*=UTF-8''a%22b_c.mp3"),
        # Fullwidth look-alikes are folded before the separators are taken out.
        ("\uff0e\uff0e\uff0fx.mp3", 'attachment; filename=".._x.mp3"'),
        ("a\r\nSet-Cookie: x.mp3", 'attachment; filename="aSet-Cookie: x.mp3"'),
    ],
)
def test_content_disposition(filename: str, expected: str) -> None:
    assert media.content_disposition(filename) == expected


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["a.mp3", "a.mp3"], ["a.mp3", "a_2.mp3"]),
        (["a.mp3", "b.mp3", "a.mp3", "a.mp3"], ["a.mp3", "b.mp3", "a_2.mp3", "a_3.mp3"]),
        (["a.mp3", "a.wav", "a.mp3"], ["a.mp3", "a.wav", "a_2.mp3"]),
        (["noext", "noext"], ["noext", "noext_2"]),
        (["x.tar.gz", "x.tar.gz"], ["x.tar.gz", "x.tar_2.gz"]),
        (["A.mp3", "a.mp3"], ["A.mp3", "a_2.mp3"]),
        (["a.mp3", "a.mp3", "a_2.mp3"], ["a.mp3", "a_2.mp3", "a_2_2.mp3"]),
        ([], []),
    ],
)
def test_unique_names(names: list[str], expected: list[str]) -> None:
    assert media.unique_names(names) == expected


MODIFIED = datetime(2016, 5, 9, 17, 18, 42)


def build_zip(entries: list[tuple[str, bytes]], chunk_bytes: int = 5) -> bytes:
    stream = media.ZipStream()
    out = bytearray()
    for name, data in entries:
        out += stream.start_entry(name, len(data), MODIFIED)
        for index in range(0, len(data), chunk_bytes):
            out += stream.write(data[index : index + chunk_bytes])
        out += stream.end_entry()
    out += stream.finish()
    return bytes(out)


def assert_readable(archive: bytes, entries: list[tuple[str, bytes]], tmp_path: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        assert opened.testzip() is None
        infos = opened.infolist()
        assert [info.filename for info in infos] == [name for name, _ in entries]
        for info, (_, data) in zip(infos, entries, strict=True):
            assert opened.read(info) == data
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.file_size == info.compress_size == len(data)
            assert info.date_time == (2016, 5, 9, 17, 18, 42)
            assert info.flag_bits & 0x08
    unzip = shutil.which("unzip")
    if unzip is None:
        return
    path = tmp_path / "archive.zip"
    path.write_bytes(archive)
    checked = subprocess.run([unzip, "-t", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No errors detected" in checked.stdout
    assert checked.stderr == ""


def three_entries() -> list[tuple[str, bytes]]:
    names = media.unique_names(["1001_2016-05-09_17-18-42.mp3"] * 3)
    payloads = [bytes(range(256)) * 40, b"", b"ID3" + b"\xff" * 1001]
    return list(zip(names, payloads, strict=True))


def test_zip_round_trip_is_byte_exact(tmp_path: Path) -> None:
    entries = three_entries()
    assert [name for name, _ in entries] == [
        "1001_2016-05-09_17-18-42.mp3",
        "1001_2016-05-09_17-18-42_2.mp3",
        "1001_2016-05-09_17-18-42_3.mp3",
    ]
    archive = build_zip(entries)
    assert b"PK\x06\x06" not in archive  # small archives need no ZIP64
    assert_readable(archive, entries, tmp_path)


def test_zip_of_only_an_empty_entry_and_of_nothing(tmp_path: Path) -> None:
    assert_readable(build_zip([("empty.mp3", b"")]), [("empty.mp3", b"")], tmp_path)
    with zipfile.ZipFile(io.BytesIO(build_zip([]))) as opened:
        assert opened.infolist() == []


def test_zip_entry_names_in_utf8(tmp_path: Path) -> None:
    entries = [("Ünïcødé_2016-05-09_17-18-42.mp3", b"audio")]
    archive = build_zip(entries)
    assert_readable(archive, entries, tmp_path)
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        assert opened.infolist()[0].flag_bits & 0x800


def test_zip64_records_when_sizes_and_offsets_pass_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lowering the limits exercises exactly the records a > 4 GiB archive gets.
    monkeypatch.setattr(media, "ZIP64_LIMIT_BYTES", 1000)
    monkeypatch.setattr(media, "ZIP64_COUNT_LIMIT", 2)
    entries = three_entries()
    archive = build_zip(entries, chunk_bytes=333)
    assert b"PK\x06\x06" in archive  # ZIP64 end of central directory
    assert b"PK\x06\x07" in archive  # and its locator
    assert_readable(archive, entries, tmp_path)
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        first, _, third = opened.infolist()
        assert first.extract_version == third.extract_version == 45
        assert third.header_offset > 1000


def test_zip_rejects_a_size_other_than_announced() -> None:
    stream = media.ZipStream()
    stream.start_entry("a.mp3", 4, MODIFIED)
    stream.write(b"abc")
    with pytest.raises(ValueError, match="got 3 bytes, announced 4"):
        stream.end_entry()
    with pytest.raises(ValueError, match="more than its announced 4 bytes"):
        stream.write(b"de")


def test_zip_refuses_calls_out_of_order() -> None:
    stream = media.ZipStream()
    with pytest.raises(RuntimeError):
        stream.write(b"x")
    with pytest.raises(RuntimeError):
        stream.end_entry()
    stream.start_entry("a", 0, MODIFIED)
    with pytest.raises(RuntimeError):
        stream.start_entry("b", 0, MODIFIED)
    with pytest.raises(RuntimeError):
        stream.finish()
    stream.end_entry()
    stream.finish()
    with pytest.raises(RuntimeError):
        stream.start_entry("c", 0, MODIFIED)


def test_zip_dos_times_are_clamped(tmp_path: Path) -> None:
    stream = media.ZipStream()
    archive = (
        stream.start_entry("old", 0, datetime(1970, 1, 1))
        + stream.end_entry()
        + stream.start_entry("new", 0, datetime(2200, 1, 1))
        + stream.end_entry()
        + stream.finish()
    )
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        old, new = opened.infolist()
        assert old.date_time == (1980, 1, 1, 0, 0, 0)
        assert new.date_time == (2107, 12, 31, 23, 59, 58)


def test_download_filename_folds_fullwidth_separators_before_removing_them() -> None:
    name = media.download_filename("\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fetc", 63_900_000_000, "UTC",
                             "a.mp3")
    assert name == "etc_2024-11-28_08-00-00.mp3"
    assert "/" not in media.content_disposition(name)


@pytest.mark.parametrize("cid", ["9" * 2000, "\u00e9" * 2000, "\U0001f4de" * 700])
def test_generated_names_fit_in_255_bytes(cid: str) -> None:
    name = media.download_filename(cid, 63_900_000_000, "UTC", "a.mp3")
    assert len(name.encode()) <= 255
    assert name.endswith("_2024-11-28_08-00-00.mp3")
    name.encode().decode()  # still whole characters
