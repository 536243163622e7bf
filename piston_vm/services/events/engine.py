"""The event engine: shards, their leases, and the worker that runs the shards it holds
(docs/events.md "Several workers").

Accounts are split into PISTON_VM_EVENT_SHARDS shards. A worker holds a shard by a lease
document in the engine database; CouchDB's MVCC decides between workers that reach for the
same one (only one write at a given revision wins). A lease lives PISTON_VM_EVENT_LEASE_S
seconds and is renewed every third of that, so a dead worker's shards are taken over within
one lease time plus one renewal (20 s by default). A worker that stops cleanly gives its
leases back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Sequence
from typing import Any

from piston_vm.core.config import Settings
from piston_vm.core.metrics import Metrics
from piston_vm.services.events.dispatch import Consumer, Dispatcher
from piston_vm.services.events.follower import Follower, LostShard, baseline_time
from piston_vm.storage.stores import Stores

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

PRUNE_EVERY_S = 3600.0


class Leases:
    def __init__(self, stores: Stores, shards: int, ttl_s: float, worker_id: str) -> None:
        self.stores = stores
        self.shards = shards
        self.ttl_s = ttl_s
        self.worker_id = worker_id
        # The lease documents this worker wrote last, at their revisions.
        self._held: dict[int, JsonObject] = {}

    async def claim(self) -> set[int]:
        """Renew this worker's leases and take those that are free or expired.

        A lease this worker holds is renewed at the revision it last wrote, without reading
        it first; only a conflict (someone else wrote it) sends it back to reading.
        """
        owned: set[int] = set()
        now = time.time()
        for shard in range(self.shards):
            doc_id = f"lease:{shard}"
            doc = self._held.pop(shard, None)
            if doc is None:
                doc = await self.stores.events.get(doc_id) or {"_id": doc_id}
                if doc.get("owner") not in (None, self.worker_id) \
                        and doc.get("expires", 0) > now:
                    continue
            doc.update(owner=self.worker_id, expires=now + self.ttl_s)
            if await self.stores.events.try_save(doc):
                owned.add(shard)
                self._held[shard] = doc
        return owned

    async def release(self, shards: set[int]) -> None:
        self._held.clear()
        for shard in shards:
            doc = await self.stores.events.get(f"lease:{shard}")
            if doc is not None and doc.get("owner") == self.worker_id:
                doc["expires"] = 0
                await self.stores.events.try_save(doc)


class _Shard:
    def __init__(self, follower: Follower, dispatcher: Dispatcher) -> None:
        self.follower = follower
        self.dispatcher = dispatcher
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        await self.dispatcher.prepare()
        async with asyncio.TaskGroup() as group:
            group.create_task(self.follower.run())
            group.create_task(self.dispatcher.run())


class EventEngine:
    """`start()` and `stop()` around a process's life (`piston-vm events`, or `serve`)."""

    def __init__(self, stores: Stores, settings: Settings, consumers: Sequence[Consumer],
                 metrics: Metrics | None = None) -> None:
        self.stores = stores
        self.metrics = metrics or Metrics()
        self.settings = settings
        self.consumers = list(consumers)
        self.worker_id = f"{settings.node_name}:{os.getpid()}:{secrets.token_hex(4)}"
        self.leases = Leases(stores, settings.event_shards, settings.event_lease_s,
                             self.worker_id)
        self.shards: dict[int, _Shard] = {}
        self._task: asyncio.Task[None] | None = None
        self._baseline = 0
        self._pruned_at = 0.0
        self._all_held = asyncio.Event()

    @property
    def derived(self) -> int:
        return sum(s.follower.derived for s in self.shards.values())

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until every shard is held by this worker and following (one worker alone)."""
        async def ready() -> None:
            await self._all_held.wait()
            for shard in self.shards.values():
                await shard.follower.ready.wait()
                await shard.dispatcher.ready.wait()

        await asyncio.wait_for(ready(), timeout_s)

    async def start(self) -> None:
        await self.stores.events.ensure()
        self._baseline = await baseline_time(self.stores)
        self._task = asyncio.create_task(self._run(), name="event-engine")
        log.info("event engine %s started (%d shards)", self.worker_id,
                 self.settings.event_shards)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for shard in self.shards.values():
            await self._stop_shard(shard)
        with contextlib.suppress(Exception):
            await self.leases.release(set(self.shards))
        self.shards.clear()

    async def _stop_shard(self, shard: _Shard) -> None:
        if shard.task is not None:
            shard.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await shard.task
        with contextlib.suppress(Exception):
            await shard.dispatcher.save_now()

    async def _run(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event engine: lease round failed; trying again")
            await asyncio.sleep(self.settings.event_lease_s / 3)

    async def _tick(self) -> None:
        owned = await self.leases.claim()
        for number in list(self.shards):
            if number not in owned:
                log.info("event engine: shard %d is another worker's now", number)
                await self._stop_shard(self.shards.pop(number))
        for number in owned:
            shard = self.shards.get(number)
            if shard is None or shard.task is None or shard.task.done():
                if shard is not None and shard.task is not None:
                    self._report(number, shard.task)
                self.shards[number] = self._start_shard(number)
        if len(self.shards) == self.settings.event_shards:
            self._all_held.set()
        else:
            self._all_held.clear()
        if 0 in owned and time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            keep_ms = self.settings.events_keep_h * 3_600_000
            pruned = await self.stores.events.prune(int(time.time() * 1000 - keep_ms))
            if pruned:
                log.info("event engine: %d events older than %.0f h removed", pruned,
                         self.settings.events_keep_h)

    def _start_shard(self, number: int) -> _Shard:
        follower = Follower(self.stores, self.settings, number, self._baseline, self.metrics)
        dispatcher = Dispatcher(self.stores, self.settings.event_shards, number,
                                self.consumers, self.metrics)
        shard = _Shard(follower, dispatcher)
        shard.task = asyncio.create_task(shard.run(), name=f"event-shard-{number}")
        return shard

    @staticmethod
    def _report(number: int, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        problem = task.exception()
        if problem is None:
            return
        lost = isinstance(problem, BaseExceptionGroup) and problem.subgroup(LostShard)
        if lost or isinstance(problem, LostShard):
            log.info("event engine: shard %d was taken over", number)
        else:
            log.error("event engine: shard %d stopped (%r); restarting it", number, problem)
