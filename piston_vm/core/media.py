"""Audio helpers: types and extensions, file names, Range answers and a streaming ZIP writer."""

from __future__ import annotations

import re
import struct
import unicodedata
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from http import HTTPStatus
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from piston_vm.core import errors, gregorian

# docs/storage.md 5.4: the extension an attachment name gets from its upload's content type.
_EXTENSIONS = {
    "audio/mp3": "mp3",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/x-wave": "wav",
    "audio/ogg": "oga",
    "audio/mp4": "mp4",
}
_CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/x-wav", "mp4": "audio/mp4"}
DEFAULT_AUDIO_CONTENT_TYPE = "audio/mpeg"

_WHITESPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Characters a caller id must not bring into a quoted header value or a ZIP entry path.
# Names of downloads and ZIP entries: what a file system takes (bytes of UTF-8).
MAX_FILENAME_BYTES = 255
MAX_EXTENSION_BYTES = 16
_FILENAME_UNSAFE = re.compile(r'["\\/\x00-\x1f\x7f-\x9f]')
# RFC 5987 attr-char, minus the alphanumerics `quote` keeps anyway.
_ATTR_CHAR_PUNCTUATION = "!#$&+-.^_`|~"


def _mime(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def extension_for(content_type: str) -> str:
    """The attachment extension (no dot) for an upload's content type; "" when unknown."""
    return _EXTENSIONS.get(_mime(content_type), "")


def with_extension(name: str, extension: str) -> str:
    """`name` with its last extension replaced by `extension` (added when it has none)."""
    stem, _ = _split_extension(name)
    return f"{stem.rstrip('.')}.{extension}" if extension else name


def content_type_for_extension(ext: str) -> str:
    return _CONTENT_TYPES.get(ext.lstrip(".").lower(), DEFAULT_AUDIO_CONTENT_TYPE)


def attachment_name(filename: str | None, content_type: str, now_gregorian_s: int) -> str:
    """The inline attachment's name (docs/storage.md 5.4)."""
    name = _clean_attachment_name(filename or "")
    if not name:
        name = f"uploaded_file_{now_gregorian_s}"
    if "." not in name:
        # An unknown type gives an empty extension, so the name ends with "." as the spec says.
        name = f"{name}.{extension_for(content_type)}"
    return name


def _clean_attachment_name(filename: str) -> str:
    name = _CONTROL.sub("", _WHITESPACE.sub("", filename))
    # Browsers used to send the client's full path ("C:\\voice\\a.mp3"); the file name is its
    # last component. Dropping the directories also removes every "/" and "\\", which CouchDB
    # would otherwise read as path separators in the attachment URL.
    name = re.split(r"[/\\]", name)[-1]
    # CouchDB reserves names starting with "_" (it answers 400 to `_attachments/_x`).
    return name.lstrip("_")


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True, slots=True)
class RangeAnswer:
    """How to answer a raw download: status, the inclusive byte span, and its Content-Range."""

    status: HTTPStatus
    start: int
    end: int  # inclusive; -1 for an empty file
    content_range: str | None

    @property
    def byte_range(self) -> ByteRange:
        return ByteRange(self.start, self.end)

    @property
    def length(self) -> int:
        return self.end - self.start + 1


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d+)\s*-\s*(\d*)\s*$", re.IGNORECASE)
# Longer digit strings cannot be a position in any file we store; cap them instead of letting
# int() work on (or refuse) a huge number.
_MAX_RANGE_DIGITS = 18


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return 10**_MAX_RANGE_DIGITS if len(digits) > _MAX_RANGE_DIGITS else int(digits)


def answer_range(header: str | None, length: int) -> RangeAnswer:
    """The Range table of docs/api.md 9.16 for a file of `length` bytes.

    An empty file (length 0) has no valid `first-last` span, so its 200 answers carry no
    Content-Range even when a Range header came; `bytes=S-` on it is 416 like any S >= L.
    """

    def whole() -> RangeAnswer:
        content_range = None
        if header is not None and length > 0:
            content_range = f"bytes 0-{length - 1}/{length}"
        return RangeAnswer(HTTPStatus.OK, 0, length - 1, content_range)

    if header is None:
        return whole()
    match = _RANGE.match(header)
    if match is None:  # malformed, suffix (`bytes=-N`), several ranges, empty
        return whole()
    start = _position(match.group(1))
    if match.group(2) == "":
        if start >= length:
            raise errors.range_not_satisfiable(length)
        end = length - 1
    else:
        end = _position(match.group(2))
        if start > end or end >= length:
            return whole()
    if start == 0 and end == length - 1:
        return whole()
    return RangeAnswer(HTTPStatus.PARTIAL_CONTENT, start, end, f"bytes {start}-{end}/{length}")


def _zone(name: str | None) -> tzinfo:
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # Unknown, malformed ("../x") or unreadable keys: UTC, as docs/decisions.md D-10 says for
        # unknown zones.
        return UTC


def _local_time(timestamp_gregorian_s: int | None, zone: tzinfo) -> datetime:
    if timestamp_gregorian_s is not None:
        try:
            moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
                seconds=gregorian.to_unix(timestamp_gregorian_s)
            )
            return moment.astimezone(zone)
        except OverflowError:
            pass  # outside years 1..9999: treated like a missing timestamp
    return datetime.now(UTC).astimezone(zone)


def download_filename(
    caller_id_number: str | None,
    timestamp_gregorian_s: int | None,
    timezone: str | None,
    attachment_name: str,
) -> str:
    """`<cid>_<YYYY-MM-DD>_<HH-MM-SS><.ext>` (docs/decisions.md D-10), also the ZIP entry name
    (9.12).

    A missing (or unrepresentable) timestamp uses the current time: the name stays well-formed.
    """
    cid = _safe_name_part(caller_id_number or "") or "unknown"
    moment = _local_time(timestamp_gregorian_s, _zone(timezone))
    stamp = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}_"
        f"{moment.hour:02d}-{moment.minute:02d}-{moment.second:02d}"
    )
    _, dot, ext = attachment_name.rpartition(".")
    # "a." has an empty extension: no dot either.
    suffix = _cap_utf8(_safe_name_part(ext), MAX_EXTENSION_BYTES) if dot else ""
    tail = f"_{stamp}.{suffix}" if suffix else f"_{stamp}"
    # File systems (and unzip) refuse names over 255 bytes: the caller id gives way.
    return _cap_utf8(cid, MAX_FILENAME_BYTES - len(tail.encode())) + tail


def _safe_name_part(value: str) -> str:
    """NFKC first: fullwidth "．．／" must become "../" *before* the unsafe characters go, or an
    ASCII fallback would bring them back."""
    return _FILENAME_UNSAFE.sub("", unicodedata.normalize("NFKC", value)).strip(".")


def _cap_utf8(value: str, max_bytes: int) -> str:
    encoded = value.encode()
    if len(encoded) <= max_bytes:
        return value
    return encoded[: max(max_bytes, 0)].decode("utf-8", "ignore")


def _ascii_fallback(name: str) -> str:
    chars = []
    for char in name:
        if char.isascii():
            chars.append(char)
            continue
        decomposed = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
        chars.append(decomposed or "_")
    return "".join(chars)


def content_disposition(filename: str) -> str:
    """`attachment; filename="<name>"`, plus RFC 5987 `filename*` when plain ASCII can't say it."""
    # CR/LF would split the header; NFKC keeps look-alike separators from reappearing in the
    # ASCII fallback below.
    name = re.sub(r"[/\\]", "_", _CONTROL.sub("", unicodedata.normalize("NFKC", filename)))
    fallback = re.sub(r'["\\/]', "_", _ascii_fallback(name))
    if fallback == name:
        return f'attachment; filename="{name}"'
    encoded = quote(name, safe=_ATTR_CHAR_PUNCTUATION)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def unique_names(names: list[str]) -> list[str]:
    """docs/decisions.md P-14: a name already used gets `_2`, `_3`, … before its extension.

    Names compare case-insensitively: Windows and macOS extract `A.mp3` over `a.mp3`.
    """
    used: set[str] = set()
    result: list[str] = []
    for name in names:
        candidate = name
        stem, ext = _split_extension(name)
        counter = 2
        while candidate.casefold() in used:
            candidate = f"{stem}_{counter}{ext}"
            counter += 1
        used.add(candidate.casefold())
        result.append(candidate)
    return result


def _split_extension(name: str) -> tuple[str, str]:
    index = name.rfind(".")
    if index <= 0:  # no dot, or a leading one (".mp3" is all stem)
        return name, ""
    return name[:index], name[index:]


# ---- streaming ZIP (APPNOTE 6.3.x): stored entries, data descriptors, ZIP64 when needed ----

# A 32-bit field holding 0xFFFFFFFF means "see the ZIP64 extra field", so ZIP64 starts there.
# The limits are module constants so tests can lower them to exercise the ZIP64 records.
ZIP64_LIMIT_BYTES = 0xFFFF_FFFF
ZIP64_COUNT_LIMIT = 0xFFFF
_MARKER_32 = 0xFFFF_FFFF
_MARKER_16 = 0xFFFF

_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
_DATA_DESCRIPTOR_32 = struct.Struct("<IIII")
_DATA_DESCRIPTOR_64 = struct.Struct("<IIQQ")
_CENTRAL_HEADER = struct.Struct("<IHHHHHHIIIHHHHHII")
_ZIP64_END = struct.Struct("<IQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<IIQI")
_END = struct.Struct("<IHHHHIIH")

_SIG_LOCAL = 0x04034B50
_SIG_DESCRIPTOR = 0x08074B50
_SIG_CENTRAL = 0x02014B50
_SIG_ZIP64_END = 0x06064B50
_SIG_ZIP64_LOCATOR = 0x07064B50
_SIG_END = 0x06054B50

_FLAG_DATA_DESCRIPTOR = 0x0008  # CRC and sizes follow the data: we stream before knowing the CRC
_FLAG_UTF8 = 0x0800
_METHOD_STORED = 0
_VERSION_DEFAULT = 20
_VERSION_ZIP64 = 45
_MADE_BY_UNIX = 3 << 8
_UNIX_FILE_ATTRIBUTES = 0o100644 << 16  # regular file, rw-r--r--
_ZIP64_EXTRA_ID = 0x0001


def _dos_time(modified: datetime) -> tuple[int, int]:
    """(time, date) in MS-DOS format from the wall-clock fields, clamped to 1980..2107."""
    if modified.year < 1980:
        return 0, (1 << 5) | 1
    if modified.year > 2107:
        return (23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31
    time = (modified.hour << 11) | (modified.minute << 5) | (modified.second // 2)
    date = ((modified.year - 1980) << 9) | (modified.month << 5) | modified.day
    return time, date


def _zip64_extra(values: list[int]) -> bytes:
    return struct.pack(f"<HH{len(values)}Q", _ZIP64_EXTRA_ID, 8 * len(values), *values)


@dataclass(slots=True)
class _Entry:
    name: bytes
    flags: int
    dos_time: int
    dos_date: int
    offset: int
    size: int
    zip64: bool  # sizes as 8 bytes in the local header's extra and the data descriptor
    crc: int = 0
    counted: int = 0
    # False while the entry's size is still unknown (`size` is then the most it may reach).
    sized: bool = True


def _local_header(entry: _Entry) -> bytes:
    # With the data-descriptor flag, CRC and sizes are zero here (APPNOTE 4.4.4).
    extra = _zip64_extra([0, 0]) if entry.zip64 else b""
    sizes = _MARKER_32 if entry.zip64 else 0
    return (
        _LOCAL_HEADER.pack(
            _SIG_LOCAL,
            _VERSION_ZIP64 if entry.zip64 else _VERSION_DEFAULT,
            entry.flags,
            _METHOD_STORED,
            entry.dos_time,
            entry.dos_date,
            0,
            sizes,
            sizes,
            len(entry.name),
            len(extra),
        )
        + entry.name
        + extra
    )


def _data_descriptor(entry: _Entry) -> bytes:
    layout = _DATA_DESCRIPTOR_64 if entry.zip64 else _DATA_DESCRIPTOR_32
    return layout.pack(_SIG_DESCRIPTOR, entry.crc, entry.counted, entry.counted)


def _central_header(entry: _Entry) -> bytes:
    # Only the fields that overflow go to the ZIP64 extra, in APPNOTE order.
    wide: list[int] = []
    size32 = entry.size
    if entry.size >= ZIP64_LIMIT_BYTES:
        wide += [entry.size, entry.size]
        size32 = _MARKER_32
    offset32 = entry.offset
    if entry.offset >= ZIP64_LIMIT_BYTES:
        wide.append(entry.offset)
        offset32 = _MARKER_32
    extra = _zip64_extra(wide) if wide else b""
    version = _VERSION_ZIP64 if wide or entry.zip64 else _VERSION_DEFAULT
    return (
        _CENTRAL_HEADER.pack(
            _SIG_CENTRAL,
            _MADE_BY_UNIX | version,
            version,
            entry.flags,
            _METHOD_STORED,
            entry.dos_time,
            entry.dos_date,
            entry.crc,
            size32,
            size32,
            len(entry.name),
            len(extra),
            0,
            0,
            0,
            _UNIX_FILE_ATTRIBUTES,
            offset32,
        )
        + entry.name
        + extra
    )


def _end_records(count: int, directory_offset: int, directory_size: int) -> bytes:
    """End of central directory, preceded by the ZIP64 end record and locator when needed."""
    records = b""
    zip64 = (
        count >= ZIP64_COUNT_LIMIT
        or directory_offset >= ZIP64_LIMIT_BYTES
        or directory_size >= ZIP64_LIMIT_BYTES
    )
    if zip64:
        zip64_end_offset = directory_offset + directory_size
        records += _ZIP64_END.pack(
            _SIG_ZIP64_END,
            _ZIP64_END.size - 12,  # the record's size excludes its signature and this field
            _MADE_BY_UNIX | _VERSION_ZIP64,
            _VERSION_ZIP64,
            0,
            0,
            count,
            count,
            directory_size,
            directory_offset,
        )
        records += _ZIP64_LOCATOR.pack(_SIG_ZIP64_LOCATOR, 0, zip64_end_offset, 1)
    count16 = _MARKER_16 if count >= ZIP64_COUNT_LIMIT else count
    return records + _END.pack(
        _SIG_END,
        0,
        0,
        count16,
        count16,
        _MARKER_32 if directory_size >= ZIP64_LIMIT_BYTES else directory_size,
        _MARKER_32 if directory_offset >= ZIP64_LIMIT_BYTES else directory_offset,
        0,
    )


@dataclass(slots=True)
class ZipStream:
    """Writes a ZIP of stored entries as bytes to send, holding no more than one chunk.

    Sizes are announced per entry so ZIP64 is chosen up front; the CRC is only known at the end,
    hence a data descriptor after every entry. Entry times are the wall-clock fields of
    `modified` as given (ZIP has no time zone).
    """

    _offset: int = 0
    _entries: list[_Entry] = field(default_factory=list)
    _current: _Entry | None = None
    _finished: bool = False

    def start_entry(self, name: str, size: int | None, modified: datetime) -> bytes:
        """Open an entry of `size` bytes; None when the size is known only at its end (a
        transcoded recording: docs/audio.md), which must then stay under 4 GiB."""
        if self._current is not None or self._finished:
            raise RuntimeError("ZipStream: an entry is open or the archive is finished")
        if size is not None and size < 0:
            raise ValueError(f"negative size for ZIP entry {name!r}")
        encoded = name.encode()
        dos_time, dos_date = _dos_time(modified)
        self._current = _Entry(
            name=encoded,
            flags=_FLAG_DATA_DESCRIPTOR | (0 if name.isascii() else _FLAG_UTF8),
            dos_time=dos_time,
            dos_date=dos_date,
            offset=self._offset,
            size=ZIP64_LIMIT_BYTES - 1 if size is None else size,
            zip64=size is not None and size >= ZIP64_LIMIT_BYTES,
            sized=size is not None,
        )
        return self._emit(_local_header(self._current))

    def write(self, chunk: bytes) -> bytes:
        entry = self._open_entry()
        if entry.counted + len(chunk) > entry.size:
            raise ValueError(
                f"ZIP entry {entry.name!r} got more than its announced {entry.size} bytes"
            )
        entry.crc = zlib.crc32(chunk, entry.crc)
        entry.counted += len(chunk)
        return self._emit(chunk)

    def end_entry(self) -> bytes:
        entry = self._open_entry()
        if not entry.sized:
            entry.size = entry.counted
        if entry.counted != entry.size:
            raise ValueError(
                f"ZIP entry {entry.name!r} got {entry.counted} bytes, announced {entry.size}"
            )
        self._entries.append(entry)
        self._current = None
        return self._emit(_data_descriptor(entry))

    def finish(self) -> bytes:
        if self._current is not None or self._finished:
            raise RuntimeError("ZipStream: an entry is open or the archive is finished")
        self._finished = True
        directory = b"".join(_central_header(entry) for entry in self._entries)
        trailer = directory + _end_records(len(self._entries), self._offset, len(directory))
        return self._emit(trailer)

    def _open_entry(self) -> _Entry:
        if self._current is None:
            raise RuntimeError("ZipStream: no entry is open")
        return self._current

    def _emit(self, data: bytes) -> bytes:
        self._offset += len(data)
        return data
