"""Failed-login throttling: sliding windows per login, per tenant and address, per address.

What counts against what (docs/operations.md, "Login throttling"):
- one login (an account and the exact credentials tried, or one API key): MAX_FAILURES;
- one account from one client address: MAX_FAILURES, so a tenant's failures behind a shared
  NAT or proxy block only that tenant's logins from there, never another tenant's;
- one client address across every account and endpoint: MAX_ADDRESS_FAILURES, a much higher
  limit that only a guessing run reaches.
A blocked key is answered 429 *before* the credentials are checked, so a right guess is never
confirmed while a limit is reached.

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

from piston_vm.core import errors

MAX_FAILURES = 5
MAX_ADDRESS_FAILURES = 100
WINDOW_S = 60.0
# Each tracked key costs ~0.6 KiB (a digest and a deque of up to MAX_FAILURES floats; the few
# address keys hold more): 20k keys stay around 12 MiB however many addresses or made-up
# identities an attacker sends.
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


# A key and the failures it may collect within the window.
Limit = tuple[Key, int]


def login_keys(remote: str | None, account: Sequence[str], secret: str) -> list[Limit]:
    """The keys a login attempt counts against: `account` names the tenant tried (empty for
    API keys, which name their account themselves), `secret` what was tried with it."""
    keys = [(_digest("identity", *account, secret), MAX_FAILURES)]
    if account:
        keys.append((_digest("account-address", remote or "unknown", *account), MAX_FAILURES))
    keys.append((_digest("address", remote or "unknown"), MAX_ADDRESS_FAILURES))
    return keys


class LoginThrottle:
    """At most a key's limit of failed logins within any `window_s` seconds.

    Each key keeps only its last `limit` failure times: the key is blocked while the oldest of
    them is inside the window, and frees when it leaves. Attempts are counted when
    they start (so a burst of concurrent guesses cannot all slip through) and forgiven when
    they end in anything but a 401.
    """

    def __init__(
        self,
        window_s: float = WINDOW_S,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
        limit_scale: int = 1,
    ) -> None:
        # Multiplies every key's limit: for tests that must never be throttled.
        self.limit_scale = limit_scale
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        # Least recently failed first, so eviction drops expired (or else the stalest) keys.
        self._failures: OrderedDict[Key, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after_s(self, keys: Sequence[Limit]) -> float:
        """Seconds until every key may try again; 0 when none is blocked."""
        now = self.clock()
        wait = 0.0
        for key, limit in keys:
            stamps = self._failures.get(key)
            if stamps is not None and len(stamps) >= limit * self.limit_scale:
                wait = max(wait, stamps[0] + self.window_s - now)
        return wait

    @contextmanager
    def attempt(self, keys: Sequence[Limit]) -> Iterator[None]:
        """Raise 429 while blocked; otherwise count the attempt unless it does not end in 401."""
        wait = self.retry_after_s(keys)
        if wait > 0:
            raise too_many_failed_logins(max(1, math.ceil(wait)))
        stamp = self.clock()
        for key, limit in keys:
            self._record(key, limit, stamp)
        failed = False
        try:
            yield
        except errors.ApiError as error:
            failed = error.status == HTTPStatus.UNAUTHORIZED
            raise
        finally:
            if not failed:
                self._forgive(keys, stamp)

    def _record(self, key: Key, limit: int, stamp: float) -> None:
        stamps = self._failures.get(key)
        if stamps is None:
            stamps = self._failures[key] = deque(maxlen=limit * self.limit_scale)
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

    def _forgive(self, keys: Sequence[Limit], stamp: float) -> None:
        for key, _ in keys:
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
