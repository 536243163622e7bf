"""Failed-login throttling: a sliding window per login identity and per client address.

State is in-process (one LoginThrottle per app), so N instances behind a load balancer allow
N times the limit; that is the price of keeping the service stateless between requests.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http import HTTPStatus

from aiohttp import web

from piston_vm import errors

MAX_FAILURES = 5
WINDOW_S = 60.0
# Each tracked key costs ~0.6 KiB (a digest and a deque of MAX_FAILURES floats): 20k keys stay
# around 12 MiB however many addresses or made-up identities an attacker sends.
MAX_KEYS = 20_000

Key = bytes


def too_many_failed_logins(retry_after_s: int) -> errors.ApiError:
    return errors.ApiError(
        HTTPStatus.TOO_MANY_REQUESTS,
        "too_many_requests",
        {"message": "too many failed logins"},
        headers={"Retry-After": str(retry_after_s)},
    )


def _digest(kind: str, *parts: str) -> Key:
    # Keys are fixed-size digests: request values can be megabytes long, and raw credential
    # hashes should not sit in memory for a minute.
    hasher = hashlib.sha256(kind.encode())
    for part in parts:
        hasher.update(b"\0" + part.encode("utf-8", "surrogatepass"))
    return hasher.digest()


def login_keys(remote: str | None, *identity: str) -> tuple[Key, Key]:
    """(identity key, address key): `identity` names what was tried, e.g. account + hash."""
    return _digest("identity", *identity), _digest("address", remote or "unknown")


class LoginThrottle:
    """At most `max_failures` failed logins per key within any `window_s` seconds.

    Each key keeps only its last `max_failures` failure times: the key is blocked while the
    oldest of them is inside the window, and frees when it leaves. Attempts are counted when
    they start (so a burst of concurrent guesses cannot all slip through) and forgiven when
    they end in anything but a 401.
    """

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        # Least recently failed first, so eviction drops expired (or else the stalest) keys.
        self._failures: OrderedDict[Key, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after_s(self, keys: Sequence[Key]) -> float:
        """Seconds until every key may try again; 0 when none is blocked."""
        now = self.clock()
        wait = 0.0
        for key in keys:
            stamps = self._failures.get(key)
            if stamps is not None and len(stamps) >= self.max_failures:
                wait = max(wait, stamps[0] + self.window_s - now)
        return wait

    @contextmanager
    def attempt(self, keys: Sequence[Key]) -> Iterator[None]:
        """Raise 429 while blocked; otherwise count the attempt unless it does not end in 401."""
        wait = self.retry_after_s(keys)
        if wait > 0:
            raise too_many_failed_logins(max(1, math.ceil(wait)))
        stamp = self.clock()
        for key in keys:
            self._record(key, stamp)
        failed = False
        try:
            yield
        except errors.ApiError as error:
            failed = error.status == HTTPStatus.UNAUTHORIZED
            raise
        finally:
            if not failed:
                self._forgive(keys, stamp)

    def _record(self, key: Key, stamp: float) -> None:
        stamps = self._failures.get(key)
        if stamps is None:
            stamps = self._failures[key] = deque(maxlen=self.max_failures)
        else:
            self._failures.move_to_end(key)
        stamps.append(stamp)
        self._evict(stamp)

    def _evict(self, now: float) -> None:
        """Drop keys whose failures all left the window, then the stalest while over the cap."""
        horizon = now - self.window_s
        while self._failures:
            oldest_key, stamps = next(iter(self._failures.items()))
            if stamps and stamps[-1] > horizon and len(self._failures) <= self.max_keys:
                return
            del self._failures[oldest_key]

    def _forgive(self, keys: Sequence[Key], stamp: float) -> None:
        for key in keys:
            stamps = self._failures.get(key)
            if stamps is None:
                continue
            try:
                stamps.remove(stamp)
            except ValueError:
                continue
            if not stamps:
                del self._failures[key]


LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)


def install_login_throttle(app: web.Application) -> None:
    """Give the app its throttle; a no-op when it has one (installed, or injected by a test)."""
    if LOGIN_THROTTLE not in app:
        app[LOGIN_THROTTLE] = LoginThrottle()
