"""The storage layer's front door: every store built on one CouchDB client."""

from __future__ import annotations

from dataclasses import dataclass

from piston_vm.core.config import Settings
from piston_vm.storage.accounts import AccountStore
from piston_vm.storage.couch import CouchClient
from piston_vm.storage.count_cache import CountCache
from piston_vm.storage.databases import Databases
from piston_vm.storage.design import DesignDocs
from piston_vm.storage.events import EventStore
from piston_vm.storage.messages import MessageStore
from piston_vm.storage.notifications import NotificationStore
from piston_vm.storage.users import UserStore
from piston_vm.storage.vmboxes import VmboxStore
from piston_vm.storage.webhooks import WebhookStore


@dataclass(frozen=True, slots=True)
class Stores:
    couch: CouchClient
    databases: Databases
    accounts: AccountStore
    vmboxes: VmboxStore
    messages: MessageStore
    users: UserStore
    events: EventStore
    webhooks: WebhookStore
    # Delivery attempts and email templates (docs/email.md).
    notifications: NotificationStore

    @classmethod
    def build(cls, settings: Settings, couch: CouchClient) -> Stores:
        design = DesignDocs.load(settings.couchdb_dir, settings.modb_design_dir)
        databases = Databases(couch, design)
        return cls(
            couch=couch,
            databases=databases,
            accounts=AccountStore(couch, databases, settings.account_cache_ttl_s),
            vmboxes=VmboxStore(couch, databases),
            messages=MessageStore(couch, databases, CountCache(
                settings.count_cache_s, settings.count_cache_modbs)),
            users=UserStore(couch),
            events=EventStore(couch, settings.events_db, design.events),
            webhooks=WebhookStore(couch, databases),
            notifications=NotificationStore(couch, databases),
        )
