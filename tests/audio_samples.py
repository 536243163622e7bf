"""Real audio for the tests: a sine tone written by the standard library's `wave` module, and the
same tone in the other formats, encoded with PyAV (the library the service uses).

Each sample is made once per test session. `decoded` reads a file back the way a player would
(PyAV again) and says what it holds.
"""

from __future__ import annotations

import functools
import io
import math
import struct
import wave
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

RATE_HZ = 8000
TONE_HZ = 440
SECONDS = 3.0


@functools.cache
def wav(seconds: float = SECONDS, rate: int = RATE_HZ, channels: int = 1) -> bytes:
    """A sine tone as 16-bit PCM WAV, written by `wave`."""
    one_second = b"".join(
        struct.pack("<h", int(12_000 * math.sin(2 * math.pi * TONE_HZ * n / rate))) * channels
        for n in range(rate))
    whole, part = divmod(int(seconds * rate), rate)
    frames = one_second * whole + one_second[: part * 2 * channels]
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(frames)
    return out.getvalue()


class _Unseekable(io.RawIOBase):
    """Where a browser's MediaRecorder writes: forward only, so no duration in the header."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)


# muxer, encoder, sample rate (None: the source's), bit rate, written forward only
_ENCODINGS: dict[str, tuple[str, str, int | None, int | None, bool]] = {
    "mp3": ("mp3", "libmp3lame", None, 32_000, False),
    "mp3-cbr-streamed": ("mp3", "libmp3lame", 24_000, 32_000, True),
    "ogg": ("ogg", "libopus", None, 24_000, False),
    "m4a": ("ipod", "aac", None, 32_000, False),
    "flac": ("flac", "flac", None, None, False),
    "webm": ("webm", "libopus", None, 24_000, True),
    "aiff": ("aiff", "pcm_s16be", None, None, False),
    "aac": ("adts", "aac", None, 32_000, False),
}
FORMATS = ("wav", *_ENCODINGS)


@functools.cache
def sample(kind: str, seconds: float = SECONDS) -> bytes:
    """The tone of `wav(seconds)` in format `kind` (a key of FORMATS)."""
    if kind == "wav":
        return wav(seconds)
    muxer, codec, rate, bit_rate, forward_only = _ENCODINGS[kind]
    sink: Any = _Unseekable() if forward_only else io.BytesIO()
    with av.open(io.BytesIO(wav(seconds)), "r") as source, av.open(sink, "w", format=muxer) as out:
        audio = source.streams.audio[0]
        target = out.add_stream(codec, rate=rate or audio.rate)
        assert isinstance(target, av.AudioStream)
        target.layout = "mono"
        if bit_rate:
            target.bit_rate = bit_rate
        resampler = av.AudioResampler(format=target.format, layout="mono",
                                      rate=rate or audio.rate)
        samples = 0
        for frame in source.decode(audio):
            for converted in resampler.resample(frame):
                converted.pts = samples
                converted.time_base = Fraction(1, converted.sample_rate)
                samples += converted.samples
                for packet in target.encode(converted):
                    out.mux(packet)
        for packet in target.encode(None):
            out.mux(packet)
    if forward_only:
        return b"".join(sink.parts)
    data: bytes = sink.getvalue()
    return data


@dataclass(frozen=True)
class Decoded:
    """What a player finds in a file: container, codec, rate, channels, seconds of sound."""

    container: str
    codec: str
    rate: int
    channels: int
    seconds: float


def decoded(data: bytes) -> Decoded:
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.audio[0]
        samples, rate = 0, 0
        for frame in container.decode(stream):
            samples += frame.samples
            rate = frame.sample_rate
        return Decoded(container.format.name, stream.codec_context.name, rate,
                       stream.codec_context.channels, samples / rate if rate else 0.0)
