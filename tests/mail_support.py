"""Real SMTP servers for the email tests (aiosmtpd in the test's own event loop), and the
`voicemail_new` event the event engine would derive for a message."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP as SmtpServer  # noqa: N811
from aiosmtpd.smtp import Envelope, Session

from piston_vm.core import gregorian
from piston_vm.core.events import NOTIFICATION, VOICEMAIL_NEW, Event
from tests.conftest import Tenant
from tests.helpers import Api, assert_success
from tests.test_message_support import message_path

JsonObject = dict[str, Any]
ACCEPT = "250 2.0.0 Ok: queued as TEST"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        message = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class Recorder:
    """An aiosmtpd handler: answers DATA with the scripted replies (then accepts), keeps what it
    accepted, and lets a test act at the moment a command arrives."""

    data_replies: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    data_commands: int = 0
    on_rcpt: Callable[[], Awaitable[None]] | None = None
    on_data: Callable[[], Awaitable[None]] | None = None

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SmtpServer, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        envelope.rcpt_tos.append(address)
        if self.on_rcpt is not None:
            await self.on_rcpt()
        return "250 OK"

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SmtpServer, session: Session, envelope: Envelope,
    ) -> str:
        self.data_commands += 1
        reply = self.data_replies.pop(0) if self.data_replies else ACCEPT
        if reply.startswith("250"):
            content = envelope.original_content or envelope.content or b""
            assert isinstance(content, bytes)
            self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos),
                                          content))
        if self.on_data is not None:
            await self.on_data()
        return reply


@asynccontextmanager
async def smtp_server(recorder: Recorder) -> AsyncIterator[int]:
    """A real SMTP server on 127.0.0.1; yields its port."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SmtpServer(recorder, hostname="mx.test", decode_data=False),
        "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def refusing_port() -> int:
    """A port nobody listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def voicemail_new_event(api: Api, tenant: Tenant, box_id: str, message_id: str) -> Event:
    """The event the engine derives for a new message with audio (issue 12), payload in the
    platform's voicemail_new fields. The one place to swap for the real engine."""
    resp, body = await api.call("GET", message_path(tenant, box_id, message_id), tenant.token)
    metadata: JsonObject = assert_success(resp, body)
    payload = {
        "account_id": tenant.id, "event_category": NOTIFICATION, "event_name": VOICEMAIL_NEW,
        "voicemail_box": box_id, "voicemail_id": message_id,
        "voicemail_length": metadata.get("length"),
        "voicemail_timestamp": metadata.get("timestamp"),
        "caller_id_name": metadata.get("caller_id_name"),
        "caller_id_number": metadata.get("caller_id_number"),
        "from_user": metadata.get("from_user"), "from_realm": metadata.get("from_realm"),
        "to_user": metadata.get("to_user"), "to_realm": metadata.get("to_realm"),
        "call_id": metadata.get("call_id"),
    }
    return Event(id=f"test-{message_id}-new", category=NOTIFICATION, name=VOICEMAIL_NEW,
                 account_id=tenant.id, payload=payload, timestamp=gregorian.now(),
                 box_id=box_id, message_id=message_id, tree=tuple(tenant.account.tree))
