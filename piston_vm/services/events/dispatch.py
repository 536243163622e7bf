"""Handing stored events to their consumers (webhooks, e-mail), at least once (docs/events.md
"Delivery and checkpoints").

A shard's dispatcher reads the engine database's `_changes` and gives each event of its shard
to every consumer, many events at a time: a slow receiver's retries must not hold up the
others. Its checkpoint only moves past an event once every consumer has finished with it and
with every event before it, so a crash redelivers (with the same event id) what was not done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from piston_vm.core.events import Event
from piston_vm.core.metrics import Metrics
from piston_vm.services.events.follower import IDLE_CHECKPOINT_S, LostShard, shard_of
from piston_vm.storage.couch import DocConflict
from piston_vm.storage.stores import Stores

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

FEED_WAIT_S = 10.0
BATCH = 100
# Events being delivered at once by one shard; more wait for room.
MAX_IN_FLIGHT = 256
CHECKPOINT_EVERY_S = 0.5
# A consumer that fails (CouchDB briefly gone while it logs an attempt) is asked again.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0


class Consumer(Protocol):
    """Webhooks and e-mail: done with the event when `handle` returns (its answer, if any,
    is the consumer's own business)."""

    async def handle(self, event: Event) -> object: ...


class _Watermark:
    """The last sequence below which every event is done."""

    def __init__(self, since: str) -> None:
        self.done = since
        self._pending: deque[list[Any]] = deque()  # [seq, unfinished events]

    def add(self, seq: str, events: int) -> list[Any]:
        entry = [seq, events]
        self._pending.append(entry)
        self._advance()
        return entry

    def finish(self, entry: list[Any]) -> None:
        entry[1] -= 1
        self._advance()

    def _advance(self) -> None:
        while self._pending and self._pending[0][1] <= 0:
            self.done = self._pending.popleft()[0]


class Dispatcher:
    def __init__(self, stores: Stores, shards: int, shard: int,
                 consumers: Sequence[Consumer], metrics: Metrics | None = None) -> None:
        self.stores = stores
        self.metrics = metrics or Metrics()
        self.shards = shards
        self.shard = shard
        self.consumers = consumers
        self.handled = 0
        self._room = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._checkpoint: JsonObject | None = None
        self._mark: _Watermark | None = None
        self.ready = asyncio.Event()

    async def _checkpoint_doc(self) -> JsonObject:
        doc_id = f"dispatch:{self.shard}"
        doc = await self.stores.events.get(doc_id)
        if doc is None:
            # First start: events stored from now on (there are none before the engine).
            _, now_seq = await self.stores.events.event_changes("now", 1, 0)
            doc = {"_id": doc_id, "since": now_seq}
            if not await self.stores.events.try_save(doc):
                raise LostShard(doc_id)
        return doc

    async def prepare(self) -> None:
        """Know where delivery starts before the follower stores any event (on the first
        start that is "now": an event stored before it would never be delivered)."""
        if self._checkpoint is None:
            self._checkpoint = await self._checkpoint_doc()

    async def run(self) -> None:
        await self.prepare()
        checkpoint = self._checkpoint
        assert checkpoint is not None
        mark = self._mark = _Watermark(str(checkpoint["since"]))
        since = mark.done
        saver = asyncio.create_task(self._keep_saving(checkpoint, mark))
        self.ready.set()
        try:
            while True:
                if saver.done():
                    saver.result()  # raises LostShard
                rows, last_seq = await self.stores.events.event_changes(since, BATCH, FEED_WAIT_S)
                for row in rows:
                    doc = row.get("doc")
                    seq = str(row.get("seq"))
                    if not isinstance(doc, dict) or doc.get("pvt_type") != "event" \
                            or row.get("deleted") \
                            or shard_of(str(doc.get("account_id")), self.shards) != self.shard:
                        mark.add(seq, 0)
                        continue
                    await self._room.acquire()
                    entry = mark.add(seq, 1)
                    stored_ms = doc.get("t")
                    task = asyncio.create_task(self._handle(
                        Event.from_doc(doc), stored_ms if isinstance(stored_ms, int) else None,
                        mark, entry))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                if not rows:
                    mark.add(last_seq, 0)
                since = last_seq
        finally:
            saver.cancel()
            for task in list(self._tasks):
                task.cancel()

    async def _handle(self, event: Event, stored_ms: int | None, mark: _Watermark,
                      entry: list[Any]) -> None:
        try:
            await asyncio.gather(*(self._consume(c, event) for c in self.consumers))
            self.handled += 1
            if stored_ms is not None:
                self.metrics.event_handled(max(0.0, time.time() - stored_ms / 1000))
            mark.finish(entry)
        finally:
            self._room.release()

    async def _consume(self, consumer: Consumer, event: Event) -> None:
        delay = RETRY_FIRST_S
        while True:
            try:
                await consumer.handle(event)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed on event %s; trying again in %.1f s",
                              type(consumer).__name__, event.id, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _keep_saving(self, checkpoint: JsonObject, mark: _Watermark) -> None:
        """Save the watermark when it moved past events of ours (or now and then): saving on
        every change would itself be a change of the engine database to read."""
        saved_at = time.monotonic()
        handled_at_save = self.handled
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            moved = mark.done != checkpoint["since"]
            ours = self.handled != handled_at_save
            if moved and (ours or time.monotonic() - saved_at > IDLE_CHECKPOINT_S):
                await self._save(checkpoint, mark.done)
                saved_at = time.monotonic()
                handled_at_save = self.handled

    async def _save(self, checkpoint: JsonObject, seq: str) -> None:
        previous = checkpoint.get("since")
        checkpoint["since"] = seq
        try:
            await self.stores.events.save(checkpoint)
        except DocConflict:
            checkpoint["since"] = previous
            raise LostShard(checkpoint["_id"]) from None

    async def save_now(self) -> None:
        """On a clean stop: record how far delivery got (what is unfinished is redelivered)."""
        if self._checkpoint is not None and self._mark is not None \
                and self._mark.done != self._checkpoint["since"]:
            await self._save(self._checkpoint, self._mark.done)
