"""The event engine's benchmark (docs/events.md): how soon a webhook arrives after the write
that caused it, how many deliveries a second, and what 1,000 idle accounts cost.

    python -m bench.events [--couchdb-url URL] [--out bench/results]

- lag: from the moment the API answered 201 to a message create (multipart, audio included)
  to the moment a webhook receiver on 127.0.0.1 got its `voicemail_new`; p50 / p99;
- deliveries/s: messages written by 1 and by 8 concurrent writers, divided by the time from
  the first write to the last delivery;
- idle cost: with 1,000 accounts (each with its account database and a box) that do nothing,
  the CouchDB requests per second the service makes and the CPU it uses, beside the same
  with no extra accounts.

The service is a real `piston-vm serve` (engine on, the default) on the bundled server or on
the CouchDB given. Results go to `<out>/events-<engine>.json` and `.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.http import Couch, fetch_json, multipart_body, new_session
from bench.procs import BenchError, create_account, free_port, start_service, stop_service
from bench.stats import percentile
from piston_vm.core.config import CouchEndpoint
from piston_vm.storage import devserver
from piston_vm.storage.names import DbName

log = logging.getLogger("bench.events")

JsonObject = dict[str, Any]

DEV_ADMIN = ("admin", "admin")
AUDIO = b"ID3\x03\x00" + bytes(8_000)
WRITES = {1: 60, 8: 240}
IDLE_ACCOUNTS = 1000
IDLE_WINDOW_S = 30.0
COUCH_REQUESTS = re.compile(r"^piston_vm_couchdb_requests_total\{[^}]*\} ([0-9.e+]+)$", re.M)
CPU_SECONDS = re.compile(r"^process_cpu_seconds_total ([0-9.e+]+)$", re.M)


class Receiver:
    """Webhook deliveries, timed on arrival."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.count = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        fields = await request.post()
        self.count += 1
        self.arrived.setdefault(str(fields.get("voicemail_id")), time.perf_counter())
        return web.Response(text="ok")

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def metric_sums(session: aiohttp.ClientSession, base: str) -> tuple[float, float]:
    async with session.get(base + "/metrics") as resp:
        text = await resp.text()
    requests = sum(float(v) for v in COUCH_REQUESTS.findall(text))
    cpu = CPU_SECONDS.search(text)
    return requests, float(cpu.group(1)) if cpu else 0.0


async def idle_cost(session: aiohttp.ClientSession, base: str) -> JsonObject:
    before, cpu_before = await metric_sums(session, base)
    await asyncio.sleep(IDLE_WINDOW_S)
    after, cpu_after = await metric_sums(session, base)
    # The two /metrics reads are not CouchDB requests; nothing else is asked meanwhile.
    return {"couchdb_requests_per_s": (after - before) / IDLE_WINDOW_S,
            "cpu_percent": 100 * (cpu_after - cpu_before) / IDLE_WINDOW_S}


async def idle_accounts(couch: Couch, count: int) -> None:
    """Account databases with a box each, written straight into CouchDB (fast), then left."""
    gate = asyncio.Semaphore(16)

    async def one(n: int) -> None:
        db = DbName(secrets.token_hex(16)).unencoded
        async with gate:
            await couch.ensure_db(db)
            await couch.put_doc(db, {"_id": secrets.token_hex(16), "pvt_type": "vmbox",
                                     "name": f"idle {n}", "mailbox": "1000"})

    await asyncio.gather(*(one(n) for n in range(count)))


async def run(couchdb_url: str | None, out: Path) -> JsonObject:
    with tempfile.TemporaryDirectory(prefix="piston-vm-bench-events-") as tmp:
        work = Path(tmp)
        server = None
        if couchdb_url is None:
            server = await devserver.start_devserver(port=0, data_dir=work / "couchdb",
                                                     admin=DEV_ADMIN)
            couchdb_url = server.url_with_credentials
        couch = Couch(CouchEndpoint.parse(couchdb_url))
        receiver = Receiver()
        await receiver.start()
        env = {"PISTON_VM_TOKEN_SECRET": secrets.token_hex(32),
               "PISTON_VM_EVENTS_DB": "piston_vm_events_bench_" + secrets.token_hex(4),
               "PISTON_VM_WEBHOOK_ALLOW_PRIVATE": "true"}
        service, _ = await start_service(port=free_port(), log_path=work / "serve.log",
                                         env=env, couchdb_url=couchdb_url)
        api = new_session()
        try:
            info = await couch.info()
            result = await _measure(couch, couchdb_url, env, service.url, api, receiver)
        finally:
            await api.close()
            await stop_service(service)
            await receiver.close()
            await couch.close()
            if server is not None:
                await server.stop()
    engine = "bundled" if server is not None else "couchdb-" + str(info.get("version", "?"))
    result["meta"] = {"couchdb": info.get("version"), "engine": engine,
                      "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
                      "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    name = "events-bundled" if server is not None else "events-couchdb-3"
    write_results(out, name, result)
    return result


def write_results(out: Path, name: str, result: JsonObject) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


async def _measure(couch: Couch, couchdb_url: str, env: dict[str, str], base: str,
                   api: aiohttp.ClientSession, receiver: Receiver) -> JsonObject:
    account_id, api_key = await create_account(couchdb_url, "events bench", "bench.test", env)
    auth = await fetch_json(api, "PUT", base + "/v2/api_auth",
                            json={"data": {"api_key": api_key}}, expect=201)
    headers = {"X-Auth-Token": str(auth["auth_token"])}
    box = await fetch_json(api, "PUT", f"{base}/v2/accounts/{account_id}/vmboxes",
                           headers=headers, json={"data": {"name": "Bench", "mailbox": "4000"}},
                           expect=201)
    box_id = str(box["data"]["id"])
    account_db = DbName(account_id).unencoded
    await couch.put_doc(account_db, {
        "_id": secrets.token_hex(16), "pvt_type": "webhook", "name": "bench", "hook":
        "notifications", "uri": receiver.url, "http_verb": "post", "format": "form-data",
        "retries": 2, "enabled": True, "custom_data": {"type": "voicemail_new"},
        "pvt_signing_secret": "whsec_" + "A" * 43 + "="})
    body, content_type = multipart_body({"data": {"caller_id_number": "+14155550100"}}, AUDIO)
    path = f"{base}/v2/accounts/{account_id}/vmboxes/{box_id}/messages"
    # Warm up: the engine's first pass over this account (design docs, checkpoints).
    for _ in range(3):
        await fetch_json(api, "PUT", path, data=body, expect=201,
                         headers={**headers, "Content-Type": content_type})
    await asyncio.sleep(3)
    figures: JsonObject = {}
    for writers, count in WRITES.items():
        answered: dict[str, float] = {}
        queue = list(range(count))
        started = time.perf_counter()

        async def writer(queue: list[int], answered: dict[str, float]) -> None:
            while queue:
                queue.pop()
                created = await fetch_json(api, "PUT", path, data=body, expect=201,
                                           headers={**headers, "Content-Type": content_type})
                answered[str(created["data"]["media_id"])] = time.perf_counter()

        await asyncio.gather(*(writer(queue, answered) for _ in range(writers)))
        deadline = time.perf_counter() + 120
        while not set(answered) <= set(receiver.arrived):
            if time.perf_counter() > deadline:
                raise BenchError(f"{len(set(answered) - set(receiver.arrived))} deliveries "
                                 "missing after 120 s")
            await asyncio.sleep(0.01)
        lags = sorted(1000 * (receiver.arrived[m] - t) for m, t in answered.items())
        last = max(receiver.arrived[m] for m in answered)
        figures[f"writers_{writers}"] = {
            "messages": count,
            "lag_ms_p50": percentile(lags, 50), "lag_ms_p99": percentile(lags, 99),
            "lag_ms_max": lags[-1],
            "deliveries_per_s": count / (last - started),
            "writes_per_s": count / (max(answered.values()) - started),
        }
        log.info("%d writers: %s", writers, figures[f"writers_{writers}"])
    await asyncio.sleep(10)  # the attempts of the last burst are logged, the engine is idle
    figures["idle_few_accounts"] = await idle_cost(api, base)
    await idle_accounts(couch, IDLE_ACCOUNTS)
    await asyncio.sleep(20)  # the engine reads the new databases once
    figures[f"idle_{IDLE_ACCOUNTS}_accounts"] = await idle_cost(api, base)
    return figures


def markdown(result: JsonObject) -> str:
    meta = result.get("meta", {})
    lines = [f"# Events benchmark ({meta.get('engine')}, {meta.get('finished_at')})", "",
             "| writers | messages | lag p50 ms | lag p99 ms | deliveries/s | writes/s |",
             "|---|---|---|---|---|---|"]
    for writers in WRITES:
        row = result[f"writers_{writers}"]
        lines.append(f"| {writers} | {row['messages']} | {row['lag_ms_p50']:.1f} | "
                     f"{row['lag_ms_p99']:.1f} | {row['deliveries_per_s']:.1f} | "
                     f"{row['writes_per_s']:.1f} |")
    lines += ["", "| idle | CouchDB requests/s | CPU % |", "|---|---|---|"]
    for key in ("idle_few_accounts", f"idle_{IDLE_ACCOUNTS}_accounts"):
        row = result[key]
        lines.append(f"| {key.replace('_', ' ')} | {row['couchdb_requests_per_s']:.2f} | "
                     f"{row['cpu_percent']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--couchdb-url", default=os.environ.get("PISTON_VM_BENCH_COUCHDB_URL"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    try:
        asyncio.run(run(args.couchdb_url, args.out))
    except (BenchError, aiohttp.ClientError) as exc:
        log.error("events benchmark failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
