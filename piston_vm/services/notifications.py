"""A message's delivery status: every email and webhook attempt, newest first, in one shape
(docs/api.md 9.24)."""

from __future__ import annotations

from typing import Any

from piston_vm.services.messages import MessageService
from piston_vm.storage.accounts import Account
from piston_vm.storage.notifications import EMAIL_ATTEMPT, WEBHOOK_ATTEMPT

JsonObject = dict[str, Any]


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _text_or_none(*values: Any) -> str | None:
    for value in values:
        if isinstance(value, str) and value:
            return value
    return None


def attempt_row(doc: JsonObject) -> JsonObject | None:
    """The answer's row for one stored attempt; None for a document of another kind."""
    kind = doc.get("pvt_type")
    if kind == EMAIL_ATTEMPT:
        channel, recipient = "email", doc.get("recipient")
        code, text = _int_or_none(doc.get("code")), _text_or_none(doc.get("text"))
    elif kind == WEBHOOK_ATTEMPT:
        # The platform's webhook attempt fields (docs/storage.md): the error is the client's
        # when there was no answer, else the reason the answer was not taken.
        channel, recipient = "webhook", doc.get("hook_id")
        code = _int_or_none(doc.get("response_code"))
        text = _text_or_none(doc.get("client_error"), doc.get("reason"),
                             doc.get("response_body"))
    else:
        return None
    return {
        "channel": channel,
        "recipient": recipient if isinstance(recipient, str) else None,
        "result": doc.get("result") if doc.get("result") in ("success", "failure", "pending")
        else "failure",
        "code": code,
        "text": text,
        "attempt": _int_or_none(doc.get("attempt")) or 1,
        "timestamp": _int_or_none(doc.get("pvt_created")),
    }


class DeliveryStatus:
    def __init__(self, messages: MessageService) -> None:
        self.messages = messages

    async def attempts(self, account: Account, box_id: str, message_id: str) -> list[JsonObject]:
        """The message's attempts; 404 as for fetching the message (docs/api.md 9.13)."""
        found = await self.messages.locate(account, box_id, message_id)
        stored = await self.messages.stores.notifications.for_message(found.modb, found.id)
        return [row for doc in stored if (row := attempt_row(doc)) is not None]
