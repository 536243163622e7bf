"""Every typed key for application and request state (the routing table's key lives in routing)."""

from __future__ import annotations

from aiohttp import web

from piston_vm.core.config import Settings
from piston_vm.core.metrics import Metrics
from piston_vm.core.validation import SchemaValidator
from piston_vm.services.downloads import DownloadService
from piston_vm.services.events.engine import EventEngine
from piston_vm.services.events.stream import LiveFeed
from piston_vm.services.legacy import LegacyMigrator
from piston_vm.services.messages import MessageService
from piston_vm.services.moves import RepairSchedule
from piston_vm.services.notifications import DeliveryStatus
from piston_vm.services.vmboxes import VmboxService
from piston_vm.services.webhooks import WebhookService
from piston_vm.storage.stores import Stores
from piston_vm.web.context import RequestContext
from piston_vm.web.lifecycle import Lifecycle

SETTINGS = web.AppKey("settings", Settings)
STORES = web.AppKey("stores", Stores)
VALIDATOR = web.AppKey("validator", SchemaValidator)
# One per process: its per-box locks keep concurrent requests from migrating the same box twice.
MIGRATOR = web.AppKey("migrator", LegacyMigrator)
# One per process: when each account was last searched for moves a crash left unfinished.
MOVE_REPAIRS = web.AppKey("move_repairs", RepairSchedule)
# The use cases: one instance each per app, built when CouchDB is there (app.py).
MESSAGES = web.AppKey("messages", MessageService)
VMBOXES = web.AppKey("vmboxes", VmboxService)
DOWNLOADS = web.AppKey("downloads", DownloadService)
# A message's email and webhook delivery attempts (docs/email.md).
DELIVERY_STATUS = web.AppKey("delivery_status", DeliveryStatus)
WEBHOOKS = web.AppKey("webhooks", WebhookService)
# Prometheus metrics of this app (a no-op Metrics when PISTON_VM_METRICS=off).
METRICS = web.AppKey("metrics", Metrics)
# Draining and requests in flight, for /readyz and `piston-vm serve`'s SIGTERM.
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
# The live stream's shared tail of the engine database (docs/events.md "The live stream").
LIVE_FEED = web.AppKey("live_feed", LiveFeed)
# The event engine when this process runs it (PISTON_VM_EVENTS=on, the default).
ENGINE = web.AppKey("engine", EventEngine)

CONTEXT = web.RequestKey("context", RequestContext)
