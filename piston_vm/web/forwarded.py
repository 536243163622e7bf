"""The client's address: the peer's, or X-Forwarded-For's when the peer is a trusted proxy.

docs/operations.md, "Behind a proxy": the header is only believed when the connection comes
from an address in PISTON_VM_TRUSTED_PROXIES, and then read from the right: each hop that is
itself a trusted proxy is skipped, and the first one that is not is the client. Anything to its
left was written by the client and proves nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import hdrs, web

from piston_vm.core.config import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("["):  # "[2001:db8::1]:4711"
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # "192.0.2.1:4711"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: Address, proxies: Sequence[Network]) -> bool:
    return any(address in network for network in proxies)


def client_address(request: web.Request, proxies: Sequence[Network]) -> str | None:
    peer = request.remote
    if not proxies or peer is None:
        return peer
    hop = _address(peer)
    if hop is None or not _trusted(hop, proxies):
        return peer
    forwarded = ",".join(request.headers.getall(hdrs.X_FORWARDED_FOR, ()))
    for entry in reversed(forwarded.split(",")):
        if not entry.strip():
            continue
        address = _address(entry)
        if address is None:
            # A hop we trust passed on something that is not an address: it is the last
            # address we know.
            break
        hop = address
        if not _trusted(hop, proxies):
            break
    return str(hop)
