"""Audio formats: what the first bytes of a file are, and which format a download should take
(docs/audio.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from piston_vm.core import errors


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """A container format: the media type stored and served for it, the other spellings of
    that type, the attachment extension, and the FFmpeg demuxer that reads it."""

    name: str
    content_type: str
    aliases: frozenset[str]
    extension: str
    demuxer: str

    def is_type(self, mime: str) -> bool:
        return mime == self.content_type or mime in self.aliases


WAV = AudioFormat("wav", "audio/wav", frozenset({
    "audio/x-wav", "audio/wave", "audio/x-wave", "audio/vnd.wave", "audio/x-pn-wav"}),
    "wav", "wav")
MP3 = AudioFormat("mp3", "audio/mpeg", frozenset({
    "audio/mp3", "audio/mpeg3", "audio/x-mpeg", "audio/x-mp3", "audio/mpg", "audio/x-mpeg-3"}),
    "mp3", "mp3")
OGG = AudioFormat("ogg", "audio/ogg", frozenset({
    "audio/opus", "audio/vorbis", "audio/x-ogg", "application/ogg"}), "oga", "ogg")
MP4 = AudioFormat("mp4", "audio/mp4", frozenset({
    "audio/m4a", "audio/x-m4a", "video/mp4", "audio/x-mp4"}), "mp4", "mov")
FLAC = AudioFormat("flac", "audio/flac", frozenset({"audio/x-flac"}), "flac", "flac")
WEBM = AudioFormat("webm", "audio/webm", frozenset({"video/webm"}), "webm", "matroska")
MATROSKA = AudioFormat("matroska", "audio/x-matroska", frozenset({
    "video/x-matroska", "audio/matroska"}), "mka", "matroska")
AAC = AudioFormat("aac", "audio/aac", frozenset({"audio/x-aac", "audio/aacp"}), "aac", "aac")
AIFF = AudioFormat("aiff", "audio/aiff", frozenset({"audio/x-aiff"}), "aiff", "aiff")

KNOWN_FORMATS = (WAV, MP3, OGG, MP4, FLAC, WEBM, MATROSKA, AAC, AIFF)


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """A format downloads can be transcoded to: `?format=<keyword>`, the type it is served
    as, and the extension of the download's file name."""

    keyword: str
    container: AudioFormat

    @property
    def content_type(self) -> str:
        return self.container.content_type

    @property
    def extension(self) -> str:
        # The client asked for "m4a" or "ogg": its file name says so (not the stored .mp4/.oga).
        return self.keyword


# Tie order among outputs of equal preference (docs/audio.md, "Formats on request").
OUTPUTS = (OutputFormat("wav", WAV), OutputFormat("mp3", MP3), OutputFormat("ogg", OGG),
           OutputFormat("m4a", MP4))
_OUTPUT_BY_KEYWORD = {output.keyword: output for output in OUTPUTS}

# Enough for every header below; an MP3 frame is at most 2,881 bytes (MPEG-2.5, 160 kbps, 8 kHz).
SNIFF_BYTES = 64 * 1024


def mime_of(content_type: str) -> str:
    """`audio/ogg; codecs=opus` → `audio/ogg`."""
    return content_type.split(";", 1)[0].strip().lower()


def format_of_type(content_type: str) -> AudioFormat | None:
    """The known format a media type names, in any of its spellings; None for other types."""
    mime = mime_of(content_type)
    return next((f for f in KNOWN_FORMATS if f.is_type(mime)), None)


# -- sniffing -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sniffed:
    """What the first bytes are. `vbr_header`: an MP3 whose first frame carries a Xing, Info or
    VBRI header, so that its length is written down instead of estimated from the bit rate."""

    format: AudioFormat
    vbr_header: bool = False


_MPEG1_LAYER3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2_LAYER3_KBPS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
               8000, 7350)
_OGG_AUDIO_PACKETS = (b"OpusHead", b"\x01vorbis", b"Speex   ", b"\x7fFLAC")
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_EBML_DOCTYPE = b"\x42\x82"
# ID3v2 tags may be followed by zero padding their size does not count.
_MAX_ID3_PADDING_BYTES = 4096


def _mp3_frame_length(head: bytes, at: int) -> int | None:
    """The length of the MPEG-1/2/2.5 Layer III frame whose header starts at `at`, or None."""
    if at + 4 > len(head) or head[at] != 0xFF or head[at + 1] & 0xE0 != 0xE0:
        return None
    version = (head[at + 1] >> 3) & 3
    layer = (head[at + 1] >> 1) & 3
    bitrate_index = head[at + 2] >> 4
    rate_index = (head[at + 2] >> 2) & 3
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    padding = (head[at + 2] >> 1) & 1
    rate = _MPEG_RATES[version][rate_index]
    if version == 3:
        return 144_000 * _MPEG1_LAYER3_KBPS[bitrate_index] // rate + padding
    return 72_000 * _MPEG2_LAYER3_KBPS[bitrate_index] // rate + padding


def _adts_frame_length(head: bytes, at: int) -> int | None:
    if at + 7 > len(head) or head[at] != 0xFF or head[at + 1] & 0xF6 != 0xF0:
        return None
    if (head[at + 2] >> 2) & 0xF >= len(_ADTS_RATES):
        return None
    length = ((head[at + 3] & 3) << 11) | (head[at + 4] << 3) | (head[at + 5] >> 5)
    return length if length >= 7 else None


def _two_frames(head: bytes, at: int, frame_length: int | None, total: int) -> bool:
    """A frame at `at` followed by another (or by the end of the file): one sync word alone
    appears by chance in about one random file in 2,000."""
    if frame_length is None:
        return False
    following = at + frame_length
    if following == total:
        return True
    if following + 4 > len(head):
        return following < total
    return head[following] == 0xFF and head[following + 1] & 0xE0 == 0xE0


def _after_id3(head: bytes) -> int | None:
    """Where the audio starts after an ID3v2 tag, or None without one."""
    if len(head) < 10 or head[:3] != b"ID3" or head[3] not in (2, 3, 4) or head[4] == 0xFF:
        return None
    if any(b >= 0x80 for b in head[6:10]):
        return None
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    footer = 10 if head[5] & 0x10 else 0
    start = 10 + size + footer
    limit = min(len(head), start + _MAX_ID3_PADDING_BYTES)
    while start < limit and head[start] == 0:
        start += 1
    return start


def _vbr_header(head: bytes, at: int, frame_length: int) -> bool:
    frame = head[at : at + frame_length]
    return b"Xing" in frame[:64] or b"Info" in frame[:64] or frame[36:40] == b"VBRI"


def _ogg_audio(head: bytes) -> bool:
    if len(head) < 28 or head[4] != 0:
        return False
    segments = head[26]
    packet = head[27 + segments : 27 + segments + 8]
    return any(packet.startswith(magic) for magic in _OGG_AUDIO_PACKETS)


def _ebml_doctype(head: bytes) -> bytes | None:
    index = head.find(_EBML_DOCTYPE, 4, 64)
    if index < 0 or index + 3 > len(head):
        return None
    size_byte = head[index + 2]
    if not size_byte & 0x80:  # only one-byte sizes: every real DocType is a short word
        return None
    size = size_byte & 0x7F
    return head[index + 3 : index + 3 + size]


def sniff(head: bytes, total_bytes: int | None = None) -> Sniffed | None:
    """The known audio format `head` (a file's first SNIFF_BYTES or all of it) begins with.

    `total_bytes` is the file's size, when known: a file of one MP3 or AAC frame ends where a
    second frame would start.
    """
    total = len(head) if total_bytes is None else total_bytes
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return Sniffed(WAV)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return Sniffed(AIFF)
    if head[:4] == b"OggS":
        return Sniffed(OGG) if _ogg_audio(head) else None
    if head[4:8] == b"ftyp":
        return Sniffed(MP4)
    if head[:4] == _EBML_MAGIC:
        doctype = _ebml_doctype(head)
        if doctype == b"webm":
            return Sniffed(WEBM)
        return Sniffed(MATROSKA) if doctype == b"matroska" else None
    start = _after_id3(head)
    tagged = start is not None
    at = start or 0
    if head[at : at + 4] == b"fLaC":
        return Sniffed(FLAC)
    mp3_length = _mp3_frame_length(head, at)
    if _two_frames(head, at, mp3_length, total):
        assert mp3_length is not None
        return Sniffed(MP3, _vbr_header(head, at, mp3_length))
    adts_length = _adts_frame_length(head, at)
    if _two_frames(head, at, adts_length, total):
        return Sniffed(AAC)
    if tagged and at >= len(head):
        # A tag larger than the sniffed bytes (cover art): ID3v2 is MP3's.
        return Sniffed(MP3)
    return None


# -- negotiation --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Range:
    """One `Accept` element: `type/subtype` with its q-value and its place in the header."""

    type: str
    subtype: str
    q: float
    position: int

    def specificity(self, mime: str, known: AudioFormat | None) -> int:
        """3 for the type itself (any spelling), 2 for `type/*`, 1 for `*/*`, 0 for no match."""
        if self.type == "*":
            return 1
        major, _, _ = mime.partition("/")
        if self.subtype == "*":
            return 2 if self.type == major else 0
        named = f"{self.type}/{self.subtype}"
        if named == mime or (known is not None and known.is_type(named)):
            return 3
        return 0


_TOKEN = re.compile(r"^[a-z0-9!#$&^_.+*-]+$")
# Accept headers worth reading are short; a longer one is cut (not refused) there.
MAX_ACCEPT_ELEMENTS = 64


def parse_accept(header: str) -> list[_Range]:
    """`Accept` as ranges; malformed elements are left out (RFC 9110 12.5.1)."""
    ranges = []
    for position, element in enumerate(header.split(",")[:MAX_ACCEPT_ELEMENTS]):
        media, *params = element.split(";")
        major, slash, minor = media.strip().lower().partition("/")
        if not slash or not _TOKEN.match(major) or not _TOKEN.match(minor):
            continue
        if major == "*" and minor != "*":
            continue
        q = 1.0
        for param in params:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = -1.0
        if q >= 0:
            ranges.append(_Range(major, minor, q, position))
    return ranges


def _preference(ranges: list[_Range], mime: str, known: AudioFormat | None) -> tuple[float, int]:
    """(q, position) of the most specific range that matches; q 0 when none does."""
    best: tuple[int, float, int] = (0, 0.0, len(ranges))
    for element in ranges:
        specificity = element.specificity(mime, known)
        if specificity > best[0]:
            best = (specificity, element.q, element.position)
    return best[1], best[2]


def _keyword(value: str) -> OutputFormat:
    output = _OUTPUT_BY_KEYWORD.get(value.strip().lower())
    if output is None:
        raise errors.not_acceptable(value, "cannot produce the requested audio format")
    return output


def choose_output(
    stored_type: str, format_value: str | None, accept: str | None
) -> OutputFormat | None:
    """The format to transcode a download to, or None to serve the stored bytes as they are.

    docs/audio.md, "Formats on request": `format` wins over `Accept`; an `Accept` that names
    no audio type (`*/*`, `audio/*`, `application/json`) keeps the stored bytes, and so does a
    stored type that is acceptable at a q no lower than any format we can produce (ties go to
    the stored type). 406 when nothing acceptable can be produced.
    """
    stored_mime = mime_of(stored_type)
    stored_format = format_of_type(stored_mime)
    if format_value is not None and format_value.strip():
        output = _keyword(format_value)
        return None if output.container == stored_format else output
    if not accept:
        return None
    ranges = parse_accept(accept)
    if not any(r.type == "audio" and r.subtype != "*" for r in ranges):
        return None
    stored_q, _ = _preference(ranges, stored_mime, stored_format)
    scored = []
    for order, output in enumerate(OUTPUTS):
        q, position = _preference(ranges, output.content_type, output.container)
        scored.append((q, -position, -order, output))
    best_q, _, _, best = max(scored, key=lambda row: row[:3])
    if stored_q > 0 and stored_q >= best_q:
        return None
    if best_q <= 0:
        raise errors.not_acceptable(accept[:200], "cannot produce an acceptable audio format")
    return None if best.container == stored_format else best
