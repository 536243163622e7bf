"""The live stream's source: the engine database's new voicemail events, shared by every
stream a process has open, and the stored events a reconnecting client missed (docs/events.md
"The live stream")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from piston_vm.core.events import NOTIFICATION, Event
from piston_vm.storage.stores import Stores

log = logging.getLogger(__name__)

FEED_WAIT_S = 10.0
BATCH = 100
# A stream whose reader is this far behind is closed: the client reconnects with
# Last-Event-ID and catches up from the stored events instead of growing our memory.
QUEUE_LIMIT = 1000
BACKLOG_LIMIT = 10_000
RETRY_S = 1.0


@dataclass(eq=False, slots=True)
class Subscription:
    account_id: str
    subaccounts: bool
    queue: asyncio.Queue[Event | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))

    def wants(self, event: Event) -> bool:
        if event.category != NOTIFICATION:
            return False
        return event.account_id == self.account_id or (
            self.subaccounts and self.account_id in event.tree)

    def offer(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Too slow: end the stream (None), after emptying room for the end mark.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)


class LiveFeed:
    """One long poll of the engine database per process, only while streams are open."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self._subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._since: str | None = None
        self._ready = asyncio.Event()
        self._ensured = False

    async def subscribe(self, account_id: str, subaccounts: bool) -> Subscription:
        """A subscription that sees every event stored from now on."""
        if not self._ensured:
            # The engine may run in another process (`piston-vm events`) that has not
            # started yet: the stream waits for events all the same.
            await self.stores.events.ensure()
            self._ensured = True
        subscription = Subscription(account_id, subaccounts)
        self._subscriptions.add(subscription)
        if self._task is None or self._task.done():
            self._ready.clear()
            self._task = asyncio.create_task(self._tail(), name="live-feed")
        await self._ready.wait()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def missed(
        self, account_id: str, subaccounts: bool, last_event_id: str
    ) -> list[Event]:
        """Stored events after `last_event_id` for this stream, oldest first ([] when that
        event is not known, or too old to be kept)."""
        last = await self.stores.events.get(last_event_id)
        if last is None or last.get("pvt_type") != "event":
            return []
        docs = await self.stores.events.events_of(
            account_id, int(last.get("t") or 0), BACKLOG_LIMIT, subaccounts)
        # Events stored in the same millisecond as the last one may come again: ids are
        # stable, so a client drops what it has seen; none is skipped.
        return [Event.from_doc(doc) for doc in docs if doc.get("_id") != last_event_id]

    async def _tail(self) -> None:
        while True:
            try:
                if self._since is None or not self._subscriptions:
                    _, self._since = await self.stores.events.event_changes("now", 1, 0)
                self._ready.set()
                rows, last_seq = await self.stores.events.event_changes(
                    self._since, BATCH, FEED_WAIT_S)
                self._since = last_seq
                for row in rows:
                    doc = row.get("doc")
                    if not isinstance(doc, dict) or doc.get("pvt_type") != "event":
                        continue
                    event = Event.from_doc(doc)
                    for subscription in list(self._subscriptions):
                        if subscription.wants(event):
                            subscription.offer(event)
                if not self._subscriptions:
                    self._since = None
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("live feed: reading the engine database failed")
                self._ready.set()
                await asyncio.sleep(RETRY_S)
