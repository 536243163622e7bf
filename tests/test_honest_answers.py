"""Honest answers (docs/integrity.md): timeouts say 503 and a keyed retry stores nothing new;
oversized input is a 400/413, never a 5xx."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from piston_vm.core.config import Settings
from piston_vm.storage.stores import Stores
from tests.conftest import AppFactory, Tenant
from tests.helpers import Api, assert_success
from tests.test_faults import Couch, Env, make_env
from tests.test_faults import couch as couch
from tests.test_message_support import (
    create_box,
    json_part,
    messages_path,
    multipart,
    must_stored,
    update_stored,
    vmboxes_path,
)

JsonObject = dict[str, Any]


@pytest.fixture
async def env(couch: Couch, make_client: AppFactory, settings: Settings) -> AsyncIterator[Env]:
    async for made in make_env(couch, make_client, settings):
        yield made


async def keyed_create(api: Api, tenant: Tenant, box: str, key: str,
                       audio: bytes) -> tuple[int, Any]:
    body, ctype = multipart(json_part({"caller_id_number": "1001"}),
                            ("audio/mpeg", audio, "voice.mp3"))
    return await send_large(api, "PUT", messages_path(tenant, box), tenant, body,
                            {"Content-Type": ctype, "Idempotency-Key": key})


async def send_large(api: Api, method: str, path: str, tenant: Tenant, body: bytes,
                     headers: dict[str, str]) -> tuple[int, Any]:
    """Like Api.call, for bodies aiohttp wants as a stream."""
    resp = await api.client.request(method, path, data=io.BytesIO(body),
                                    headers={"X-Auth-Token": tenant.token, **headers})
    raw = await resp.read()
    return resp.status, json.loads(raw) if raw else None


def envelope(data: JsonObject) -> bytes:
    return json.dumps({"data": data}).encode()


async def live_ids(stores: Stores, tenant: Tenant, box: str) -> list[str]:
    ids: list[str] = []
    for modb in await stores.messages.all_modbs(tenant.account.db):
        ids += await stores.messages.box_message_ids(modb, box)
    return ids


async def test_a_create_retried_with_its_key_returns_the_first_message(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    audio = secrets.token_bytes(2048)
    first_status, first = await keyed_create(api, account, box, "order-42", audio)
    assert first_status == 201, first
    again_status, again = await keyed_create(api, account, box, "order-42", audio)
    assert again_status == 201, again
    assert again is not None
    assert first is not None
    assert again["data"] == first["data"]
    other_status, other = await keyed_create(api, account, box, "order-43", audio)
    assert other_status == 201
    assert other is not None
    assert other["data"]["media_id"] != first["data"]["media_id"]
    assert sorted(await live_ids(stores, account, box)) == sorted(
        [first["data"]["media_id"], other["data"]["media_id"]])
    # The same key for another box is another message.
    box2 = await create_box(api, account, "1001")
    status, elsewhere = await keyed_create(api, account, box2, "order-42", audio)
    assert status == 201
    assert elsewhere is not None
    assert elsewhere["data"]["media_id"] != first["data"]["media_id"]


async def test_a_key_older_than_a_day_creates_a_new_message(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    status, first = await keyed_create(api, account, box, "daily", b"audio")
    assert status == 201, first
    first_id = first["data"]["media_id"]
    stored_doc = await must_stored(stores, account, first_id)
    await update_stored(stores, account, first_id,
                        pvt_created=stored_doc["pvt_created"] - 86_401)
    status, later = await keyed_create(api, account, box, "daily", b"audio")
    assert status == 201, later
    assert later["data"]["media_id"] != first_id
    assert sorted(await live_ids(stores, account, box)) == sorted(
        [first_id, later["data"]["media_id"]])


async def test_concurrent_creates_with_one_key_store_one_message(
    api: Api, account: Tenant, stores: Stores
) -> None:
    box = await create_box(api, account)
    audio = secrets.token_bytes(64 * 1024)
    results = await asyncio.gather(*(keyed_create(api, account, box, "same", audio)
                                     for _ in range(10)))
    assert {status for status, _ in results} == {201}, results
    ids = {body["data"]["media_id"] for _, body in results if body}
    assert len(ids) == 1
    assert await live_ids(stores, account, box) == list(ids)


async def test_an_unusable_key_is_a_400(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    status, body = await keyed_create(api, account, box, "k" * 300, b"audio")
    assert status == 400, body


async def test_a_create_whose_outcome_is_unknown_answers_503_and_its_retry_stores_once(
    env: Env,
) -> None:
    api, tenant = env.api, env.tenant
    box = await create_box(api, tenant)
    audio = secrets.token_bytes(2 * 1024 * 1024)
    outcomes = []
    for round_number in range(4):
        key = f"call-{round_number}"
        pending = asyncio.create_task(keyed_create(api, tenant, box, key, audio))
        await asyncio.sleep(0.01 * round_number)
        # CouchDB freezes with the write in its socket buffer: it stores it once it thaws,
        # after the service has stopped waiting.
        env.couch.signal(signal.SIGSTOP)
        try:
            status, body = await asyncio.wait_for(pending, 10)
        finally:
            env.couch.signal(signal.SIGCONT)
        assert status in (201, 503), body
        outcomes.append(status)
        if status == 503:
            assert body is not None
            assert body["error"] == "503"
        retry_status, retry = await keyed_create(api, tenant, box, key, audio)
        assert retry_status == 201, retry
    print(f"keyed creates under a frozen CouchDB: first answers {outcomes}")
    ids = await live_ids(env.stores, tenant, box)
    assert len(ids) == 4, f"{len(ids)} messages for 4 keys (first answers {outcomes})"


async def test_oversized_free_text_is_a_400(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    for field in ("from", "to", "call_id"):
        status, body = await send_large(api, "PUT", messages_path(account, box), account,
                                        envelope({field: "x" * 2_500_000}),
                                        {"Content-Type": "application/json"})
        assert status == 400, body
        assert field in body["data"], body["data"]
    resp, body = await api.call("PUT", messages_path(account, box), account.token,
                                {"from": "1001@example.net", "call_id": "c" * 256})
    assert_success(resp, body, 201)


async def test_a_document_couchdb_refuses_for_size_is_a_413(
    make_client: AppFactory, account: Tenant
) -> None:
    api = Api(await make_client(max_upload_bytes=20_000_000))
    status, body = await send_large(api, "PUT", vmboxes_path(account), account, envelope(
        {"name": "big", "mailbox": "4000", "notes": "n" * 9_000_000}),
        {"Content-Type": "application/json"})
    assert status == 413, body
    assert body["error"] == "413"
