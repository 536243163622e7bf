"""Resident memory of another process, sampled every 20 ms on a thread, and its CPU time
(psutil, else /proc)."""

from __future__ import annotations

import importlib
import os
import statistics
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

SAMPLE_INTERVAL_S = 0.02
BASELINE_S = 0.5
MIB = 1024 * 1024


def _psutil() -> Any | None:
    # psutil is a bench-only extra; `make bench-smoke` also runs with only the dev set installed.
    try:
        return importlib.import_module("psutil")
    except ImportError:
        return None


def rss_reader(pid: int) -> tuple[Callable[[], int], str]:
    """A function returning the process's RSS in bytes, and the name of the method."""
    psutil = _psutil()
    if psutil is not None:
        process = psutil.Process(pid)

        def read_psutil() -> int:
            return int(process.memory_info().rss)

        return read_psutil, "psutil"
    page_bytes = os.sysconf("SC_PAGE_SIZE")
    statm = f"/proc/{pid}/statm"

    def read_proc() -> int:
        with open(statm) as handle:
            return int(handle.read().split()[1]) * page_bytes

    return read_proc, "/proc/statm"


def cpu_reader(pid: int) -> Callable[[], float]:
    """A function returning the CPU seconds (user + system, every thread) the process used."""
    psutil = _psutil()
    if psutil is not None:
        process = psutil.Process(pid)

        def read_psutil() -> float:
            times = process.cpu_times()
            return float(times.user + times.system)

        return read_psutil
    ticks = os.sysconf("SC_CLK_TCK")
    stat = f"/proc/{pid}/stat"

    def read_proc() -> float:
        with open(stat) as handle:
            # Fields 14 and 15 (utime, stime) follow the parenthesised command name.
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    return read_proc


def baseline(read: Callable[[], int], seconds: float = BASELINE_S) -> int:
    """The idle RSS: the median of samples over `seconds`."""
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        samples.append(read())
        time.sleep(SAMPLE_INTERVAL_S)
    return int(statistics.median(samples))


class PeakSampler:
    """`with PeakSampler(read) as s: ...` then `s.peak` (bytes) and `s.samples`."""

    def __init__(self, read: Callable[[], int], interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.read = read
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.read())
            self.samples += 1
            if self._stop.wait(self.interval_s):
                break

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        # One last sample after the work ended: the peak may be the final state.
        self.peak = max(self.peak, self.read())
