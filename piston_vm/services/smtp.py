"""One SMTP transaction per email, through aiosmtplib, with its outcome sorted into accepted,
temporary and permanent (docs/email.md, "Retries")."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

import aiosmtplib

from piston_vm.core.config import Settings

log = logging.getLogger(__name__)

# The server's answer is stored for people to read; a few hundred characters say it all.
MAX_TEXT_CHARS = 500


class Verdict(Enum):
    ACCEPTED = "accepted"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    # The attempt was not made: another sender holds it (see `before_data`).
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    # The SMTP reply code; None when there was no reply (refused, timed out, TLS).
    code: int | None
    text: str


def _text(value: object) -> str:
    return " ".join(str(value).split())[:MAX_TEXT_CHARS]


class SmtpSender:
    def __init__(self, settings: Settings) -> None:
        if settings.smtp_host is None:
            raise ValueError("SmtpSender needs PISTON_VM_SMTP_HOST")
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.security = settings.smtp_security
        self.username = settings.smtp_username
        self.password = settings.smtp_password
        self.timeout_s = settings.smtp_timeout_s
        self.sender = settings.smtp_from
        # The EHLO name; aiosmtplib would look it up (a DNS query) for every connection.
        self._local_hostname: str | None = None

    async def _client(self) -> aiosmtplib.SMTP:
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        return aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout_s,
            local_hostname=self._local_hostname,
            use_tls=self.security == "tls",
            # True: STARTTLS or fail (never send in clear text what was meant to be
            # encrypted); False: never (`none`).
            start_tls=self.security == "starttls",
            username=self.username, password=self.password,
        )

    async def send(
        self, recipient: str, payload: bytes, before_data: Callable[[], Awaitable[bool]]
    ) -> Outcome:
        """Send `payload` to `recipient` alone. `before_data` runs once the server took the
        recipient, just before the message itself goes: returning False abandons the
        transaction (nothing is sent)."""
        smtp = await self._client()
        try:
            outcome = await self._transaction(smtp, recipient, payload, before_data)
        except BaseException:
            # Cancelled (shutdown): drop the connection; a server that has not seen the end of
            # the message throws it away.
            smtp.close()
            raise
        await _quit(smtp)
        return outcome

    async def _transaction(
        self, smtp: aiosmtplib.SMTP, recipient: str, payload: bytes,
        before_data: Callable[[], Awaitable[bool]],
    ) -> Outcome:
        try:
            await smtp.connect()
            await smtp.mail(self.sender)
            await smtp.rcpt(recipient)
            if not await before_data():
                return Outcome(Verdict.SKIPPED, None, "another sender has this attempt")
            response = await smtp.data(payload)
            return Outcome(Verdict.ACCEPTED, response.code, _text(response.message))
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx: try again later; 5xx (and anything else): the server will not take it.
            verdict = Verdict.TEMPORARY if 400 <= exc.code < 500 else Verdict.PERMANENT
            return Outcome(verdict, exc.code, _text(exc.message))
        except (aiosmtplib.SMTPNotSupported, ssl.SSLError) as exc:
            # Configuration the server will not change between retries (no STARTTLS, no AUTH,
            # a certificate that does not verify).
            return Outcome(Verdict.PERMANENT, None, _text(exc))
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Refused, unreachable, timed out, disconnected: the server may be back soon.
            return Outcome(Verdict.TEMPORARY, None, _text(self._no_answer(exc)))

    def _no_answer(self, exc: BaseException) -> str:
        """What a person should read when the server gave no answer."""
        chain: list[BaseException] = [exc]
        while chain[-1].__cause__ is not None and len(chain) < 5:
            chain.append(chain[-1].__cause__)
        where = f"{self.host}:{self.port}"
        if any(isinstance(e, ConnectionRefusedError) for e in chain):
            return f"connection refused by {where}"
        if any(isinstance(e, TimeoutError) for e in chain):
            return f"no answer from {where} within {self.timeout_s:g} s ({exc})"
        return f"{type(exc).__name__}: {exc}"


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    if not smtp.is_connected:
        return
    try:
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        smtp.close()
