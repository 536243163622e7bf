"""create_app(settings): the one place that wires the service together; no I/O here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from piston_vm.api.routes import ENDPOINTS
from piston_vm.core.config import Settings
from piston_vm.core.validation import SchemaValidator
from piston_vm.services.downloads import DownloadService
from piston_vm.services.legacy import LegacyMigrator
from piston_vm.services.messages import MessageService
from piston_vm.services.moves import RepairSchedule
from piston_vm.services.vmboxes import VmboxService
from piston_vm.storage.couch import CouchClient
from piston_vm.storage.stores import Stores
from piston_vm.web.health import healthz
from piston_vm.web.keys import (
    DOWNLOADS,
    MESSAGES,
    MIGRATOR,
    MOVE_REPAIRS,
    SETTINGS,
    STORES,
    VALIDATOR,
    VMBOXES,
)
from piston_vm.web.middlewares import add_common_headers, error_middleware, pipeline_middleware
from piston_vm.web.routing import register
from piston_vm.web.throttle import install_login_throttle

log = logging.getLogger(__name__)

# Request bodies are read by our own bounded readers (413 in the platform's shape), so
# aiohttp's limit only has to stay out of their way.
_FRAMEWORK_BODY_LIMIT_SLACK_BYTES = 1024 * 1024


async def couchdb_ctx(app: web.Application) -> AsyncIterator[None]:
    """The CouchDB client lives exactly as long as the app; startup fails fast without it."""
    settings = app[SETTINGS]
    if settings.couchdb is None:
        raise RuntimeError("no CouchDB configured (PISTON_VM_COUCHDB_URL or --couchdb-url)")
    couch = CouchClient(settings.couchdb, settings.couchdb_timeout_s, settings.couchdb_w)
    await couch.start()
    try:
        stores = Stores.build(settings, couch)
        await stores.accounts.ensure_accounts_db()
        app[STORES] = stores
        migrator = LegacyMigrator(stores, settings)
        app[MIGRATOR] = migrator
        parts = (stores, app[VALIDATOR], settings, migrator, app[MOVE_REPAIRS])
        app[MESSAGES] = MessageService(*parts)
        app[VMBOXES] = VmboxService(*parts)
        app[DOWNLOADS] = DownloadService(app[MESSAGES])
        yield
    finally:
        await couch.close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, pipeline_middleware],
        client_max_size=settings.max_upload_bytes + _FRAMEWORK_BODY_LIMIT_SLACK_BYTES,
    )
    app[SETTINGS] = settings
    app[VALIDATOR] = SchemaValidator(
        settings.schemas_dir, settings.max_pin_length, settings.transcribe_default
    )
    app[MOVE_REPAIRS] = RepairSchedule(settings.move_repair_interval_s)
    install_login_throttle(app)
    app.cleanup_ctx.append(couchdb_ctx)
    app.on_response_prepare.append(add_common_headers)
    app.router.add_get("/healthz", healthz)
    register(app, ENDPOINTS)
    return app
