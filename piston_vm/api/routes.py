"""The URL table: every path, its methods and its body kind, in one place (docs/api.md 1)."""

from __future__ import annotations

from piston_vm.api import auth, events, messages, notifications, vmboxes, webhooks
from piston_vm.web.openapi import openapi_document
from piston_vm.web.routing import BodyKind, Endpoint

ACCOUNT = "/v2/accounts/{account_id:[^/]*}"

ENDPOINTS: list[Endpoint] = [
    Endpoint("/v2/api_auth", {"PUT": auth.api_auth}, authenticated=False),
    Endpoint("/v2/openapi.json", {"GET": openapi_document}, authenticated=False),
    Endpoint("/v2/user_auth", {"PUT": auth.user_auth}, authenticated=False),
    Endpoint(f"{ACCOUNT}/events", {"GET": events.event_stream}),
    # The platform answers its available hooks without a token (cb_webhooks authenticate).
    Endpoint("/v2/webhooks", {"GET": webhooks.list_available}, authenticated=False),
    Endpoint(f"{ACCOUNT}/vmboxes", {"GET": vmboxes.list_boxes, "PUT": vmboxes.create_box}),
    # Literal segments first: "messages" after /vmboxes/ and "raw" after /messages/ are never ids.
    Endpoint(f"{ACCOUNT}/vmboxes/messages", {"GET": messages.list_account_messages}),
    Endpoint(
        f"{ACCOUNT}/vmboxes/{{box_id}}",
        {
            "GET": vmboxes.get_box,
            "POST": vmboxes.replace_box,
            "PATCH": vmboxes.patch_box,
            "DELETE": vmboxes.delete_box,
        },
    ),
    Endpoint(
        f"{ACCOUNT}/vmboxes/{{box_id}}/messages",
        {
            "GET": messages.list_box_messages,
            "PUT": messages.create_message,
            "POST": messages.bulk_change,
            "DELETE": messages.bulk_delete,
        },
        body=BodyKind.UPLOAD,
    ),
    Endpoint(f"{ACCOUNT}/vmboxes/{{box_id}}/messages/raw", {"POST": messages.zip_audio},
             body=BodyKind.ZIP),
    Endpoint(
        f"{ACCOUNT}/vmboxes/{{box_id}}/messages/{{message_id}}",
        {
            "GET": messages.get_message,
            "POST": messages.change_message,
            "DELETE": messages.delete_message,
        },
    ),
    Endpoint(
        f"{ACCOUNT}/vmboxes/{{box_id}}/messages/{{message_id}}/raw",
        {"GET": messages.get_audio, "PUT": messages.put_audio},
        body=BodyKind.UPLOAD,
    ),
    Endpoint(
        f"{ACCOUNT}/vmboxes/{{box_id}}/messages/{{message_id}}/notifications",
        {"GET": notifications.list_message_notifications},
    ),
    Endpoint(
        f"{ACCOUNT}/webhooks",
        {"GET": webhooks.list_hooks, "PUT": webhooks.create_hook,
         "PATCH": webhooks.reenable_hooks},
    ),
    # Literal first: "attempts" after /webhooks/ is the account's delivery log, never a hook id.
    Endpoint(f"{ACCOUNT}/webhooks/attempts", {"GET": webhooks.list_attempts}),
    Endpoint(
        f"{ACCOUNT}/webhooks/{{webhook_id}}",
        {
            "GET": webhooks.get_hook,
            "POST": webhooks.replace_hook,
            "PATCH": webhooks.patch_hook,
            "DELETE": webhooks.delete_hook,
        },
    ),
    Endpoint(f"{ACCOUNT}/webhooks/{{webhook_id}}/attempts", {"GET": webhooks.list_hook_attempts}),
]
