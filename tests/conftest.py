"""Fixtures: one real CouchDB-protocol server per session, a fresh account per test.

Set PISTON_VM_TEST_COUCHDB_URL=http://user:pass@host:port to run against another CouchDB (for
example Apache CouchDB 3.x) instead of starting the bundled server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from piston_vm.app import create_app
from piston_vm.core import tokens
from piston_vm.core.config import CouchEndpoint, Settings
from piston_vm.storage import devserver
from piston_vm.storage.accounts import Account
from piston_vm.storage.couch import CouchClient
from piston_vm.storage.stores import Stores
from tests.helpers import Api

TEST_TOKEN_SECRET = "piston-vm-test-secret"


@pytest.fixture(scope="session")
async def couchdb_endpoint(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[CouchEndpoint]:
    external = os.environ.get("PISTON_VM_TEST_COUCHDB_URL")
    if external:
        yield CouchEndpoint.parse(external)
        return
    data_dir: Path = tmp_path_factory.mktemp("couchdb")
    server = await devserver.start_devserver(data_dir=data_dir, admin=("admin", "secret"))
    try:
        yield CouchEndpoint(server.url, "admin", "secret")
    finally:
        await server.stop()


@pytest.fixture(scope="session")
def settings(couchdb_endpoint: CouchEndpoint) -> Settings:
    return Settings(
        couchdb=couchdb_endpoint,
        token_secret=TEST_TOKEN_SECRET,
        node_name="piston_vm@test",
        version="4.3.142",
        # Tests delete accounts and change retention and must see it at once.
        account_cache_ttl_s=0,
        # The event engine runs only in the tests about it (tests/test_events.py), each with
        # an engine database of its own.
        events=False,
    )


@pytest.fixture(scope="session")
async def stores(settings: Settings) -> AsyncIterator[Stores]:
    """Direct CouchDB access for fixtures and for reading stored documents in assertions."""
    assert settings.couchdb is not None
    couch = CouchClient(settings.couchdb, settings.couchdb_timeout_s)
    await couch.start()
    built = Stores.build(settings, couch)
    await built.accounts.ensure_accounts_db()
    try:
        yield built
    finally:
        await couch.close()


AppFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


@pytest.fixture
async def make_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    settings: Settings,
) -> AppFactory:
    async def make(**overrides: object) -> TestClient:  # type: ignore[type-arg]
        return await aiohttp_client(create_app(settings.with_overrides(**overrides)))

    return make


@pytest.fixture
async def api(make_client: AppFactory) -> Api:
    return Api(await make_client())


@dataclass(frozen=True)
class Tenant:
    account: Account
    api_key: str
    token: str

    @property
    def id(self) -> str:
        return self.account.id

    @property
    def db(self) -> str:
        return self.account.db.unencoded


MakeAccount = Callable[..., Awaitable[Tenant]]


@pytest.fixture
def make_account(stores: Stores) -> MakeAccount:
    async def make(
        name: str = "Test Account",
        realm: str | None = "sip.example.net",
        parent: Tenant | None = None,
        superduper: bool = False,
        **extra: object,
    ) -> Tenant:
        account, api_key = await stores.accounts.create(
            name, realm, parent.account if parent else None, superduper, extra=dict(extra)
        )
        token = tokens.issue(TEST_TOKEN_SECRET, account.id, "cb_api_auth", 3600)
        return Tenant(account, api_key, token)

    return make


@pytest.fixture
async def account(make_account: MakeAccount) -> Tenant:
    return await make_account()
