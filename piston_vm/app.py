"""create_app(settings): the one place that wires the service together; no I/O here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.typedefs import Middleware

from piston_vm import __version__
from piston_vm.api.routes import ENDPOINTS
from piston_vm.core.config import Settings
from piston_vm.core.metrics import Metrics, PrometheusMetrics
from piston_vm.core.validation import SchemaValidator
from piston_vm.outbound.webhooks import WebhookClient
from piston_vm.services.downloads import DownloadService
from piston_vm.services.email_notify import EmailNotifier
from piston_vm.services.events.dispatch import Consumer
from piston_vm.services.events.engine import EventEngine
from piston_vm.services.events.stream import LiveFeed
from piston_vm.services.events.webhooks import WebhookDeliverer
from piston_vm.services.legacy import LegacyMigrator
from piston_vm.services.messages import MessageService
from piston_vm.services.moves import RepairSchedule
from piston_vm.services.notifications import DeliveryStatus
from piston_vm.services.transcoding import Transcoder
from piston_vm.services.vmboxes import VmboxService
from piston_vm.services.webhooks import WebhookService
from piston_vm.storage.couch import CouchClient
from piston_vm.storage.stores import Stores
from piston_vm.web.health import HEALTHZ_PATH, READYZ_PATH, healthz, readyz
from piston_vm.web.inbox import add_inbox_routes
from piston_vm.web.keys import (
    DELIVERY_STATUS,
    DOWNLOADS,
    ENGINE,
    LIFECYCLE,
    LIVE_FEED,
    MESSAGES,
    METRICS,
    MIGRATOR,
    MOVE_REPAIRS,
    SETTINGS,
    STORES,
    VALIDATOR,
    VMBOXES,
    WEBHOOKS,
)
from piston_vm.web.lifecycle import Lifecycle
from piston_vm.web.metrics import METRICS_PATH, metrics_only_app, metrics_page
from piston_vm.web.middlewares import add_common_headers, error_middleware, pipeline_middleware
from piston_vm.web.observe import observe_middleware
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
    metrics = app[METRICS]
    couch = CouchClient(settings.couchdb, settings.couchdb_timeout_s, settings.couchdb_w, metrics)
    metrics.watch_writes_short_of_quorum(lambda: couch.writes_short_of_quorum)
    await couch.start()
    # One FFmpeg pool per process (docs/audio.md); its jobs end before the CouchDB client.
    transcoder = Transcoder(settings.transcode_workers)
    try:
        stores = Stores.build(settings, couch)
        await stores.accounts.ensure_accounts_db()
        app[STORES] = stores
        migrator = LegacyMigrator(stores, settings, transcoder)
        app[MIGRATOR] = migrator
        parts = (stores, app[VALIDATOR], settings, migrator, app[MOVE_REPAIRS], transcoder)
        app[MESSAGES] = MessageService(*parts)
        app[VMBOXES] = VmboxService(*parts)
        app[DOWNLOADS] = DownloadService(app[MESSAGES])
        app[LIVE_FEED] = LiveFeed(stores)
        app[DELIVERY_STATUS] = DeliveryStatus(app[MESSAGES])
        app[WEBHOOKS] = WebhookService(*parts)
        yield
        await app[LIVE_FEED].close()
    finally:
        transcoder.close()
        await couch.close()


@asynccontextmanager
async def running_engine(
    stores: Stores, settings: Settings, messages: MessageService, metrics: Metrics | None = None
) -> AsyncIterator[EventEngine]:
    """The event engine with its consumers (webhooks, e-mail), for as long as the block runs:
    `piston-vm serve` (unless PISTON_VM_EVENTS=off) and `piston-vm events`."""
    client = WebhookClient(settings.webhook_timeout_s, settings.webhook_allow_private)
    notifier = EmailNotifier(stores, settings, messages)
    await client.start()
    await notifier.start()
    consumers: list[Consumer] = [WebhookDeliverer(stores, settings, client, metrics), notifier]
    engine = EventEngine(stores, settings, consumers, metrics)
    try:
        await engine.start()
        yield engine
    finally:
        await engine.stop()
        await notifier.close()
        await client.close()


def message_service(stores: Stores, settings: Settings) -> MessageService:
    """The message use cases for a process without the API (`piston-vm events`)."""
    validator = SchemaValidator(
        settings.schemas_dir, settings.max_pin_length, settings.transcribe_default)
    migrator = LegacyMigrator(stores, settings)
    return MessageService(stores, validator, settings, migrator,
                          RepairSchedule(settings.move_repair_interval_s))


async def events_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.events:
        yield
        return
    async with running_engine(app[STORES], settings, app[MESSAGES], app[METRICS]) as engine:
        app[ENGINE] = engine
        yield


def build_metrics(settings: Settings) -> Metrics:
    if not settings.metrics:
        return Metrics()
    return PrometheusMetrics(__version__, settings.commit or "unknown")


def create_app(settings: Settings) -> web.Application:
    metrics = build_metrics(settings)
    lifecycle = Lifecycle()
    # The in-flight count inside the error middleware: its refusals get the envelope.
    middlewares: list[Middleware] = [error_middleware, lifecycle.middleware(),
                                     pipeline_middleware]
    observe = observe_middleware(settings.access_log, metrics)
    if observe is not None:
        # Outside the error middleware: the access log and the request metrics see its answers.
        middlewares.insert(0, observe)
    app = web.Application(
        middlewares=middlewares,
        client_max_size=settings.max_upload_bytes + _FRAMEWORK_BODY_LIMIT_SLACK_BYTES,
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[LIFECYCLE] = lifecycle
    metrics.watch_requests_in_flight(lambda: lifecycle.in_flight)
    app[VALIDATOR] = SchemaValidator(
        settings.schemas_dir, settings.max_pin_length, settings.transcribe_default
    )
    app[MOVE_REPAIRS] = RepairSchedule(settings.move_repair_interval_s)
    install_login_throttle(app)
    app.cleanup_ctx.append(couchdb_ctx)
    app.cleanup_ctx.append(events_ctx)
    app.on_response_prepare.append(add_common_headers)
    app.router.add_get(HEALTHZ_PATH, healthz)
    app.router.add_get(READYZ_PATH, readyz)
    if settings.metrics and settings.metrics_port is None:
        # With PISTON_VM_METRICS_PORT the scraper's page is on that port only (cli/serve.py).
        app.router.add_get(METRICS_PATH, metrics_page)
    if settings.inbox:
        add_inbox_routes(app)
    register(app, ENDPOINTS)
    return app


def create_metrics_app(app: web.Application) -> web.Application | None:
    """The app of PISTON_VM_METRICS_PORT, sharing `app`'s registry; None without that port."""
    settings = app[SETTINGS]
    if not settings.metrics or settings.metrics_port is None:
        return None
    return metrics_only_app(app[METRICS])
