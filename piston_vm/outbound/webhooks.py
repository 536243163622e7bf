"""Webhook requests to the outside world, treated as hostile territory (docs/events.md
"Outbound safety").

- Only `http` and `https` URIs.
- By default no request reaches a loopback, private, link-local, multicast, reserved or cloud
  metadata address. The check runs on the addresses DNS gives, and the connection goes to
  exactly those addresses (a name that resolves to a public address for the check and to a
  private one for the connection cannot slip through). PISTON_VM_WEBHOOK_ALLOW_PRIVATE=true
  lifts it, for tests and local development.
- Redirects are followed (at most three) only to URIs that pass the same checks.
- Every request is bounded in time; the answer's body is read up to a small limit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

MAX_REDIRECTS = 3
RESPONSE_BODY_LIMIT = 2048
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
# The metadata services of the usual clouds, whatever range they are in.
METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"),
                      ipaddress.ip_address("fd00:ec2::254"),
                      ipaddress.ip_address("100.100.100.200")}


class BlockedAddress(Exception):
    """The URI may not be called: its scheme, or where its host leads."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What one request got: a status and the start of the body, or an error."""

    status: int | None
    body: str
    error: str | None = None


def address_allowed(text: str) -> bool:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address in METADATA_ADDRESSES or address.is_private or address.is_loopback
        or address.is_link_local or address.is_multicast or address.is_reserved
        or address.is_unspecified or not address.is_global
    )


class _PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, refusing names that lead to an address webhooks may not reach."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if address_allowed(r["host"])]
        if not allowed or len(allowed) != len(results):
            raise OSError(f"{host} resolves to an address webhooks may not reach")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def check_uri(uri: str, allow_private: bool) -> URL:
    url = URL(uri)
    if url.scheme not in ("http", "https") or not url.host:
        raise BlockedAddress(f"only http and https URIs are called, not {uri!r}")
    if not allow_private:
        try:
            literal = ipaddress.ip_address(url.host)
        except ValueError:
            literal = None
        if literal is not None and not address_allowed(str(literal)):
            raise BlockedAddress(f"{url.host} is not a public address")
    return url


class WebhookClient:
    """One HTTP session for every webhook delivery of a process."""

    def __init__(self, timeout_s: float, allow_private: bool) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.allow_private = allow_private
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        resolver = None if self.allow_private else _PublicOnlyResolver()
        connector = aiohttp.TCPConnector(resolver=resolver, limit=100, force_close=False)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                              auto_decompress=True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self, method: str, uri: str, *, params: Mapping[str, str] | None,
        body: bytes | None, headers: Mapping[str, str],
    ) -> Answer:
        if self._session is None:
            raise RuntimeError("WebhookClient used before start()")
        try:
            url = check_uri(uri, self.allow_private)
            for _ in range(MAX_REDIRECTS + 1):
                async with self._session.request(
                    method, url, params=params, data=body, headers=dict(headers),
                    allow_redirects=False,
                ) as resp:
                    location = resp.headers.get("Location")
                    if resp.status in REDIRECT_STATUSES and location:
                        url = check_uri(str(url.join(URL(location))), self.allow_private)
                        params = None
                        continue
                    raw = await resp.content.read(RESPONSE_BODY_LIMIT)
                    return Answer(resp.status, raw.decode("utf-8", "replace"))
            return Answer(None, "", "too many redirects")
        except BlockedAddress as exc:
            return Answer(None, "", str(exc))
        except TimeoutError:
            return Answer(None, "", "timeout")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return Answer(None, "", _describe(exc))
        except asyncio.CancelledError:
            raise


def _describe(exc: BaseException) -> str:
    cause: Any = exc.__cause__ or exc
    text = str(cause) or type(cause).__name__
    return text[:200]
