"""What audio formats cost (docs/audio.md): section 7 of the benchmark.

Measured on a running `piston-vm serve` process, over HTTP like any client:

* transcode throughput, seconds of audio per second of the service's CPU (user + system, all
  threads), for WAV→MP3 and MP3→WAV of a 5-minute message;
* time to first byte of those transcoded downloads, and of the stored bytes for comparison;
* peak RSS growth of the service while it transcodes a 50 MB WAV (44.1 kHz stereo) to MP3;
* what looking at an upload (sniffing, measuring its duration) adds to a create: a 5-minute MP3
  against the same number of bytes that are no audio.

The audio is a sine tone written by `wave` and encoded with PyAV in this process, before the
clock starts.
"""

from __future__ import annotations

import io
import math
import statistics
import struct
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import aiohttp
import av

from bench import memory
from bench.http import check, fetch_json, multipart_body
from bench.procs import BenchError
from bench.stats import rate_summary

JsonObject = dict[str, Any]

# docs/audio.md: a transcode holds well under 1 MiB; the bound is 30 MB.
TRANSCODE_MEMORY_TARGET_MIB = 30.0
READ_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class AudioPlan:
    message_s: float  # the message transcoded for throughput and time to first byte
    rounds: int
    big_bytes: int  # the WAV transcoded for peak memory


FULL_AUDIO = AudioPlan(message_s=300.0, rounds=3, big_bytes=50_000_000)
SMOKE_AUDIO = AudioPlan(message_s=20.0, rounds=1, big_bytes=2_000_000)


def tone_wav(seconds: float, rate: int, channels: int) -> bytes:
    """A 440 Hz tone as 16-bit PCM WAV: one second computed, then repeated."""
    one_second = b"".join(
        struct.pack("<h", int(12_000 * math.sin(2 * math.pi * 440 * n / rate))) * channels
        for n in range(rate))
    whole, part = divmod(int(seconds * rate), rate)
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(one_second * whole + one_second[: part * 2 * channels])
    return out.getvalue()


class _ForwardOnly(io.RawIOBase):
    """Where a browser's MediaRecorder writes: forward only, so no duration in the header."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)


def encode(
    wav: bytes, muxer: str, codec: str, *, rate: int | None = None, bit_rate: int | None = None,
    forward_only: bool = False,
) -> bytes:
    """A mono WAV encoded with PyAV, timestamps counted in samples (as a recorder would)."""
    sink: _ForwardOnly | io.BytesIO = _ForwardOnly() if forward_only else io.BytesIO()
    with av.open(io.BytesIO(wav), "r") as source, av.open(sink, "w", format=muxer) as target:
        audio = source.streams.audio[0]
        out_rate = rate or audio.rate
        stream = target.add_stream(codec, rate=out_rate)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono"
        if bit_rate:
            stream.bit_rate = bit_rate
        resampler = av.AudioResampler(format=stream.format, layout="mono", rate=out_rate)
        samples = 0
        for frame in source.decode(audio):
            for converted in resampler.resample(frame):
                converted.pts = samples
                converted.time_base = Fraction(1, out_rate)
                samples += converted.samples
                for packet in stream.encode(converted):
                    target.mux(packet)
        for packet in stream.encode(None):
            target.mux(packet)
    return b"".join(sink.parts) if isinstance(sink, _ForwardOnly) else sink.getvalue()


def wav_to_mp3(data: bytes) -> bytes:
    """The WAV as a 32 kb/s MP3 with a Xing header, as a phone system would store it."""
    return encode(data, "mp3", "libmp3lame", bit_rate=32_000)


class AudioBench:
    """Section 7 against one service: its URL, its process, a box and a token."""

    def __init__(
        self, session: aiohttp.ClientSession, base: str, box_path: str, token: str, pid: int,
        plan: AudioPlan,
    ) -> None:
        self.session = session
        self.base = base
        self.box_path = box_path
        self.headers = {"X-Auth-Token": token}
        self.plan = plan
        self.read_rss, self.sampler = memory.rss_reader(pid)
        self.read_cpu = memory.cpu_reader(pid)

    async def create(self, audio: bytes, content_type: str) -> JsonObject:
        body, ctype = multipart_body({"data": {"caller_id_number": "+14155550100"}}, audio,
                                     content_type)
        created = await fetch_json(
            self.session, "PUT", f"{self.base}{self.box_path}/messages", data=body,
            headers={**self.headers, "Content-Type": ctype}, expect=201)
        data: JsonObject = created["data"]
        return data

    async def download(self, message_id: str, audio_format: str | None) -> JsonObject:
        """One download read to the end: seconds to the first body byte and to the last."""
        params = {"format": audio_format} if audio_format else None
        started = time.perf_counter()
        first: float | None = None
        total = 0
        async with self.session.get(
            f"{self.base}{self.box_path}/messages/{message_id}/raw", headers=self.headers,
            params=params,
        ) as resp:
            await check(resp, 200)
            async for chunk in resp.content.iter_chunked(READ_CHUNK_BYTES):
                if first is None:
                    first = time.perf_counter() - started
                total += len(chunk)
        if first is None or not total:
            raise BenchError(f"download of {message_id} ({audio_format}) was empty")
        return {"ttfb_s": first, "seconds": time.perf_counter() - started, "bytes": total}

    async def throughput(self, label: str, message_id: str, audio_format: str) -> JsonObject:
        per_cpu: list[float] = []
        wall: list[float] = []
        ttfb: list[float] = []
        size = 0
        await self.download(message_id, audio_format)  # warm-up: codecs loaded, pool started
        for _ in range(self.plan.rounds):
            cpu_before = self.read_cpu()
            got = await self.download(message_id, audio_format)
            cpu_s = self.read_cpu() - cpu_before
            per_cpu.append(self.plan.message_s / max(cpu_s, 1e-3))
            wall.append(got["seconds"])
            ttfb.append(got["ttfb_s"] * 1000)
            size = got["bytes"]
        return {"label": label, "audio_s": self.plan.message_s, "output_bytes": size,
                "audio_s_per_cpu_s": rate_summary(per_cpu),
                "realtime_factor": rate_summary([self.plan.message_s / w for w in wall]),
                "ttfb_ms": rate_summary(ttfb)}

    async def stored_ttfb(self, message_id: str) -> JsonObject:
        return rate_summary([(await self.download(message_id, None))["ttfb_s"] * 1000
                             for _ in range(self.plan.rounds)])

    async def create_cost(self, audio: bytes) -> JsonObject:
        """A create of real audio (sniffed and measured) against as many bytes of noise."""
        noise = bytes(len(audio))  # zeros: no known audio, so only sniffed
        measured: list[float] = []
        unmeasured: list[float] = []
        for _ in range(self.plan.rounds):
            for sample, times in ((audio, measured), (noise, unmeasured)):
                started = time.perf_counter()
                await self.create(sample, "audio/mpeg")
                times.append((time.perf_counter() - started) * 1000)
        return {"bytes": len(audio), "audio_ms": rate_summary(measured),
                "not_audio_ms": rate_summary(unmeasured),
                "added_ms": statistics.median(measured) - statistics.median(unmeasured)}

    async def peak_memory(self, wav: bytes) -> JsonObject:
        message_id = str((await self.create(wav, "audio/wav"))["media_id"])
        await self.download(message_id, "mp3")  # warm-up on the same message
        idle = memory.baseline(self.read_rss)
        started = time.perf_counter()
        with memory.PeakSampler(self.read_rss) as peak:
            got = await self.download(message_id, "mp3")
        return {"label": f"transcode a {len(wav) / 1e6:.0f} MB WAV (44.1 kHz stereo) to MP3",
                "bytes": len(wav), "output_bytes": got["bytes"],
                "seconds": time.perf_counter() - started,
                "baseline_mib": idle / memory.MIB, "peak_mib": peak.peak / memory.MIB,
                "growth_mib": (peak.peak - idle) / memory.MIB, "samples": peak.samples}

    async def run(self, log: Callable[[str], None]) -> JsonObject:
        wav = tone_wav(self.plan.message_s, 8000, 1)
        mp3 = wav_to_mp3(wav)
        big = tone_wav(self.plan.big_bytes / (44_100 * 4), 44_100, 2)
        wav_message, mp3_message = await self.create(wav, "audio/wav"), await self.create(
            mp3, "audio/mpeg")
        expected_ms = self.plan.message_s * 1000
        for created in (wav_message, mp3_message):
            if abs(created["length"] - expected_ms) > 100:
                raise BenchError(f"measured {created['length']} ms, expected {expected_ms:.0f}")
        result: JsonObject = {"message_s": self.plan.message_s, "rounds": self.plan.rounds,
                              "sampler": self.sampler}
        result["wav_to_mp3"] = await self.throughput(
            "WAV (8 kHz mono) → MP3", wav_message["media_id"], "mp3")
        result["mp3_to_wav"] = await self.throughput(
            "MP3 (8 kHz mono, 32 kb/s) → WAV", mp3_message["media_id"], "wav")
        result["stored_ttfb_ms"] = await self.stored_ttfb(wav_message["media_id"])
        for key in ("wav_to_mp3", "mp3_to_wav"):
            row = result[key]
            log(f"{row['label']}: {row['audio_s_per_cpu_s']['median']:.0f} s of audio per CPU s, "
                f"first byte {row['ttfb_ms']['median']:.0f} ms")
        result["create"] = await self.create_cost(mp3)
        result["memory"] = await self.peak_memory(big)
        log(f"transcode memory: +{result['memory']['growth_mib']:.1f} MiB")
        return result
