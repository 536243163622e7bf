"""Audio through PyAV (FFmpeg's libraries, bundled in its wheels): how long a recording lasts,
and a recording in another format, streamed in bounded memory (docs/audio.md).

FFmpeg's calls are blocking, so they run on a small pool of threads of their own (PyAV releases
the GIL while FFmpeg works). A job reads its input and hands over its output through the event
loop, one chunk at a time: the pool never holds a whole recording, and a download that stops
being read stops its transcode.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, BinaryIO, TypeVar

import av
import av.error
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer

from piston_vm.core import errors
from piston_vm.core.audio_formats import AAC, MP3, SNIFF_BYTES, OutputFormat, Sniffed, sniff

log = logging.getLogger(__name__)

T = TypeVar("T")

# A transcode's output travels in pieces of about this size, at most this many queued: with the
# chunk being read by FFmpeg, the memory a transcode holds stays well under 1 MiB.
OUTPUT_CHUNK_BYTES = 64 * 1024
QUEUED_OUTPUT_CHUNKS = 4
# The first piece goes as soon as there is this much (headers and the first frames): the time
# to first byte is the decoder's start, not 64 KiB of encoding (16 s of audio at 32 kb/s).
FIRST_CHUNK_BYTES = 4 * 1024
# A reader that is asked for bytes this close ahead skips them instead of asking CouchDB again.
FORWARD_SKIP_BYTES = 256 * 1024
# How often a thread waiting on the event loop checks whether its job was called off.
POLL_S = 0.25
# Frame-based encoders add a fixed delay (MP3 1,105 samples, AAC 1,024) that a streamed file
# cannot tell players to skip: below this rate it would make the audio noticeably longer than
# the message (138 ms for MP3 at 8 kHz). docs/audio.md, "Encodings".
MIN_FRAME_CODEC_RATE_HZ = 22_050


class Cancelled(Exception):
    """The job was called off (its download went away, or the service is stopping)."""


class Undecodable(Exception):
    """The source holds no audio FFmpeg can decode."""


class TranscodeFailed(Exception):
    """A transcode broke after its first bytes were sent: only a cut connection can say so."""


@dataclass(frozen=True, slots=True)
class Encoding:
    """How one output format is written: FFmpeg muxer and encoder, and their settings."""

    muxer: str
    codec: str
    muxer_options: dict[str, str] = field(default_factory=dict)
    # Sample rates the encoder takes (None: any); the lowest one at or above the source's (and
    # at or above min_rate_hz) is used.
    rates_hz: tuple[int, ...] | None = None
    min_rate_hz: int = 0
    # Bits per second per channel; a higher figure for sources of 32 kHz and more (music).
    bit_rate_voice: int = 0
    bit_rate_music: int = 0

    def rate_for(self, source_hz: int) -> int:
        if self.rates_hz is None:
            return source_hz
        wanted = max(source_hz, self.min_rate_hz)
        higher = [rate for rate in self.rates_hz if rate >= wanted]
        return min(higher) if higher else max(self.rates_hz)

    def bit_rate_for(self, rate_hz: int, channels: int) -> int:
        per_channel = self.bit_rate_music if rate_hz >= 32_000 else self.bit_rate_voice
        return per_channel * channels


ENCODINGS: dict[str, Encoding] = {
    # A streamed WAV cannot go back to write its sizes: FFmpeg writes 0xFFFFFFFF, "to the end".
    "wav": Encoding("wav", "pcm_s16le"),
    "mp3": Encoding("mp3", "libmp3lame",
                    rates_hz=(8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
                    min_rate_hz=MIN_FRAME_CODEC_RATE_HZ, bit_rate_voice=32_000,
                    bit_rate_music=64_000),
    "ogg": Encoding("ogg", "libopus", rates_hz=(8000, 12000, 16000, 24000, 48000),
                    bit_rate_voice=24_000, bit_rate_music=64_000),
    # Fragmented MP4: its index comes in pieces as it is written, so nothing waits for the end;
    # delay_moov lets the first piece carry the edit list that skips the encoder's priming.
    "m4a": Encoding("ipod", "aac",
                    {"movflags": "frag_keyframe+empty_moov+delay_moov+default_base_moof",
                     "frag_duration": "1000000"},
                    rates_hz=(8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
                    min_rate_hz=MIN_FRAME_CODEC_RATE_HZ, bit_rate_voice=32_000,
                    bit_rate_music=64_000),
}


@dataclass(frozen=True, slots=True)
class Measured:
    """What FFmpeg found in a file: whether it holds audio, and how long it lasts."""

    audio: bool
    duration_ms: int | None


OpenAt = Callable[[int], AsyncIterator[bytes]]
# What FFmpeg reads from: an upload's spool, or a _SourceReader over CouchDB.
Readable = BinaryIO | io.RawIOBase


@dataclass(frozen=True, slots=True)
class ByteSource:
    """Bytes that live elsewhere (CouchDB): their size, and a stream of them from an offset."""

    size: int
    open_at: OpenAt


# -- the bridge between FFmpeg's thread and the event loop ---------------------------------


class _Job:
    """One job's link to the event loop, and its off switch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.stop = threading.Event()

    def call(self, coroutine: Awaitable[T]) -> T:
        """Run `coroutine` on the loop and wait for it, giving up when the job is called off."""
        future = asyncio.run_coroutine_threadsafe(_awaited(coroutine), self.loop)
        while True:
            if self.stop.is_set():
                future.cancel()
                raise Cancelled()
            try:
                return future.result(timeout=POLL_S)
            except TimeoutError:
                continue


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


class _SourceReader(io.RawIOBase):
    """A seekable, read-only file over a ByteSource, for FFmpeg in a worker thread.

    Reads go on from one open stream; a seek far from it (MP4 keeps its index at the end) opens
    a new stream at the wanted offset. Any failure of the source (CouchDB unreachable) is kept
    in `failure`, since FFmpeg only hears "could not read".
    """

    def __init__(self, source: ByteSource, job: _Job) -> None:
        super().__init__()
        self.source = source
        self.job = job
        self.failure: BaseException | None = None
        self._position = 0
        self._stream: AsyncIterator[bytes] | None = None
        self._stream_position = 0  # offset of the first byte of `_pending`
        self._pending = b""
        self._head = b""

    def sniff(self) -> Sniffed | None:
        """Sniff the first bytes; they stay at hand, so FFmpeg's reads of them cost nothing."""
        self.seek(0)
        head = bytearray()
        try:
            while len(head) < SNIFF_BYTES and (chunk := self.read(SNIFF_BYTES - len(head))):
                head += chunk
        except OSError:
            return None  # the source failed: `failure` says how
        self._head = bytes(head)
        self.seek(0)
        return sniff(self._head, self.source.size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.source.size}
        self._position = max(base[whence] + offset, 0)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._position >= self.source.size or not len(view):
            return 0
        if self._position < len(self._head):
            data = self._head[self._position : self._position + len(view)]
            view[: len(data)] = data
            self._position += len(data)
            return len(data)
        try:
            data = self._bytes_at(self._position, len(view))
        except Cancelled:
            raise
        except BaseException as exc:
            self.failure = exc
            raise OSError("the audio source failed") from exc
        view[: len(data)] = data
        self._position += len(data)
        return len(data)

    def _bytes_at(self, position: int, wanted: int) -> bytes:
        ahead = position - self._stream_position
        if self._stream is None or not 0 <= ahead <= len(self._pending) + FORWARD_SKIP_BYTES:
            self._open(position)
            ahead = 0
        while ahead >= len(self._pending):
            ahead -= len(self._pending)
            self._stream_position += len(self._pending)
            assert self._stream is not None
            self._pending = self.job.call(anext(self._stream, b""))
            if not self._pending:
                return b""
        data = self._pending[ahead : ahead + wanted]
        self._stream_position += ahead + len(data)
        self._pending = self._pending[ahead + len(data) :]
        return data

    def _open(self, position: int) -> None:
        self.close_stream()
        self._stream = self.source.open_at(position)
        self._stream_position = position
        self._pending = b""

    def close_stream(self) -> None:
        stream, self._stream = self._stream, None
        closer = getattr(stream, "aclose", None)
        if closer is not None and not self.job.loop.is_closed():
            # Releases the CouchDB response the stream holds; the loop owns it.
            asyncio.run_coroutine_threadsafe(_awaited(closer()), self.job.loop)


class _QueueSink(io.RawIOBase):
    """A write-only, unseekable file whose bytes go to an asyncio queue in chunks."""

    def __init__(self, queue: asyncio.Queue[bytes | BaseException | None], job: _Job) -> None:
        super().__init__()
        self.queue = queue
        self.job = job
        self.sent = 0
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._buffer += chunk
        if len(self._buffer) >= (OUTPUT_CHUNK_BYTES if self.sent else FIRST_CHUNK_BYTES):
            self.flush_chunk()
        return len(chunk)

    def flush_chunk(self) -> None:
        if self._buffer:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            self.sent += len(chunk)
            self.job.call(self.queue.put(chunk))


# -- the jobs, on a worker thread ------------------------------------------------------------


def _first_audio_stream(container: InputContainer) -> AudioStream | None:
    return next((s for s in container.streams if isinstance(s, AudioStream)), None)


def _open_input(reader: Readable, demuxer: str) -> InputContainer:
    # A known format needs no probing: garbage is refused at once instead of after megabytes.
    return av.open(reader, mode="r", format=demuxer)


def _sniffed_input(reader: Readable, sniffed: Sniffed | None) -> InputContainer:
    """Stored audio opened for decoding, only in a format sniffing recognised: FFmpeg's probing
    would also try demuxers that open other files or URLs (HLS playlists, concat lists)."""
    if sniffed is None:
        raise Undecodable("no known audio format")
    return _open_input(reader, sniffed.format.demuxer)


def _declared_duration_us(container: InputContainer, sniffed: Sniffed | None) -> int | None:
    """The duration the container states, when it states one rather than FFmpeg guessing it.

    MP3 without a Xing/Info/VBRI header and raw AAC state nothing: FFmpeg guesses from the bit
    rate, which is wrong for variable bit rates. WebM written by browsers and FLAC written as a
    stream state nothing either.
    """
    known = sniffed.format if sniffed is not None else None
    if known is AAC or (known is MP3 and not (sniffed and sniffed.vbr_header)):
        return None
    duration = container.duration
    return int(duration) if duration and duration > 0 else None


def measure_file(reader: Readable, sniffed: Sniffed) -> Measured:
    """Duration from the container's own statement where it has one, else from its packets
    (demuxed, not decoded)."""
    try:
        with _open_input(reader, sniffed.format.demuxer) as container:
            stream = _first_audio_stream(container)
            if stream is None:
                return Measured(False, None)
            declared = _declared_duration_us(container, sniffed)
            if declared is not None:
                return Measured(True, round(declared / 1000))
            first: int | None = None
            end = 0
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                if first is None:
                    first = packet.pts
                end = max(end, packet.pts + (packet.duration or 0))
            if first is None or end <= first or stream.time_base is None:
                return Measured(True, None)
            return Measured(True, round(float((end - first) * stream.time_base) * 1000))
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        log.info("audio not measurable: %r", exc)
        return Measured(False, None)


def _head_of(frame: AudioFrame, samples: int) -> AudioFrame:
    """The first `samples` samples of an audio frame, as a frame of their own."""
    head = AudioFrame(format=frame.format.name, layout=frame.layout.name, samples=samples)
    for source, target in zip(frame.planes, head.planes, strict=True):
        target.update(bytes(source)[: target.buffer_size])
    head.sample_rate = frame.sample_rate
    return head


def _layout_for(channels: int) -> str:
    # Voicemail is mono; anything wider than stereo is folded down to it.
    return "mono" if channels <= 1 else "stereo"


def transcode_file(
    reader: Readable, sink: _QueueSink, output: OutputFormat, sniffed: Sniffed | None
) -> None:
    """Decode the first audio stream of `reader` and write it to `sink` as `output`.

    Raises `Undecodable` when nothing could be decoded before any output was written. Audio
    past the container's stated duration is dropped: decoders hand out whole frames, and the
    last one of an AAC track is mostly padding that the MP4 index says to leave out.
    """
    encoding = ENCODINGS[output.keyword]
    try:
        container = _sniffed_input(reader, sniffed)
    except av.error.FFmpegError as exc:
        raise Undecodable(str(exc)) from exc
    with container:
        stream = _first_audio_stream(container)
        if stream is None:
            raise Undecodable("no audio stream")
        context = stream.codec_context
        rate = encoding.rate_for(context.sample_rate or 8000)
        layout = _layout_for(context.channels)
        channels = 1 if layout == "mono" else 2
        declared = _declared_duration_us(container, sniffed)
        limit = round(declared * rate / 1_000_000) if declared is not None else None
        with av.open(sink, mode="w", format=encoding.muxer,
                     options=encoding.muxer_options) as out:
            target = out.add_stream(encoding.codec, rate=rate)
            assert isinstance(target, AudioStream)
            target.layout = layout
            if encoding.bit_rate_voice:
                target.bit_rate = encoding.bit_rate_for(rate, channels)
            resampler = av.AudioResampler(format=target.format, layout=layout, rate=rate)
            time_base = Fraction(1, rate)
            samples = 0
            decoded_any = False

            def encode(frames: list[AudioFrame]) -> None:
                nonlocal samples
                for frame in frames:
                    if limit is not None and samples + frame.samples > limit:
                        if samples >= limit:
                            return
                        frame = _head_of(frame, limit - samples)
                    # Timestamps counted from 0 in samples: the encoder's priming then gets
                    # negative ones, which the MP4 muxer turns into an edit list.
                    frame.pts = samples
                    frame.time_base = time_base
                    samples += frame.samples
                    for packet in target.encode(frame):
                        out.mux(packet)

            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError:
                    # A damaged packet is skipped, as FFmpeg's own tool does; the rest plays.
                    continue
                for frame in decoded:
                    decoded_any = True
                    encode(resampler.resample(frame))
            if not decoded_any:
                raise Undecodable("no audio could be decoded")
            encode(resampler.resample(None))
            for packet in target.encode(None):
                out.mux(packet)
    sink.flush_chunk()


def first_frame_decodes(reader: Readable, sniffed: Sniffed | None) -> bool:
    """True when the first audio stream of `reader` yields a decoded frame."""
    try:
        with _sniffed_input(reader, sniffed) as container:
            stream = _first_audio_stream(container)
            if stream is None:
                return False
            for packet in container.demux(stream):
                try:
                    if packet.decode():
                        return True
                except av.error.InvalidDataError:
                    continue
    except (av.error.FFmpegError, OSError, ValueError, Undecodable) as exc:
        log.info("audio does not decode: %r", exc)
    return False


# -- the service ---------------------------------------------------------------------------


class Transcoder:
    """The pool that runs FFmpeg; one per process (app.py), closed with the app."""

    def __init__(self, workers: int) -> None:
        self.workers = max(workers, 1)
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: set[_Job] = set()

    def _executor(self) -> ThreadPoolExecutor:
        # Made on first use: services that never touch audio start no threads.
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="piston_vm-audio")
        return self._pool

    @property
    def in_flight(self) -> int:
        """Jobs that read from CouchDB now (transcodes, decode checks, measures of stored audio)."""
        return len(self._jobs)

    def close(self) -> None:
        for job in list(self._jobs):
            job.stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def measure(self, open_reader: Callable[[], BinaryIO], sniffed: Sniffed) -> Measured:
        """Measure a local file (an upload's spool) on the pool."""
        loop = asyncio.get_running_loop()

        def run() -> Measured:
            with open_reader() as reader:
                return measure_file(reader, sniffed)

        return await loop.run_in_executor(self._executor(), run)

    async def _on_source(
        self, source: ByteSource, work: Callable[[_SourceReader, Sniffed | None], T]
    ) -> T:
        """Run `work` on the pool over audio that lives in CouchDB (its first bytes sniffed);
        a failure of the source is raised as itself, not as FFmpeg's "could not read"."""
        job = _Job(asyncio.get_running_loop())
        reader = _SourceReader(source, job)

        def run() -> T:
            try:
                return work(reader, reader.sniff())
            finally:
                reader.close_stream()

        self._jobs.add(job)
        try:
            result = await job.loop.run_in_executor(self._executor(), run)
        finally:
            job.stop.set()
            self._jobs.discard(job)
        if reader.failure is not None:
            raise reader.failure
        return result

    async def measure_source(self, source: ByteSource) -> Measured:
        """Measure audio that lives in CouchDB, reading only what FFmpeg asks for."""

        def measure(reader: _SourceReader, sniffed: Sniffed | None) -> Measured:
            if sniffed is None:  # no known audio, or the source failed
                return Measured(False, None)
            return measure_file(reader, sniffed)

        return await self._on_source(source, measure)

    async def check_decodes(self, source: ByteSource, cause: str) -> None:
        """406 (`cause` names the message) unless the audio's first frame decodes."""

        def decodes(reader: _SourceReader, sniffed: Sniffed | None) -> bool:
            return reader.failure is None and first_frame_decodes(reader, sniffed)

        if not await self._on_source(source, decodes):
            raise errors.not_acceptable(cause, "the audio cannot be decoded")

    async def stream(
        self, source: ByteSource, output: OutputFormat, cause: str
    ) -> AsyncIterator[bytes]:
        """`source` as `output`, chunk by chunk, as FFmpeg writes it.

        Before the first chunk, undecodable audio raises 406 (`cause` names the message) and
        a failing source its own error; after it, `TranscodeFailed`.
        """
        loop = asyncio.get_running_loop()
        job = _Job(loop)
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(QUEUED_OUTPUT_CHUNKS)
        reader = _SourceReader(source, job)
        sink = _QueueSink(queue, job)

        def run() -> None:
            outcome: BaseException | None = None
            try:
                transcode_file(reader, sink, output, reader.sniff())
            except Cancelled:
                return
            except BaseException as exc:  # every failure is reported to the reader below
                outcome = reader.failure or exc
            finally:
                reader.close_stream()
            with suppress(Cancelled):
                job.call(queue.put(outcome))

        self._jobs.add(job)
        done = loop.run_in_executor(self._executor(), run)
        started = False
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise self._failure(item, started, cause) from item
                started = True
                yield item
            await done
        finally:
            job.stop.set()
            self._jobs.discard(job)
            while not queue.empty():  # unblocks a put the thread may be waiting on
                queue.get_nowait()

    @staticmethod
    def _failure(problem: BaseException, started: bool, cause: str) -> BaseException:
        if started:
            return TranscodeFailed(repr(problem))
        if isinstance(problem, Undecodable | av.error.FFmpegError | OSError):
            log.info("audio of %s cannot be decoded: %r", cause, problem)
            return errors.not_acceptable(cause, "the audio cannot be decoded")
        return problem
