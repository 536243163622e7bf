"""Gregorian seconds (seconds since 0000-01-01 UTC), the platform's only stored time unit."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime

UNIX_EPOCH_GREGORIAN_S = 62_167_219_200
# 9999-12-31T23:59:59Z, the last second Python's calendar can show.
LATEST_GREGORIAN_S = 315_537_897_599


def now() -> int:
    return int(time.time()) + UNIX_EPOCH_GREGORIAN_S


def to_unix(gregorian_s: int) -> int:
    return gregorian_s - UNIX_EPOCH_GREGORIAN_S


def from_unix(unix_s: float) -> int:
    return int(unix_s) + UNIX_EPOCH_GREGORIAN_S


def to_datetime(gregorian_s: int) -> datetime:
    return datetime.fromtimestamp(to_unix(gregorian_s), tz=UTC)


def utc_month(gregorian_s: int) -> tuple[int, int]:
    moment = to_datetime(gregorian_s)
    return moment.year, moment.month


def month_start(year: int, month: int) -> int:
    """The first second of a UTC month."""
    return from_unix(datetime(year, month, 1, tzinfo=UTC).timestamp())


def iso8601(gregorian_s: int | None = None) -> str:
    return _iso8601(now() if gregorian_s is None else gregorian_s)


# Every envelope carries the current second: formatted once per second, not once per response.
@functools.lru_cache(maxsize=4)
def _iso8601(gregorian_s: int) -> str:
    return to_datetime(gregorian_s).strftime("%Y-%m-%dT%H:%M:%SZ")
