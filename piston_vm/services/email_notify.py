"""Voicemail to email: one copy per recipient for each `voicemail_new`, every attempt recorded,
the box's after-notify action only once a server accepted an email (docs/email.md).

Sending is at most once per message and recipient: an attempt is written as `pending` just
before the message goes to the server, so a notifier that restarts after a crash sees that it
may have been sent and does not send it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from piston_vm.core import errors, gregorian
from piston_vm.core.call import Call
from piston_vm.core.config import Settings
from piston_vm.core.events import VOICEMAIL_NEW, Event
from piston_vm.core.mail import (
    AttachedFile,
    Rendered,
    build_email,
    header_text,
    mail_address,
    message_id_header,
    unique_recipients,
)
from piston_vm.core.media import download_filename
from piston_vm.services import message_docs as docs
from piston_vm.services.audio import AudioService, AudioSource
from piston_vm.services.email_templates import EmailTemplates
from piston_vm.services.message_docs import Located
from piston_vm.services.messages import MessageService
from piston_vm.services.smtp import Outcome, SmtpSender, Verdict
from piston_vm.services.timezones import box_timezone, local_time
from piston_vm.storage.accounts import Account
from piston_vm.storage.couch import DocConflict
from piston_vm.storage.names import DbName
from piston_vm.storage.notifications import EMAIL_ATTEMPT
from piston_vm.storage.stores import Stores

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

EMAIL = "email"
PENDING, SUCCESS, FAILURE = "pending", "success", "failure"
# The record that a message's after-notify action was taken (docs/email.md).
AFTER_NOTIFY = "notify_after_action"
# SMTP transactions at once per notifier. Each holds its email (the audio included, at most
# PISTON_VM_EMAIL_ATTACHMENT_MAX_BYTES) in memory while it is sent: this bounds that memory.
MAX_CONCURRENT_SENDS = 8
# An attempt's outcome is saved again after a conflict (someone closed it as stale meanwhile):
# what the server answered is the truth.
SAVE_ATTEMPTS = 3
INVALID_ADDRESS = "not a single plain email address; not sent"


@dataclass(frozen=True, slots=True)
class NotifyResult:
    """What one `handle` did: recipients whose email a server accepted (now or before),
    those that failed, and the folder the message was moved to (None: not moved)."""

    accepted: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    moved_to: str | None = None


@dataclass(slots=True)
class _Voicemail:
    """Everything one event's emails are made of, loaded once."""

    event: Event
    account: Account
    box: JsonObject
    found: Located
    rendered: Rendered
    sender_name: str
    audio: AudioSource | None
    attachment_name: str
    # The attachment's bytes, shared by the copies sent at the same time (see _attachment).
    cached: AttachedFile | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def modb(self) -> DbName:
        return self.found.modb

    @property
    def message_id(self) -> str:
        return self.found.id


def attempt_id(message_id: str, recipient: str, number: int) -> str:
    """One id per (message, recipient, attempt number): two notifiers handling the same event
    cannot both make attempt n, CouchDB refuses the second (docs/email.md, "What is stored")."""
    digest = hashlib.sha256(recipient.lower().encode()).hexdigest()[:24]
    return f"notify_attempt:{message_id}:{digest}:{number}"


def length_text(length_ms: Any) -> str:
    """`metadata.length` (milliseconds) as m:ss."""
    if not isinstance(length_ms, int | float) or isinstance(length_ms, bool) or length_ms < 0:
        return "0:00"
    seconds = round(length_ms / 1000)
    return f"{seconds // 60}:{seconds % 60:02d}"


def transcription_text(doc: JsonObject) -> str | None:
    """The text of a successful transcription (top level, else the metadata copy)."""
    metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    for candidate in (doc.get("transcription"), (metadata or {}).get("transcription")):
        if (isinstance(candidate, dict) and candidate.get("result") == "success"
                and isinstance(candidate.get("text"), str) and candidate["text"].strip()):
            return str(candidate["text"])
    return None


class EmailNotifier:
    """`await handle(event)` for every event; it acts on `voicemail_new` only and returns when
    that voicemail's emails are done (accepted, failed for good, or out of retries)."""

    def __init__(self, stores: Stores, settings: Settings, messages: MessageService) -> None:
        self.stores = stores
        self.settings = settings
        self.messages = messages
        self.audio = AudioService(stores)
        self.templates = EmailTemplates(settings.email_templates_dir)
        self.sender = SmtpSender(settings) if settings.smtp_host else None
        self._sends = asyncio.Semaphore(MAX_CONCURRENT_SENDS)
        # One handle per message at a time in this process; other processes are kept apart
        # by the attempts' ids.
        self._busy: dict[str, tuple[asyncio.Lock, int]] = {}

    async def start(self) -> None:
        if self.sender is None:
            log.warning("no SMTP server configured (PISTON_VM_SMTP_HOST): voicemail is not "
                        "sent by email")
        else:
            log.info("voicemail to email through %s:%d (%s) from %s", self.sender.host,
                     self.sender.port, self.sender.security, self.settings.smtp_from)

    async def close(self) -> None:
        """Nothing to release: each email has its own SMTP connection."""

    async def handle(self, event: Event) -> NotifyResult:
        if (event.name != VOICEMAIL_NEW or self.sender is None or event.box_id is None
                or event.message_id is None):
            return NotifyResult()
        lock = self._enter(event.message_id)
        try:
            async with lock:
                return await self._handle(event, event.box_id)
        finally:
            self._leave(event.message_id)

    def _enter(self, message_id: str) -> asyncio.Lock:
        lock, users = self._busy.get(message_id, (asyncio.Lock(), 0))
        self._busy[message_id] = (lock, users + 1)
        return lock

    def _leave(self, message_id: str) -> None:
        lock, users = self._busy[message_id]
        if users <= 1:
            del self._busy[message_id]
        else:
            self._busy[message_id] = (lock, users - 1)

    async def _handle(self, event: Event, box_id: str) -> NotifyResult:
        voicemail, recipients = await self._load(event, box_id)
        if voicemail is None or not recipients:
            return NotifyResult()
        history = await self.stores.notifications.for_message(
            voicemail.modb, voicemail.message_id)
        emailed = [doc for doc in history if doc.get("pvt_type") == EMAIL_ATTEMPT]
        # Every recipient finishes its attempts before a failure (CouchDB) is raised: an email
        # cut off in the middle would stay `pending`, never to be sent.
        settled = await asyncio.gather(*(
            self._deliver(voicemail, recipient, [d for d in emailed
                                                 if str(d.get("recipient", "")).lower()
                                                 == recipient.lower()])
            for recipient in recipients), return_exceptions=True)
        for outcome in settled:
            if isinstance(outcome, BaseException):
                raise outcome
        outcomes = [bool(outcome) for outcome in settled]
        accepted = tuple(r for r, ok in zip(recipients, outcomes, strict=True) if ok)
        failed = tuple(r for r, ok in zip(recipients, outcomes, strict=True) if not ok)
        moved_to = await self._after_notify(voicemail) if accepted else None
        return NotifyResult(accepted, failed, moved_to)

    # -- what the email is made of ---------------------------------------------------------

    async def _load(self, event: Event, box_id: str) -> tuple[_Voicemail | None, list[str]]:
        account = await self.stores.accounts.get(event.account_id)
        if account is None or account.doc.get("pvt_deleted") or event.message_id is None:
            return None, []
        try:
            box = await self.messages.live_box(account, box_id)
            found = await self.messages.locate(account, box_id, event.message_id)
        except errors.ApiError:
            # Deleted or moved away before its email: nobody is told about a message that is
            # no longer there.
            log.info("voicemail %s of box %s is gone: no email", event.message_id, box_id)
            return None, []
        recipients = unique_recipients([await self._owner_email(account, box),
                                        *_listed(box.get("notify_email_addresses"))])
        if not recipients:
            return None, []
        doc = found.doc
        metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        metadata = metadata or {}
        zone_name = await box_timezone(self.stores, account, box, self.settings.default_timezone)
        time = docs.message_time(doc) or gregorian.now()
        moment, known = local_time(time, zone_name)
        audio = (await self.audio.source(found)
                 if box.get("include_message_on_notify", True) is not False else None)
        caller_number = metadata.get("caller_id_number")
        attachment_name = download_filename(
            caller_number if isinstance(caller_number, str) else None,
            metadata.get("timestamp") if isinstance(metadata.get("timestamp"), int) else time,
            zone_name, audio.label) if audio is not None else ""
        attached = audio is not None and audio.length <= self.settings.email_attachment_max_bytes
        too_large = audio is not None and not attached
        transcription = (transcription_text(doc)
                         if box.get("include_transcription_on_notify", True) is not False
                         else None)
        caller_name = metadata.get("caller_id_name")
        context: JsonObject = {
            "account": {"id": account.id, "name": account.name, "realm": account.realm},
            "caller_id": {"name": caller_name, "number": caller_number},
            "voicemail": {
                "id": found.id, "box_id": box_id, "box_name": box.get("name"),
                "box_number": box.get("mailbox"), "timestamp": time,
                "datetime": moment, "timezone": zone_name if known else "UTC",
                "time": moment.strftime("%Y-%m-%d %H:%M:%S ") + (moment.tzname() or "UTC"),
                "length_ms": metadata.get("length"), "length": length_text(metadata.get("length")),
                "transcription": transcription, "attached": attached, "too_large": too_large,
                "attachment_name": attachment_name if attached else None,
                "download_url": self._download_url(account, box_id, found.id) if too_large
                else None,
                "from": metadata.get("from"), "to": metadata.get("to"),
                "call_id": metadata.get("call_id"),
            },
        }
        overrides = await self.stores.notifications.account_templates(account.db)
        rendered = self.templates.render(context, overrides)
        voicemail = _Voicemail(event, account, box, found, rendered,
                               header_text(caller_name or caller_number or ""),
                               audio if attached else None, attachment_name)
        return voicemail, recipients

    async def _owner_email(self, account: Account, box: JsonObject) -> str | None:
        owner_id = box.get("owner_id")
        if not isinstance(owner_id, str) or not owner_id:
            return None
        user = await self.stores.users.get(account.id, owner_id)
        # The platform's user switch for voicemail to email; absent means yes.
        if (user is None or user.get("pvt_deleted") or user.get("enabled") is False
                or user.get("vm_to_email_enabled") is False):
            return None
        email = user.get("email")
        return email if isinstance(email, str) else None

    def _download_url(self, account: Account, box_id: str, message_id: str) -> str | None:
        if not self.settings.public_url:
            return None
        base = self.settings.public_url.rstrip("/")
        return (f"{base}/v2/accounts/{account.id}/vmboxes/{quote(box_id, safe='')}"
                f"/messages/{quote(message_id, safe='')}/raw")

    async def _attachment(self, voicemail: _Voicemail) -> AttachedFile | None:
        """The audio, read from CouchDB once for the copies that are sent together."""
        if voicemail.audio is None:
            return None
        async with voicemail.lock:
            if voicemail.cached is None:
                data = b"".join([chunk async for chunk in self.audio.chunks(voicemail.audio)])
                voicemail.cached = AttachedFile(voicemail.attachment_name,
                                                voicemail.audio.content_type, data)
            return voicemail.cached

    # -- one recipient ---------------------------------------------------------------------

    async def _deliver(self, voicemail: _Voicemail, recipient: str,
                       history: list[JsonObject]) -> bool:
        """True when a server accepted this recipient's email, now or in an earlier run."""
        history = sorted(history, key=lambda d: int(d.get("attempt") or 0))
        if any(d.get("result") == SUCCESS for d in history):
            return True
        last = history[-1] if history else None
        retries = self.settings.email_retries
        if last is not None:
            if last.get("result") == PENDING:
                # Maybe sent by a notifier that stopped: never again (docs/email.md).
                await self._close_if_stale(voicemail.modb, last)
                return False
            if last.get("permanent") or int(last.get("attempt") or 0) > retries:
                return False
        address = mail_address(recipient)
        number = int(last.get("attempt") or 0) + 1 if last is not None else 1
        if address is None:
            await self._record(voicemail, recipient, number, None,
                               Outcome(Verdict.PERMANENT, None, INVALID_ADDRESS),
                               gregorian.now())
            return False
        if last is not None:
            # A restart in the middle of a backoff waits out what is left of it.
            waited = gregorian.now() - int(last.get("pvt_created") or 0)
            await asyncio.sleep(max(0.0, self._backoff_s(number - 1) - waited))
        while True:
            outcome = await self._attempt(voicemail, recipient, address, number)
            if outcome.verdict is Verdict.ACCEPTED:
                return True
            if outcome.verdict in (Verdict.PERMANENT, Verdict.SKIPPED) or number > retries:
                return False
            # Nobody needs the audio while we wait; the next attempt reads it again.
            voicemail.cached = None
            await asyncio.sleep(self._backoff_s(number))
            number += 1

    def _backoff_s(self, failed_attempt: int) -> float:
        """The wait after failed attempt n: the first backoff, doubling each time."""
        return float(self.settings.email_backoff_s * 2 ** (failed_attempt - 1))

    async def _attempt(self, voicemail: _Voicemail, recipient: str, address: str,
                       number: int) -> Outcome:
        assert self.sender is not None
        started = gregorian.now()
        pending: list[JsonObject] = []

        async def before_data() -> bool:
            doc = self._attempt_doc(voicemail, recipient, number, started)
            doc["result"] = PENDING
            try:
                await self.stores.notifications.create(voicemail.modb, doc)
            except DocConflict:
                return False  # another notifier is making this attempt
            pending.append(doc)
            return True

        async with self._sends:
            attachment = await self._attachment(voicemail)
            message = build_email(
                voicemail.rendered, self.settings.smtp_from, voicemail.sender_name, address,
                message_id_header(voicemail.message_id, address, self.settings.smtp_from),
                attachment)
            outcome = await self.sender.send(address, message.as_bytes(), before_data)
        if outcome.verdict is Verdict.SKIPPED:
            return outcome
        # A shutdown that cancels us now must not lose what the server said.
        await asyncio.shield(self._record(
            voicemail, recipient, number, pending[0] if pending else None, outcome, started))
        level = logging.INFO if outcome.verdict is Verdict.ACCEPTED else logging.WARNING
        log.log(level, "voicemail %s to %s, attempt %d: %s %s %s", voicemail.message_id,
                address, number, outcome.verdict.value, outcome.code, outcome.text)
        return outcome

    def _attempt_doc(self, voicemail: _Voicemail, recipient: str, number: int,
                     started: int) -> JsonObject:
        return {
            "_id": attempt_id(voicemail.message_id, recipient, number),
            "pvt_type": EMAIL_ATTEMPT,
            "channel": EMAIL,
            "recipient": recipient,
            "attempt": number,
            "event_id": voicemail.event.id,
            "pvt_message_id": voicemail.message_id,
            "pvt_box_id": voicemail.found.doc.get("source_id"),
            "pvt_account_id": voicemail.account.id,
            "pvt_account_db": voicemail.modb.encoded,
            "pvt_node": self.settings.node_name,
            "pvt_created": started,
            "pvt_modified": gregorian.now(),
        }

    async def _record(self, voicemail: _Voicemail, recipient: str, number: int,
                      pending: JsonObject | None, outcome: Outcome, started: int) -> None:
        doc = pending if pending is not None else self._attempt_doc(
            voicemail, recipient, number, started)
        store = self.stores.notifications
        for _ in range(SAVE_ATTEMPTS):
            _set_outcome(doc, outcome, self.settings.email_retries + 1 - number)
            try:
                if "_rev" in doc:
                    await store.save(voicemail.modb, doc)
                else:
                    await store.create(voicemail.modb, doc)
                return
            except DocConflict:
                fresh = await store.get(voicemail.modb, str(doc["_id"]))
                if fresh is None or pending is None:
                    # Attempt n was recorded by another notifier that made it too.
                    return
                doc = fresh
        log.warning("could not record attempt %s", doc["_id"])

    async def _close_if_stale(self, modb: DbName, doc: JsonObject) -> None:
        """A `pending` attempt older than any send could take belongs to a notifier that
        stopped: it says so, and stays unsent."""
        if gregorian.now() - int(doc.get("pvt_modified") or 0) < 2 * self.settings.smtp_timeout_s:
            return
        closed = {**doc, "result": FAILURE, "code": None, "permanent": True,
                  "text": "the notifier stopped while the server had this email; it may or may "
                          "not have arrived, and is not sent again",
                  "pvt_modified": gregorian.now()}
        # A conflict: its notifier was alive after all, and recorded the outcome.
        with suppress(DocConflict):
            await self.stores.notifications.save(modb, closed)

    # -- after notify ----------------------------------------------------------------------

    async def _after_notify(self, voicemail: _Voicemail) -> str | None:
        """save_after_notify, else delete_after_notify: only for a message still in `new`, so a
        person who acted on it first wins and a second run changes nothing."""
        box = voicemail.box
        if box.get("save_after_notify") is True:
            folder, call = "saved", Call(f"notify-{voicemail.event.id}",
                                         envelope={"data": {"folder": "saved"}})
        elif box.get("delete_after_notify") is True:
            folder, call = "deleted", Call(f"notify-{voicemail.event.id}",
                                           envelope={"data": {"folder": "deleted"}},
                                           reason="delete_after_notify")
        else:
            return None
        account, box_id = voicemail.account, str(box["_id"])
        try:
            current = await self.messages.locate(account, box_id, voicemail.message_id)
            metadata = current.doc.get("metadata")
            if not isinstance(metadata, dict) or metadata.get("folder") != "new":
                return None
            # Claimed before it is done: a run after a restart never moves the message again
            # (say, after its owner moved it back to `new`). A crash in between leaves it in
            # `new`, the side that loses nothing.
            marker = {"_id": f"notify_after:{voicemail.message_id}", "pvt_type": AFTER_NOTIFY,
                      "folder": folder, "event_id": voicemail.event.id,
                      "pvt_message_id": voicemail.message_id, "pvt_box_id": box_id,
                      "pvt_account_id": account.id, "pvt_created": gregorian.now()}
            try:
                await self.stores.notifications.create(voicemail.modb, marker)
            except DocConflict:
                return None
            await self.messages.change(call, account, box_id, voicemail.message_id)
        except errors.ApiError as exc:
            log.warning("voicemail %s: %s after notify failed: %s", voicemail.message_id,
                        folder, exc)
            return None
        return folder


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _set_outcome(doc: JsonObject, outcome: Outcome, retries_left: int) -> None:
    """`retries_left`: attempts still allowed after this one, should it have failed for now."""
    accepted = outcome.verdict is Verdict.ACCEPTED
    doc["result"] = SUCCESS if accepted else FAILURE
    doc["code"] = outcome.code
    doc["text"] = outcome.text
    doc["permanent"] = outcome.verdict is Verdict.PERMANENT
    doc["retries_left"] = (0 if accepted or outcome.verdict is Verdict.PERMANENT
                           else max(0, retries_left))
    doc["pvt_modified"] = gregorian.now()
