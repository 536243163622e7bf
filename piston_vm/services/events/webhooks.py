"""Webhook deliveries: which hooks an event goes to, the platform's payloads, Standard Webhooks
signatures, retries with backoff, the attempt log and the auto-disable (docs/events.md
"Deliveries")."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from piston_vm.core import gregorian
from piston_vm.core.config import Settings
from piston_vm.core.events import NOTIFICATION, OBJECT, Event
from piston_vm.core.metrics import Metrics
from piston_vm.outbound.webhooks import Answer, WebhookClient
from piston_vm.storage.accounts import Account
from piston_vm.storage.names import message_month
from piston_vm.storage.stores import Stores

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

NOTIFICATIONS_HOOK = "notifications"
OBJECT_HOOK = "object"
ALL = "all"
# Hooks change rarely and every event asks for them: a short cache, per account.
HOOKS_CACHE_S = 2.0
RESPONSE_BODY_KEPT = 512
# The platform's words for a hook its disabler turned off (webhooks_disabler).
DISABLE_REASON = "too many failed attempts"


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: `v1,` + base64 HMAC-SHA256 of "id.timestamp.body" with the secret's
    bytes (the base64 after `whsec_`)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{event_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def hook_matches(hook: Mapping[str, Any], event: Event) -> bool:
    custom = hook.get("custom_data")
    modifiers: Mapping[str, Any] = custom if isinstance(custom, dict) else {}
    kind = hook.get("hook")
    if kind == ALL:
        # The platform's catch-all hook: every event.
        return True
    if kind == NOTIFICATIONS_HOOK and event.category == NOTIFICATION:
        return modifiers.get("type", ALL) in (ALL, event.name)
    if kind == OBJECT_HOOK and event.category == OBJECT:
        return (modifiers.get("type", ALL) in (ALL, event.payload.get("type"))
                and modifiers.get("action", ALL) in (ALL, event.name))
    return False


# Modifier keys of custom_data select events; they never overwrite what the event says it is
# (an object hook's `"action": "all"` must not turn a doc_created into "all").
MODIFIER_KEYS = ("type", "action")


def hook_payload(hook: Mapping[str, Any], event: Event) -> JsonObject:
    """The event's payload with the hook's custom_data merged in, as the platform does."""
    custom = hook.get("custom_data")
    extra = custom if isinstance(custom, dict) else {}
    return {**event.payload, **{k: v for k, v in extra.items()
                                if not (k in MODIFIER_KEYS and k in event.payload)}}


def _form_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def request_parts(
    hook: Mapping[str, Any], payload: Mapping[str, Any]
) -> tuple[str, dict[str, str] | None, bytes, dict[str, str]]:
    """(method, query, body, headers) as the platform sends by `http_verb` and `format`."""
    verb = str(hook.get("http_verb") or "post").lower()
    if verb == "get":
        return "GET", {k: _form_value(v) for k, v in payload.items()}, b"", {}
    method = "PUT" if verb == "put" else "POST"
    if hook.get("format") == "json":
        body = json.dumps(payload, separators=(",", ":")).encode()
        return method, None, body, {"Content-Type": "application/json"}
    body = urlencode({k: _form_value(v) for k, v in payload.items()}).encode()
    return method, None, body, {"Content-Type": "application/x-www-form-urlencoded"}


class WebhookDeliverer:
    """The engine's consumer for webhooks: `handle(event)` returns once every hook the event
    goes to has its answer or has used up its retries."""

    def __init__(self, stores: Stores, settings: Settings, client: WebhookClient,
                 metrics: Metrics | None = None) -> None:
        self.stores = stores
        self.metrics = metrics or Metrics()
        self.settings = settings
        self.client = client
        self._hooks: dict[str, tuple[float, list[JsonObject]]] = {}
        # Failed attempts per hook (monotonic times), for the auto-disable.
        self._failures: dict[str, deque[float]] = {}
        self.delivered = 0
        self.failed_attempts = 0

    async def hooks_of(self, account: Account) -> list[JsonObject]:
        cached = self._hooks.get(account.id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        hooks = await self.stores.webhooks.hooks(account)
        self._hooks[account.id] = (time.monotonic() + HOOKS_CACHE_S, hooks)
        return hooks

    def forget(self, account_id: str) -> None:
        self._hooks.pop(account_id, None)

    async def targets(self, event: Event) -> list[tuple[Account, JsonObject]]:
        """The enabled hooks of the event's account, and of each ancestor whose hook asks for
        subaccounts' events (a hook never sees any other tenant)."""
        found: list[tuple[Account, JsonObject]] = []
        owners = [(event.account_id, False)] + [(a, True) for a in event.tree
                                                 if a != event.account_id]
        for account_id, ancestor in owners:
            account = await self.stores.accounts.get(account_id)
            if account is None:
                continue
            for hook in await self.hooks_of(account):
                if hook.get("enabled") is False:
                    continue
                if ancestor and hook.get("include_subaccounts") is not True:
                    continue
                if hook_matches(hook, event):
                    found.append((account, hook))
        return found

    async def handle(self, event: Event) -> None:
        targets = await self.targets(event)
        if targets:
            await asyncio.gather(*(self.deliver(owner, hook, event) for owner, hook in targets))

    async def deliver(self, owner: Account, hook: JsonObject, event: Event) -> None:
        method, query, body, headers = request_parts(hook, hook_payload(hook, event))
        retries = hook.get("retries", 2)
        retries = retries if isinstance(retries, int) and 0 <= retries <= 4 else 2
        secret = hook.get("pvt_signing_secret")
        month = message_month(event.message_id) if event.message_id else None
        modb = owner.db.modb(*(month or gregorian.utc_month(gregorian.now())))
        for attempt in range(1, retries + 2):
            stamp = int(time.time())
            signed = dict(headers)
            signed["webhook-id"] = event.id
            signed["webhook-timestamp"] = str(stamp)
            if isinstance(secret, str) and secret:
                signed["webhook-signature"] = sign(secret, event.id, stamp, body)
            answer = await self.client.send(method, str(hook.get("uri", "")), params=query,
                                            body=body or None, headers=signed)
            ok = answer.status is not None and 200 <= answer.status < 300
            self.metrics.webhook_attempt("success" if ok else "failure")
            await self._log_attempt(owner, modb, hook, event, answer, ok, attempt,
                                    retries + 1 - attempt)
            if ok:
                self.delivered += 1
                return
            self.failed_attempts += 1
            if await self._note_failure(owner, hook):
                return
            if attempt <= retries:
                await asyncio.sleep(self.settings.webhook_backoff_s * 2 ** (attempt - 1))

    async def _log_attempt(
        self, owner: Account, modb: Any, hook: JsonObject, event: Event, answer: Answer,
        ok: bool, attempt: int, retries_left: int,
    ) -> None:
        record: JsonObject = {
            "hook_id": hook["_id"],
            "result": "success" if ok else "failure",
            "retries_left": retries_left,
            "event_id": event.id,
            "attempt": attempt,
            "pvt_created": gregorian.now(),
        }
        if answer.status is not None:
            record["response_code"] = str(answer.status)
            record["response_body"] = answer.body[:RESPONSE_BODY_KEPT]
        if not ok:
            record["reason"] = ("bad response code" if answer.status is not None
                                else "kazoo http client error")
        if answer.error:
            record["client_error"] = answer.error
        if event.message_id:
            record["pvt_message_id"] = event.message_id
        if event.box_id:
            record["pvt_box_id"] = event.box_id
        await self.stores.webhooks.add_attempt(owner, modb, record)

    async def _note_failure(self, owner: Account, hook: JsonObject) -> bool:
        """Count a failed attempt; True when the hook has just been disabled (as the
        platform's disabler does: too many failures within the expiry window)."""
        now = time.monotonic()
        window = self._failures.setdefault(hook["_id"], deque())
        window.append(now)
        while window and window[0] < now - self.settings.webhook_failure_expiry_s:
            window.popleft()
        if len(window) < self.settings.webhook_failure_count:
            return False
        window.clear()
        log.warning("webhook %s of account %s disabled after %d failed attempts",
                    hook["_id"], owner.id, self.settings.webhook_failure_count)
        await self.stores.webhooks.disable(owner, hook["_id"], DISABLE_REASON)
        self.forget(owner.id)
        return True
