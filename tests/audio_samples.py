"""Real audio for the tests: a sine tone written by the standard library's `wave` module, and the
same tone in the other formats, encoded with PyAV (the library the service uses). The benchmark
makes its audio the same way (bench/audio.py).

Each sample is made once per test session. `decoded` reads a file back the way a player would
(PyAV again) and says what it holds.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import av

from bench.audio import encode, tone_wav

RATE_HZ = 8000
SECONDS = 3.0


@functools.cache
def wav(seconds: float = SECONDS, rate: int = RATE_HZ, channels: int = 1) -> bytes:
    """A 440 Hz sine tone as 16-bit PCM WAV, written by `wave`."""
    return tone_wav(seconds, rate, channels)


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
    return encode(wav(seconds), muxer, codec, rate=rate, bit_rate=bit_rate,
                  forward_only=forward_only)


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
