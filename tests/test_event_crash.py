"""Killing the event worker at any moment loses no event, and a redelivery has the id of the
first delivery (docs/events.md "Delivery and checkpoints")."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest

from piston_vm.core.config import Settings
from piston_vm.storage.stores import Stores
from tests.conftest import AppFactory, Tenant
from tests.events_support import Receiver, add_hook, engine_overrides, start_receiver
from tests.helpers import Api
from tests.test_events import AUDIO
from tests.test_message_support import create_box, create_message_with_audio

MESSAGES = 24
KILL_AFTER = 8


def worker_env(settings: Settings, overrides: dict[str, Any]) -> dict[str, str]:
    couch = settings.couchdb
    assert couch is not None
    scheme, _, rest = couch.url.partition("://")
    login = f"{quote(couch.user or '', safe='')}:{quote(couch.password or '', safe='')}@"
    return {**os.environ,
            "PISTON_VM_COUCHDB_URL": f"{scheme}://{login}{rest}",
            "PISTON_VM_EVENTS_DB": overrides["events_db"],
            "PISTON_VM_WEBHOOK_ALLOW_PRIVATE": "true",
            "PISTON_VM_WEBHOOK_BACKOFF_S": "0.05",
            "PISTON_VM_EVENT_LEASE_S": "1.5",
            "PISTON_VM_ACCOUNT_CACHE_TTL_S": "0"}


async def start_worker(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "piston_vm", "events", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def following(stores: Stores, events_db: str, shards: int) -> None:
    """Until the first worker knows where every shard starts reading (what is written before
    then is not news to it)."""
    wanted = [f"{kind}:{n}" for kind in ("feed", "dispatch") for n in range(shards)]
    for _ in range(600):
        if await stores.couch.db_exists(events_db):
            rows = await stores.couch.all_docs(events_db, wanted)
            if all(row.get("doc") for row in rows):
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the event worker did not start following")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await start_receiver()
    # Slow answers: deliveries are in flight when the worker dies.
    started.delay_s = 0.05
    try:
        yield started
    finally:
        await started.server.close()


async def test_a_killed_worker_loses_nothing_and_redelivers_with_the_same_ids(
    make_client: AppFactory, settings: Settings, account: Tenant, stores: Stores,
    receiver: Receiver,
) -> None:
    overrides = engine_overrides()
    env = worker_env(settings, overrides)
    # The API process runs no engine: the workers are separate processes.
    api = Api(await make_client(events=False, events_db=overrides["events_db"]))
    await add_hook(stores, account, receiver.url(), custom_data={"type": "voicemail_new"})
    box = await create_box(api, account, "5000")
    worker = await start_worker(env)
    try:
        await following(stores, overrides["events_db"], settings.event_shards)
        probe = await create_message_with_audio(api, account, box, AUDIO)
        await receiver.wait_for(1, voicemail_id=probe["media_id"], timeout_s=60)
        created = [probe["media_id"]]
        for n in range(MESSAGES):
            created.append((await create_message_with_audio(api, account, box, AUDIO))
                           ["media_id"])
            if n == KILL_AFTER:
                worker.send_signal(signal.SIGKILL)
                await worker.wait()
                worker = await start_worker(env)
        # Redeliveries count as requests: wait for every message, not for a number.
        ids_of: dict[str, set[str]] = defaultdict(set)
        for _ in range(600):
            ids_of.clear()
            for delivery in receiver.on("/hook"):
                ids_of[delivery.fields["voicemail_id"]].add(delivery.headers["webhook-id"])
            if set(created) <= set(ids_of):
                break
            await asyncio.sleep(0.1)
        assert sorted(ids_of) == sorted(created)
        assert all(len(ids) == 1 for ids in ids_of.values()), ids_of
        print(f"crash: {len(receiver.on('/hook'))} deliveries of {len(created)} events")
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            await asyncio.wait_for(worker.wait(), 30)
    assert worker.returncode == 0
