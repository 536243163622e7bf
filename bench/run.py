"""`python -m bench.run [--smoke] [--couchdb-url URL]`: piston_vm against CouchDB, side by side.

One run measures (issue 6): request overhead against the equivalent direct CouchDB requests,
first-page latency as the account grows, the service's peak memory while streaming large audio,
write throughput, startup time, what the access log and metrics cost a single read, and what
audio formats cost (bench/audio.py). The service runs as its own `piston-vm serve` process on
loopback; load comes from this process's aiohttp client. Results go to `--out` (default
bench/results): latest.json, latest.md and latest.png. `--only audio` runs the audio section
alone and writes latest-audio.json and latest-audio.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench import memory, report
from bench.audio import FULL_AUDIO, SMOKE_AUDIO, AudioBench, AudioPlan
from bench.http import (
    Bounds,
    Couch,
    check,
    fetch_bytes,
    fetch_json,
    multipart_body,
    new_session,
    paired_rounds,
)
from bench.procs import BenchError, Service, create_account, free_port, start_service, stop_service
from bench.seed import BOX_ZONE, DESIGN, Box, MessageFactory, Seeder, months_in_window
from bench.stats import rate_summary, ratio_summary, summarize
from piston_vm.core import gregorian
from piston_vm.core.config import CouchEndpoint, Settings
from piston_vm.storage import devserver
from piston_vm.storage.names import DbName

log = logging.getLogger("bench")

JsonObject = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "bench" / "results"
COUCHDB_URL_ENV = "PISTON_VM_BENCH_COUCHDB_URL"
DEV_ADMIN = ("admin", "admin")
REALM = "bench.example.net"
PAGE_SIZE = 50
RETENTION_S = Settings().retention_s
# The 50 MB upload must pass the service's body limit (default 8 MB).
MAX_UPLOAD_BYTES = 60_000_000
CONCURRENCIES = (1, 16)
WRITE_CONCURRENCY = 8
BOX_CREATE_IN_FLIGHT = 8


@dataclass(frozen=True, slots=True)
class Plan:
    mode: str
    sizes: tuple[int, ...]
    rounds: int
    bounds: Bounds
    warmup: Bounds
    scaling_bounds: Bounds
    scaling_warmup: Bounds
    boxes: int
    raw_audio_bytes: int
    write_audio_bytes: int
    write_per_round: int
    write_rounds: int
    upload_bytes: int
    zip_count: int
    zip_bytes: int
    startup_rounds: int
    audio: AudioPlan


FULL = Plan(
    mode="full", sizes=(1_000, 5_000, 20_000, 100_000), rounds=5,
    bounds=Bounds(max_requests=400, min_requests=24, budget_s=1.5),
    warmup=Bounds(max_requests=40, min_requests=8, budget_s=0.5),
    scaling_bounds=Bounds(max_requests=40, min_requests=6, budget_s=2.0),
    scaling_warmup=Bounds(max_requests=5, min_requests=2, budget_s=0.3),
    boxes=50, raw_audio_bytes=1_000_000, write_audio_bytes=100_000, write_per_round=96,
    write_rounds=5, upload_bytes=50_000_000, zip_count=20, zip_bytes=5_000_000,
    startup_rounds=3, audio=FULL_AUDIO,
)
SMOKE = Plan(
    mode="smoke", sizes=(100, 300), rounds=2,
    bounds=Bounds(max_requests=12, min_requests=2, budget_s=0.1),
    warmup=Bounds(max_requests=2, min_requests=1, budget_s=0.05),
    scaling_bounds=Bounds(max_requests=5, min_requests=2, budget_s=0.2),
    scaling_warmup=Bounds(max_requests=1, min_requests=1, budget_s=0.0),
    boxes=50, raw_audio_bytes=1_000_000, write_audio_bytes=100_000, write_per_round=8,
    write_rounds=2, upload_bytes=4_000_000, zip_count=3, zip_bytes=1_000_000,
    startup_rounds=1, audio=SMOKE_AUDIO,
)


@dataclass
class Tenant:
    """An account used by the bench, with its token and boxes."""

    id: str
    token: str
    boxes: list[Box]

    @property
    def db(self) -> DbName:
        return DbName(self.id)

    def path(self, rest: str = "") -> str:
        return f"/v2/accounts/{self.id}/vmboxes{rest}"


class Bench:
    def __init__(self, plan: Plan, couch: Couch, couchdb_url: str, work: Path) -> None:
        self.plan = plan
        self.couch = couch
        self.couchdb_url = couchdb_url
        self.work = work
        self.rng = random.Random(20_240_601)
        self.env = {
            "PISTON_VM_TOKEN_SECRET": secrets.token_hex(32),
            "PISTON_VM_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
            # Production's defaults, said out loud: section 6 compares them with both off.
            "PISTON_VM_ACCESS_LOG": "on",
            "PISTON_VM_METRICS": "on",
            "PISTON_VM_LOG_FORMAT": "text",
        }
        self.service: Service | None = None
        self.api = new_session()
        self.tenants: list[Tenant] = []
        self.phase_s: dict[str, float] = {}

    # -- service and accounts ------------------------------------------------------------

    @property
    def base(self) -> str:
        assert self.service is not None
        return self.service.url

    async def start(self, name: str) -> None:
        self.service, seconds = await start_service(
            port=free_port(), log_path=self.work / f"{name}.log", env=self.env,
            couchdb_url=self.couchdb_url)
        log.info("service %s up in %.2f s (pid %d)", name, seconds, self.service.pid)

    async def stop(self) -> None:
        if self.service is not None:
            await stop_service(self.service)
            self.service = None

    def headers(self, tenant: Tenant, **extra: str) -> dict[str, str]:
        return {"X-Auth-Token": tenant.token, **extra}

    async def new_tenant(self, name: str, boxes: int) -> Tenant:
        account_id, api_key = await create_account(self.couchdb_url, name, REALM, self.env)
        auth = await fetch_json(self.api, "PUT", self.base + "/v2/api_auth",
                                json={"data": {"api_key": api_key}}, expect=201)
        tenant = Tenant(account_id, str(auth["auth_token"]), [])
        gate = asyncio.Semaphore(BOX_CREATE_IN_FLIGHT)

        async def create(n: int) -> Box:
            mailbox = str(3000 + n)
            async with gate:
                body = await fetch_json(
                    self.api, "PUT", self.base + tenant.path(), headers=self.headers(tenant),
                    json={"data": {"name": f"Box {n:02d}", "mailbox": mailbox,
                                   "timezone": BOX_ZONE}},
                    expect=201)
            return Box(str(body["data"]["id"]), mailbox)

        tenant.boxes = list(await asyncio.gather(*(create(n) for n in range(boxes))))
        self.tenants.append(tenant)
        return tenant

    async def create_message(self, tenant: Tenant, box: Box, audio: bytes) -> str:
        """A message with audio through the API (multipart/mixed: JSON part + audio part)."""
        body, content_type = multipart_body(
            {"data": {"caller_id_number": "+14155550100", "caller_id_name": "BENCH",
                      "length": 30_000}}, audio)
        created = await fetch_json(
            self.api, "PUT", self.base + tenant.path(f"/{box.id}/messages"), data=body,
            headers=self.headers(tenant, **{"Content-Type": content_type}), expect=201)
        return str(created["data"]["media_id"])

    # -- 1. overhead -----------------------------------------------------------------------

    async def first_page_direct(self, tenant: Tenant, box: Box, modbs: set[DbName]) -> int:
        """The same first page straight from CouchDB: newest MODB first, until 51 rows."""
        now = gregorian.now()
        start = now - RETENTION_S
        rows = 0
        for year, month in reversed(list(months_in_window(start, now))):
            modb = tenant.db.modb(year, month)
            if modb not in modbs:
                continue
            result = await self.couch.view(
                modb.unencoded, DESIGN, "listing_by_mailbox",
                {"startkey": [box.id, now], "endkey": [box.id, start], "descending": True,
                 "limit": PAGE_SIZE + 1 - rows})
            rows += len(result["rows"])
            if rows > PAGE_SIZE:
                break
        return rows

    def read_pairs(
        self, tenant: Tenant, seeder: Seeder, message: tuple[DbName, str],
        audio: tuple[DbName, str, str],
    ) -> dict[str, dict[str, Callable[[], Awaitable[object]]]]:
        """operation → {"service": call, "couchdb": call} doing the same read."""
        box = tenant.boxes[0]
        hdrs = self.headers(tenant)
        api, couch, base = self.api, self.couch, self.base
        (msg_modb, msg_id), (audio_modb, audio_id, audio_name) = message, audio

        async def service_list(path: str, expected: int) -> None:
            body = await fetch_json(api, "GET", base + path, headers=hdrs)
            if len(body["data"]) != expected:
                raise BenchError(f"{path}: {len(body['data'])} rows, expected {expected}")

        async def couch_boxes() -> None:
            await couch.view(tenant.db.unencoded, "vmboxes", "crossbar_listing",
                             {"limit": PAGE_SIZE + 1})

        return {
            "box_fetch": {
                "service": lambda: fetch_bytes(api, "GET", base + tenant.path(f"/{box.id}"),
                                               headers=hdrs),
                "couchdb": lambda: fetch_bytes(couch.session, "GET",
                                               couch.url(tenant.db.unencoded, box.id)),
            },
            "box_list": {
                "service": lambda: service_list(tenant.path(), min(PAGE_SIZE, len(tenant.boxes))),
                "couchdb": couch_boxes,
            },
            "message_fetch": {
                "service": lambda: fetch_bytes(
                    api, "GET", base + tenant.path(f"/{box.id}/messages/{msg_id}"),
                    headers=hdrs),
                "couchdb": lambda: fetch_bytes(couch.session, "GET",
                                               couch.url(msg_modb.unencoded, msg_id)),
            },
            "message_list": {
                "service": lambda: service_list(
                    tenant.path(f"/{box.id}/messages"),
                    min(PAGE_SIZE, seeder.per_box.get(box.id, 0) + 1)),
                "couchdb": lambda: self.first_page_direct(tenant, box, seeder.ready_modbs),
            },
            "raw_audio": {
                "service": lambda: fetch_bytes(
                    api, "GET", base + tenant.path(f"/{box.id}/messages/{audio_id}/raw"),
                    headers=hdrs),
                "couchdb": lambda: fetch_bytes(
                    couch.session, "GET", couch.url(audio_modb.unencoded, audio_id, audio_name)),
            },
        }

    async def overhead(
        self, pairs: dict[str, dict[str, Callable[[], Awaitable[object]]]]
    ) -> list[JsonObject]:
        rows = []
        for operation, calls in pairs.items():
            for concurrency in CONCURRENCIES:
                rounds = await paired_rounds(calls, concurrency, self.plan.bounds,
                                             self.plan.rounds, self.plan.warmup)
                service, couch = summarize(rounds["service"]), summarize(rounds["couchdb"])
                row = {"operation": operation, "concurrency": concurrency,
                       "service": service, "couchdb": couch, **ratio_summary(service, couch)}
                log.info("overhead %-13s c=%-2d service p50 %.2f ms, CouchDB %.2f ms: %.2fx",
                         operation, concurrency, service["p50_ms"], couch["p50_ms"],
                         row["ratio_p50"])
                rows.append(row)
        return rows

    # -- 6. observability cost -------------------------------------------------------------

    async def observability(self, tenant: Tenant) -> JsonObject:
        """A box fetch on this service (access log and metrics on) against the same fetch on
        a second service with both off, rounds alternating so machine noise hits both."""
        quiet, _ = await start_service(
            port=free_port(), log_path=self.work / "quiet.log",
            env={**self.env, "PISTON_VM_ACCESS_LOG": "off", "PISTON_VM_METRICS": "off"},
            couchdb_url=self.couchdb_url)
        try:
            path = tenant.path(f"/{tenant.boxes[0].id}")
            hdrs = self.headers(tenant)
            calls: dict[str, Callable[[], Awaitable[object]]] = {
                "on": lambda: fetch_bytes(self.api, "GET", self.base + path, headers=hdrs),
                "off": lambda: fetch_bytes(self.api, "GET", quiet.url + path, headers=hdrs),
            }
            rounds = await paired_rounds(calls, 1, self.plan.bounds, self.plan.rounds,
                                         self.plan.warmup)
            async with self.api.get(self.base + "/metrics") as resp:
                await check(resp, 200)
                exposition = await resp.text()
            async with self.api.get(quiet.url + "/metrics") as resp:
                await check(resp, 404)  # off means off
        finally:
            await stop_service(quiet)
        series = sum(len(f.samples) for f in text_string_to_metric_families(exposition))
        on, off = summarize(rounds["on"]), summarize(rounds["off"])
        ratios = ratio_summary(on, off)
        log.info("observability: box fetch p50 %.2f ms on, %.2f ms off: %.3fx", on["p50_ms"],
                 off["p50_ms"], ratios["ratio_p50"])
        return {"operation": "box_fetch", "concurrency": 1, "log_format": "text",
                "on": on, "off": off, "metrics_series": series, **ratios}

    # -- 2. scaling ------------------------------------------------------------------------

    async def scaling_point(
        self, pairs: dict[str, dict[str, Callable[[], Awaitable[object]]]]
    ) -> JsonObject:
        point: JsonObject = {}
        for operation in ("message_list", "box_list"):
            rounds = await paired_rounds(pairs[operation], 1, self.plan.scaling_bounds,
                                         self.plan.rounds, self.plan.scaling_warmup)
            point[operation] = {side: summarize(r) for side, r in rounds.items()}
        return point

    # -- 4. writes -------------------------------------------------------------------------

    async def writes(self, tenant: Tenant) -> JsonObject:
        box = tenant.boxes[0]
        audio = self.rng.randbytes(self.plan.write_audio_bytes)
        factory = MessageFactory(tenant.id, REALM, random.Random(7))
        seeder = Seeder(self.couch, factory, tenant.boxes)

        async def via_service() -> None:
            await self.create_message(tenant, box, audio)

        async def direct() -> None:
            modb, doc = factory.document(box, gregorian.now(), folder="new", inline_audio=False)
            await seeder.ensure_modb(modb)
            rev = await self.couch.put_doc(modb.unencoded, doc)
            await self.couch.put_attachment(modb.unencoded, doc["_id"], rev,
                                            doc["media_filename"], "audio/mpeg", audio)

        n = self.plan.write_per_round
        calls = {"service": via_service, "couchdb": direct}
        rounds = await paired_rounds(
            calls, WRITE_CONCURRENCY, Bounds(n, n, 0.0), self.plan.write_rounds,
            Bounds(WRITE_CONCURRENCY, WRITE_CONCURRENCY, 0.0))
        rates = {side: rate_summary([r.rps for r in rs]) for side, rs in rounds.items()}
        return {
            "concurrency": WRITE_CONCURRENCY, "audio_bytes": self.plan.write_audio_bytes,
            "per_round": n, "service": rates["service"], "couchdb": rates["couchdb"],
            "ratio": rates["service"]["median"] / rates["couchdb"]["median"],
            "unit": "messages/s",
        }

    # -- 3. memory -------------------------------------------------------------------------

    async def seed_zip_messages(self, tenant: Tenant, box: Box) -> list[str]:
        """The ZIP's messages, written straight into CouchDB before the service starts."""
        factory = MessageFactory(tenant.id, REALM, random.Random(11))
        seeder = Seeder(self.couch, factory, tenant.boxes)
        ids = []
        now = gregorian.now()
        for n in range(self.plan.zip_count):
            modb, doc = factory.document(box, now - 60 - n, folder="new", inline_audio=False)
            await seeder.ensure_modb(modb)
            rev = await self.couch.put_doc(modb.unencoded, doc)
            await self.couch.put_attachment(
                modb.unencoded, doc["_id"], rev, doc["media_filename"], "audio/mpeg",
                self.rng.randbytes(self.plan.zip_bytes))
            ids.append(str(doc["_id"]))
        return ids

    async def memory(self, tenant: Tenant, zip_ids: list[str]) -> JsonObject:
        assert self.service is not None
        read, sampler = memory.rss_reader(self.service.pid)
        box = tenant.boxes[1]
        hdrs = self.headers(tenant)
        base = self.base

        async def download(message_id: str) -> int:
            return await fetch_bytes(
                self.api, "GET", base + tenant.path(f"/{box.id}/messages/{message_id}/raw"),
                headers=hdrs)

        async def zip_of(ids: list[str]) -> int:
            async with self.api.post(
                base + tenant.path(f"/{box.id}/messages/raw"),
                json={"data": {"messages": ids}},
                headers=self.headers(tenant, Accept="application/zip"),
            ) as resp:
                await check(resp, 200)
                total, head = 0, b""
                async for chunk in resp.content.iter_chunked(1 << 20):
                    if not head:
                        head = chunk[:4]
                    total += len(chunk)
                if head != b"PK\x03\x04":
                    raise BenchError(f"ZIP answer does not start like a ZIP: {head!r}")
                return total

        # Warm-up: every code path once with small audio, so lazy imports and first-use
        # allocations are not counted as streaming cost.
        small = [await self.create_message(tenant, box, self.rng.randbytes(64_000))
                 for _ in range(2)]
        await download(small[0])
        await zip_of(small)

        big = self.rng.randbytes(self.plan.upload_bytes)
        upload_body, upload_type = multipart_body({"data": {"caller_id_number": "6001"}}, big)
        del big
        operations: JsonObject = {}
        created: list[str] = []

        async def upload() -> int:
            created.append(await self.create_message_raw(tenant, box, upload_body, upload_type))
            return len(upload_body)

        steps: list[tuple[str, str, Callable[[], Awaitable[int]]]] = [
            ("upload", f"upload {self.plan.upload_bytes / 1e6:.0f} MB (multipart create)",
             upload),
            ("download", f"download {self.plan.upload_bytes / 1e6:.0f} MB (raw GET)",
             lambda: download(created[0])),
            ("zip", f"ZIP of {self.plan.zip_count} × {self.plan.zip_bytes / 1e6:.0f} MB",
             lambda: zip_of(zip_ids)),
        ]
        for key, label, action in steps:
            idle = await asyncio.to_thread(memory.baseline, read)
            started = time.perf_counter()
            with memory.PeakSampler(read) as peak:
                moved = await action()
            seconds = time.perf_counter() - started
            operations[key] = {
                "label": label, "bytes": moved, "seconds": seconds,
                "mb_per_s": moved / 1e6 / seconds,
                "baseline_mib": idle / memory.MIB, "peak_mib": peak.peak / memory.MIB,
                "growth_mib": (peak.peak - idle) / memory.MIB, "samples": peak.samples,
            }
            log.info("memory %s: +%.1f MiB over %.1f MiB (%.1f s)", key,
                     operations[key]["growth_mib"], operations[key]["baseline_mib"], seconds)
        if operations["download"]["bytes"] != self.plan.upload_bytes:
            raise BenchError(f"downloaded {operations['download']['bytes']} bytes, uploaded "
                             f"{self.plan.upload_bytes}")
        return {"sampler": sampler, "interval_ms": memory.SAMPLE_INTERVAL_S * 1000,
                "max_upload_bytes": MAX_UPLOAD_BYTES, "operations": operations}

    async def create_message_raw(
        self, tenant: Tenant, box: Box, body: bytes, content_type: str
    ) -> str:
        created = await fetch_json(
            self.api, "PUT", self.base + tenant.path(f"/{box.id}/messages"), data=body,
            headers=self.headers(tenant, **{"Content-Type": content_type}), expect=201)
        return str(created["data"]["media_id"])

    async def audio(self) -> JsonObject:
        """Section 7 (bench/audio.py) on a fresh service process, so that its RSS is its own."""
        await self.start("audio")
        assert self.service is not None
        tenant = await self.new_tenant("Bench audio", 1)
        section = AudioBench(self.api, self.base, tenant.path(f"/{tenant.boxes[0].id}"),
                             tenant.token, self.service.pid, self.plan.audio)
        result = await section.run(log.info)
        await self.stop()
        return result

    # -- the whole run -----------------------------------------------------------------------

    async def phase(self, name: str, started: float) -> None:
        self.phase_s[name] = time.perf_counter() - started

    async def run(self) -> JsonObject:
        plan = self.plan
        result: JsonObject = {}
        t = time.perf_counter()
        await self.start("service")
        main = await self.new_tenant("Bench main", plan.boxes)
        box0 = main.boxes[0]
        audio_id = await self.create_message(main, box0, self.rng.randbytes(plan.raw_audio_bytes))
        audio_modb = main.db.modb(int(audio_id[:4]), int(audio_id[4:6]))
        audio_doc = await self.couch.get_doc(audio_modb.unencoded, audio_id)
        audio_name = next(iter(audio_doc["_attachments"]))
        seeder = Seeder(self.couch, MessageFactory(main.id, REALM, self.rng), main.boxes)
        seeder.ready_modbs.add(audio_modb)
        await self.phase("setup", t)

        points: list[JsonObject] = []
        pairs = None
        for n, size in enumerate(plan.sizes):
            t = time.perf_counter()
            now = gregorian.now()
            log.info("seeding %d messages (account total %d)", size - seeder.seeded, size)
            seed_s = await seeder.add(size - seeder.seeded, now)
            log.info("seeded in %.1f s; building view indexes", seed_s)
            index = await seeder.build_indexes(main.db)
            log.info("indexes built in %.1f s", index["total_s"])
            if pairs is None:
                pairs = self.read_pairs(main, seeder, seeder.newest[box0.id],
                                        (audio_modb, audio_id, audio_name))
            await self.phase(f"seed+index {size}", t)
            if n == 0:
                t = time.perf_counter()
                result["overhead_dataset"] = {"messages": size + 1, "boxes": len(main.boxes)}
                result["overhead"] = await self.overhead(pairs)
                await self.phase("overhead", t)
                t = time.perf_counter()
                result["observability"] = await self.observability(main)
                await self.phase("observability", t)
            t = time.perf_counter()
            point = await self.scaling_point(pairs)
            points.append({"messages": size + 1, "seeded": size, "seed_s": seed_s,
                           "index": index, "modbs": len(seeder.ready_modbs),
                           "box0_messages": seeder.per_box.get(box0.id, 0) + 1, **point})
            log.info("scaling %d: message list %.1f ms, box list %.1f ms", size,
                     point["message_list"]["service"]["p50_ms"],
                     point["box_list"]["service"]["p50_ms"])
            await self.phase(f"scaling {size}", t)
        first, last = points[0], points[-1]
        result["scaling"] = {
            "smallest": first["messages"], "largest": last["messages"], "points": points,
            "growth": {key: {side: last[key][side]["p50_ms"] / first[key][side]["p50_ms"]
                             for side in ("service", "couchdb")}
                       for key in ("message_list", "box_list")},
        }

        t = time.perf_counter()
        other = await self.new_tenant("Bench writes", 2)
        result["write"] = await self.writes(other)
        log.info("writes: service %.1f/s, CouchDB %.1f/s", result["write"]["service"]["median"],
                 result["write"]["couchdb"]["median"])
        await self.phase("writes", t)

        t = time.perf_counter()
        zip_ids = await self.seed_zip_messages(other, other.boxes[1])
        await self.stop()
        # A fresh process, so heap left over from the load phases cannot hide growth.
        await self.start("memory")
        result["memory"] = await self.memory(other, zip_ids)
        await self.stop()
        await self.phase("memory", t)

        t = time.perf_counter()
        result["audio"] = await self.audio()
        await self.phase("audio", t)
        return result

    async def close(self) -> None:
        await self.stop()
        await self.api.close()


async def measure_startup(plan: Plan, work: Path, env: dict[str, str]) -> JsonObject:
    """`piston-vm serve` with no CouchDB URL (it starts the bundled server) to the first 200."""
    seconds = []
    for n in range(plan.startup_rounds):
        service, took = await start_service(
            port=free_port(), couchdb_port=free_port(), data_dir=work / f"startup-{n}",
            log_path=work / f"startup-{n}.log", env=env)
        await stop_service(service)
        seconds.append(took)
        log.info("startup round %d: %.2f s", n + 1, took)
    return {"rounds_s": seconds, "median_s": statistics.median(seconds),
            "spread_s": [min(seconds), max(seconds)]}


def _commit() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


async def cleanup_external(couch: Couch, tenants: list[Tenant]) -> None:
    """On a CouchDB we did not start, remove the bench's accounts and their databases."""
    for tenant in tenants:
        prefix = tenant.db.unencoded
        for name in await couch.all_dbs(prefix, prefix + "\ufff0"):
            await couch.delete_db(name)
        try:
            doc = await couch.get_doc("accounts", tenant.id)
        except BenchError:
            continue
        await couch.delete_doc("accounts", tenant.id, str(doc["_rev"]))


async def run(plan: Plan, couchdb_url: str | None, only: str | None = None) -> JsonObject:
    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="piston-vm-bench-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        startup_env = {"PISTON_VM_TOKEN_SECRET": secrets.token_hex(32)}
        startup = None if only else await measure_startup(plan, work, startup_env)
        startup_s = time.perf_counter() - t
        server = None
        if couchdb_url is None:
            server = await devserver.start_devserver(
                port=0, data_dir=work / "couchdb", admin=DEV_ADMIN)
            couchdb_url = server.url_with_credentials
        couch = Couch(CouchEndpoint.parse(couchdb_url))
        bench = Bench(plan, couch, couchdb_url, work)
        try:
            info = await couch.info()
            result: JsonObject = (
                {"audio": await bench.audio()} if only == "audio" else await bench.run())
        finally:
            await bench.close()
            if server is None:
                await cleanup_external(couch, bench.tenants)
            await couch.close()
            if server is not None:
                await server.stop()
    bench.phase_s["startup"] = startup_s
    kind = "bundled server (express-pouchdb)" if server is not None else "external CouchDB"
    raw_vendor = info.get("vendor")
    vendor: JsonObject = raw_vendor if isinstance(raw_vendor, dict) else {}
    result = {
        "meta": {
            "mode": plan.mode,
            "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "duration_s": time.perf_counter() - started,
            "phase_s": bench.phase_s,
            "couchdb": {"kind": "bundled" if server is not None else "external",
                        "version": info.get("version"), "vendor": vendor.get("name"),
                        "description": f"{kind} {info.get('version', '')}".strip()},
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            # Other work on the machine shifts both sides of a pair alike, but not startup.
            "load_avg_1m": {"start": load_before[0], "end": os.getloadavg()[0]},
            "commit": _commit(),
            "plan": {"sizes": list(plan.sizes), "rounds": plan.rounds,
                     "bounds": vars_of(plan.bounds), "warmup": vars_of(plan.warmup),
                     "scaling_bounds": vars_of(plan.scaling_bounds)},
        },
        **result,
    }
    if startup is not None:
        result["startup"] = startup
    result["targets"] = report.targets(result)
    return result


def write_outputs(result: JsonObject, out_dir: Path) -> None:
    """latest.json, latest.md (also printed) and latest.png in `out_dir`; latest-audio.json and
    latest-audio.md for a run of the audio section alone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "latest" if "overhead" in result else "latest-audio"
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = report.markdown(result)
    (out_dir / f"{name}.md").write_text(table)
    if "scaling" in result:
        report.plot(result, out_dir / "latest.png")
    print(table)


def vars_of(bounds: Bounds) -> JsonObject:
    return {"max_requests": bounds.max_requests, "min_requests": bounds.min_requests,
            "budget_s": bounds.budget_s}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and few rounds (< 60 s): checks the benchmark works")
    parser.add_argument("--couchdb-url", default=os.environ.get(COUCHDB_URL_ENV) or None,
                        help=f"http://user:pass@host:port of a CouchDB to use (env "
                             f"{COUCHDB_URL_ENV}); default: start the bundled server")
    parser.add_argument("--sizes", help="comma-separated message counts for the scaling curve "
                                        "(default 1000,5000,20000)")
    parser.add_argument("--rounds", type=int, help="measured rounds per figure (default 5)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="directory for latest.json, latest.md, latest.png")
    parser.add_argument("--only", choices=["audio"],
                        help="run one section alone (audio: section 7, docs/audio.md)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    plan = SMOKE if args.smoke else FULL
    if args.sizes:
        sizes = tuple(sorted(int(s) for s in args.sizes.split(",") if s.strip()))
        if len(sizes) < 2 or sizes[0] < 1:
            raise SystemExit("--sizes needs at least two positive counts")
        plan = replace(plan, sizes=sizes)
    if args.rounds is not None:
        if args.rounds < 1:
            raise SystemExit("--rounds must be at least 1")
        plan = replace(plan, rounds=args.rounds)
    try:
        result = asyncio.run(run(plan, args.couchdb_url, args.only))
    except (BenchError, devserver.DevServerError, aiohttp.ClientError) as exc:
        log.error("benchmark failed: %s", exc)
        return 1
    write_outputs(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
