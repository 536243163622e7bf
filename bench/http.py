"""HTTP plumbing of the load generator: the service and CouchDB clients, and timed request loops."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from bench.procs import BenchError
from bench.stats import Round
from piston_vm.core.config import CouchEndpoint

JsonObject = dict[str, Any]
Call = Callable[[], Awaitable[object]]

READ_CHUNK_BYTES = 1 << 20
# Both sides get the same client shape: one session, enough connections for concurrency 16.
CLIENT_CONNECTIONS = 64
SLOW_READ_S = 900.0


def new_session(headers: Mapping[str, str] | None = None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=CLIENT_CONNECTIONS, limit_per_host=CLIENT_CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=SLOW_READ_S)
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=dict(headers or {}), auto_decompress=False)


async def drain(resp: aiohttp.ClientResponse) -> int:
    """Read a body to the end in chunks (never whole): the byte count."""
    total = 0
    async for chunk in resp.content.iter_chunked(READ_CHUNK_BYTES):
        total += len(chunk)
    return total


async def check(resp: aiohttp.ClientResponse, expect: int | Sequence[int]) -> None:
    wanted = (expect,) if isinstance(expect, int) else tuple(expect)
    if resp.status not in wanted:
        body = (await resp.read())[:500]
        raise BenchError(f"{resp.method} {resp.url.path} answered {resp.status}: {body!r}")


async def fetch_bytes(
    session: aiohttp.ClientSession,
    method: str,
    url: URL | str,
    *,
    expect: int | Sequence[int] = 200,
    **kwargs: Any,
) -> int:
    """One request whose body is read and thrown away; returns its length."""
    async with session.request(method, url, **kwargs) as resp:
        await check(resp, expect)
        return await drain(resp)


async def fetch_json(
    session: aiohttp.ClientSession,
    method: str,
    url: URL | str,
    *,
    expect: int | Sequence[int] = 200,
    **kwargs: Any,
) -> Any:
    async with session.request(method, url, **kwargs) as resp:
        await check(resp, expect)
        return json.loads(await resp.read())


@dataclass(frozen=True, slots=True)
class Bounds:
    """A round stops at `max_requests`, or once `budget_s` is spent and `min_requests` are done."""

    max_requests: int
    min_requests: int
    budget_s: float


async def timed_round(call: Call, concurrency: int, bounds: Bounds) -> Round:
    latencies: list[float] = []
    issued = 0
    started = time.perf_counter()

    def more() -> bool:
        if issued >= bounds.max_requests:
            return False
        return issued < bounds.min_requests or time.perf_counter() - started < bounds.budget_s

    async def worker() -> None:
        nonlocal issued
        while more():
            issued += 1
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Round(tuple(latencies), time.perf_counter() - started)


async def paired_rounds(
    calls: Mapping[str, Call], concurrency: int, bounds: Bounds, rounds: int, warmup: Bounds
) -> dict[str, list[Round]]:
    """Warm every side up, then run `rounds` rounds of each side back to back, alternating which
    side goes first, so machine noise lands on both sides alike."""
    names = list(calls)
    for name in names:
        await timed_round(calls[name], concurrency, warmup)
    results: dict[str, list[Round]] = {name: [] for name in names}
    for n in range(rounds):
        order = names if n % 2 == 0 else names[::-1]
        for name in order:
            results[name].append(await timed_round(calls[name], concurrency, bounds))
    return results


class Couch:
    """Direct CouchDB access for seeding and for the baseline requests."""

    def __init__(self, endpoint: CouchEndpoint) -> None:
        self.endpoint = endpoint
        headers = {"Accept": "application/json"}
        if endpoint.user is not None:
            login = f"{endpoint.user}:{endpoint.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(login).decode("ascii")
        self.session = new_session(headers)

    async def close(self) -> None:
        await self.session.close()

    def url(self, db: str, *parts: str) -> URL:
        path = "/" + quote(db, safe="")
        if parts:
            path += "/" + "/".join(quote(p, safe="") for p in parts)
        return URL(self.endpoint.url + path, encoded=True)

    def view_url(self, db: str, design: str, view: str) -> URL:
        return URL(
            f"{self.url(db)}/_design/{quote(design, safe='')}/_view/{quote(view, safe='')}",
            encoded=True)

    async def info(self) -> JsonObject:
        result: JsonObject = await fetch_json(self.session, "GET", self.endpoint.url + "/")
        return result

    async def ensure_db(self, db: str) -> None:
        await fetch_bytes(self.session, "PUT", self.url(db), expect=(201, 202, 412))

    async def delete_db(self, db: str) -> None:
        await fetch_bytes(self.session, "DELETE", self.url(db), expect=(200, 202, 404))

    async def all_dbs(self, start: str, end: str) -> list[str]:
        names = await fetch_json(
            self.session, "GET", self.endpoint.url + "/_all_dbs",
            params={"start_key": json.dumps(start), "end_key": json.dumps(end)})
        return [str(n) for n in names]

    async def put_design(self, db: str, doc: JsonObject) -> None:
        """Install a design doc unless one with that id exists (the service never overwrites)."""
        doc_url = URL(f"{self.url(db)}/{doc['_id']}", encoded=True)
        await fetch_bytes(self.session, "PUT", doc_url, json=doc, expect=(201, 202, 409))

    async def get_doc(self, db: str, doc_id: str) -> JsonObject:
        result: JsonObject = await fetch_json(self.session, "GET", self.url(db, doc_id))
        return result

    async def put_doc(self, db: str, doc: JsonObject) -> str:
        result = await fetch_json(
            self.session, "PUT", self.url(db, doc["_id"]), json=doc, expect=(201, 202))
        return str(result["rev"])

    async def delete_doc(self, db: str, doc_id: str, rev: str) -> None:
        await fetch_bytes(self.session, "DELETE", self.url(db, doc_id), params={"rev": rev},
                          expect=(200, 202, 404))

    async def bulk_docs(self, db: str, docs: Sequence[JsonObject]) -> None:
        results = await fetch_json(
            self.session, "POST", self.url(db, "_bulk_docs"), json={"docs": list(docs)},
            expect=(201, 202))
        failed = [r for r in results if "error" in r]
        if failed:
            raise BenchError(f"_bulk_docs into {db}: {len(failed)} failed, e.g. {failed[0]}")

    async def put_attachment(
        self, db: str, doc_id: str, rev: str, name: str, content_type: str,
        body: bytes | AsyncIterator[bytes],
    ) -> str:
        result = await fetch_json(
            self.session, "PUT", self.url(db, doc_id, name), params={"rev": rev}, data=body,
            headers={"Content-Type": content_type}, expect=(201, 202))
        return str(result["rev"])

    async def view(
        self, db: str, design: str, view: str, params: Mapping[str, Any]
    ) -> JsonObject:
        result: JsonObject = await fetch_json(
            self.session, "GET", self.view_url(db, design, view), params=view_params(params))
        return result


def view_params(params: Mapping[str, Any]) -> dict[str, str]:
    """CouchDB wants keys as JSON and booleans lowercase in the query string."""
    query: dict[str, str] = {}
    for name, value in params.items():
        if name in ("key", "startkey", "endkey", "start_key", "end_key"):
            query[name] = json.dumps(value, separators=(",", ":"))
        elif isinstance(value, bool):
            query[name] = "true" if value else "false"
        else:
            query[name] = str(value)
    return query


def multipart_body(
    envelope: JsonObject, audio: bytes, content_type: str = "audio/mpeg",
    boundary: str = "piston-vm-bench-4f1c9a",
) -> tuple[bytes, str]:
    """One JSON part with the envelope plus one audio part, as curl -F sends them."""
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="content"; filename="message.json"\r\n'
        "Content-Type: application/json\r\n\r\n"
    ).encode() + json.dumps(envelope).encode() + (
        f"\r\n--{boundary}\r\n"
        'Content-Disposition: form-data; name="content"; filename="voice.mp3"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    return head + audio + f"\r\n--{boundary}--\r\n".encode(), (
        f"multipart/mixed; boundary={boundary}")
