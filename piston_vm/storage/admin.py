"""Server-level chores for the CLI and startup, through aiocouch: credential check, accounts."""

from __future__ import annotations

import aiocouch

from piston_vm.core.config import CouchEndpoint, Settings
from piston_vm.storage.accounts import Account
from piston_vm.storage.couch import CouchClient
from piston_vm.storage.stores import Stores


class CouchDBUnusable(Exception):
    """CouchDB cannot be reached, or refuses our credentials: startup must stop, clearly."""


async def check_server(endpoint: CouchEndpoint) -> None:
    """Fail fast with a message an operator can act on."""
    try:
        async with aiocouch.CouchDB(
            endpoint.url, user=endpoint.user, password=endpoint.password
        ) as couchdb:
            await couchdb.check_credentials()
            await couchdb.info()
    except aiocouch.UnauthorizedError as exc:
        raise CouchDBUnusable(
            f"CouchDB at {endpoint.url} refused the credentials for user {endpoint.user!r}"
        ) from exc
    except OSError as exc:
        raise CouchDBUnusable(f"CouchDB at {endpoint.url} cannot be reached: {exc}") from exc
    except Exception as exc:
        raise CouchDBUnusable(f"CouchDB at {endpoint.url} is not usable: {exc!r}") from exc


async def create_account(
    settings: Settings,
    name: str,
    realm: str | None = None,
    parent_id: str | None = None,
    superduper: bool = False,
) -> tuple[Account, str]:
    assert settings.couchdb is not None
    couch = CouchClient(settings.couchdb, settings.couchdb_timeout_s, settings.couchdb_w)
    await couch.start()
    try:
        stores = Stores.build(settings, couch)
        parent = None
        if parent_id is not None:
            parent = await stores.accounts.get(parent_id)
            if parent is None:
                raise CouchDBUnusable(f"parent account {parent_id} does not exist")
        return await stores.accounts.create(name, realm, parent, superduper)
    finally:
        await couch.close()
