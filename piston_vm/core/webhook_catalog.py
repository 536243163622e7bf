"""What a webhook may subscribe to, in the platform's shapes (docs/webhooks.md, "The webhooks
API"): the available hooks of `GET /v2/webhooks`, the modifier rules a hook's `custom_data`
must follow, and the form of a hook's signing secret."""

from __future__ import annotations

import base64
import secrets
from typing import Any
from urllib.parse import urlsplit

from piston_vm.core.events import (
    OBJECT_ACTIONS,
    OBJECT_TYPES,
    VOICEMAIL_DELETED,
    VOICEMAIL_FULL,
    VOICEMAIL_NEW,
    VOICEMAIL_SAVED,
)

JsonObject = dict[str, Any]

NOTIFICATIONS = "notifications"
OBJECT = "object"
# A modifier value (and, as on the platform, a `hook`) that means "every one of them".
ALL = "all"

# The platform's friendly names and descriptions of its notification events (its
# kapi_notifications definitions), for the voicemail events this service derives.
_NOTIFICATION_ITEMS: dict[str, tuple[str, str]] = {
    ALL: ("All", "This event is triggered for any notification events"),
    VOICEMAIL_DELETED: ("Voicemail Message Deleted",
                        "This event is triggered any time a voicemail message is deleted in the "
                        "voicemail box"),
    VOICEMAIL_FULL: ("Voicemail Box Full",
                     "This event is triggered any time an attempt to leave a voicemail message "
                     "is blocked because the voicemail box is full"),
    VOICEMAIL_NEW: ("New Voicemail Message",
                    "This event is triggered any time a voicemail message is left"),
    VOICEMAIL_SAVED: ("Voicemail Message Saved",
                      "This event is triggered any time a voicemail message is saved in the "
                      "voicemail box 'new' folder"),
}


def available_hooks() -> list[JsonObject]:
    """`GET /v2/webhooks`: the platform's hook metadata documents, ordered by name as its
    `webhook_meta_listing` view orders them. A fresh copy each call: answers may be changed."""
    notification_items = {
        name: {"friendly_name": friendly, "description": description}
        for name, (friendly, description) in sorted(_NOTIFICATION_ITEMS.items())
    }
    return [
        {
            "id": NOTIFICATIONS,
            "name": "Notifications Webhook",
            "description": "Fire a webhook when a notification event is triggered",
            "modifiers": {"type": {"type": "object", "items": notification_items}},
        },
        {
            "id": OBJECT,
            "name": "Object",
            "description": "Receive notifications when objects (like JSON document objects) "
                           "are changed",
            "modifiers": {
                "type": {"type": "array", "description": "A list of object types to handle",
                         "items": [*OBJECT_TYPES, ALL]},
                "action": {"type": "array", "description": "A list of object actions to handle",
                           "items": [*OBJECT_ACTIONS, ALL]},
            },
        },
    ]


# The values `hook` may take: the platform adds `all` to its schema's enum of hook ids.
HOOK_IDS = (ALL, NOTIFICATIONS, OBJECT)


def modifier_errors(hook: str, custom_data: Any) -> JsonObject:
    """The platform's modifier check (cb_webhooks `check_modifiers`): every modifier of the hook
    must be in `custom_data`, with one of its values. Errors are keyed by the modifier's name
    alone, as the platform keys them; `all` hooks have no modifiers."""
    definition = next((h for h in available_hooks() if h["id"] == hook), None)
    if definition is None:
        return {}
    given = custom_data if isinstance(custom_data, dict) else {}
    found: JsonObject = {}
    for key, modifier in definition["modifiers"].items():
        if key not in given:
            found[key] = {"required": {"message": "missing required modifier"}}
            continue
        items = modifier["items"]
        allowed = list(items) if isinstance(items, dict) else items
        if given[key] not in allowed:
            found[key] = {"enum": {"message": "value not found in enumerated list of values",
                                   "cause": given[key], "target": allowed}}
    return found


SIGNING_SECRET_PREFIX = "whsec_"
SIGNING_SECRET_BYTES = 32


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes."""
    raw = secrets.token_bytes(SIGNING_SECRET_BYTES)
    return SIGNING_SECRET_PREFIX + base64.b64encode(raw).decode("ascii")


CLIENT_URL_SCHEMES = ("http", "https")


def is_client_url(uri: str) -> bool:
    """The platform's check of a hook's `uri` (its "invalid client URL" rule): an http or https
    URL with a host. Which addresses a delivery may reach is decided when it is sent."""
    if any(char.isspace() for char in uri):
        return False
    try:
        parts = urlsplit(uri)
        host, _ = parts.hostname, parts.port
    except ValueError:  # an unbalanced IPv6 bracket, a port that is not a number
        return False
    return parts.scheme.lower() in CLIENT_URL_SCHEMES and bool(host)
