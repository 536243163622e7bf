"""The account's live event stream (docs/events.md "The live stream"): Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from piston_vm.api import account_of
from piston_vm.core.events import Event
from piston_vm.web.keys import CONTEXT, LIFECYCLE, LIVE_FEED, SETTINGS

# How often a stream looks up from its queue to see whether the service is draining.
DRAIN_CHECK_S = 1.0


def _frame(event: Event) -> bytes:
    data = json.dumps(dict(event.payload), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.name}\ndata: {data}\n\n".encode()


async def event_stream(request: web.Request) -> web.StreamResponse:
    account = account_of(request)
    ctx = request[CONTEXT]
    subaccounts = str(ctx.value("include_subaccounts")).lower() == "true"
    last_event_id = request.headers.get("Last-Event-ID") or ctx.query.get("last_event_id")
    feed = request.app[LIVE_FEED]
    lifecycle = request.app[LIFECYCLE]
    heartbeat_s = request.app[SETTINGS].events_heartbeat_s
    # The stream ends when its token does: a reconnect with the same token is refused (401),
    # so a stream never outlives the right to read it.
    expires_at = ctx.claims.expires_at if ctx.claims is not None else None
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        # nginx and friends buffer answers unless told not to.
        "X-Accel-Buffering": "no",
    })
    # Subscribe before reading what was missed: nothing stored in between falls through.
    subscription = await feed.subscribe(account.id, subaccounts)
    try:
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        await response.write(b": piston_vm events\nretry: 2000\n\n")
        sent: set[str] = set()
        if last_event_id:
            for missed in await feed.missed(account.id, subaccounts, last_event_id):
                sent.add(missed.id)
                await response.write(_frame(missed))
        written_at = time.monotonic()
        while not lifecycle.draining and (expires_at is None or time.time() < expires_at):
            try:
                event = await asyncio.wait_for(subscription.queue.get(), DRAIN_CHECK_S)
            except TimeoutError:
                if time.monotonic() - written_at >= heartbeat_s:
                    await response.write(b": keepalive\n\n")
                    written_at = time.monotonic()
                continue
            if event is None:
                break  # too far behind: the client reconnects with Last-Event-ID
            if event.id in sent:
                continue
            await response.write(_frame(event))
            written_at = time.monotonic()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.unsubscribe(subscription)
    return response
