"""Voicemail to email (docs/email.md): real SMTP servers in the test process, messages made
through the API, and the delivery status read back through the API and from CouchDB."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import pytest
from aiosmtpd.smtp import SMTP as SmtpServer  # noqa: N811

from piston_vm.cli.users import main_users
from piston_vm.core import gregorian
from piston_vm.core.config import Settings, settings_from_env
from piston_vm.core.events import VOICEMAIL_SAVED
from piston_vm.core.mail import header_text, mail_address, unique_recipients
from piston_vm.services.email_notify import INVALID_ADDRESS, EmailNotifier, length_text
from piston_vm.storage.notifications import TEMPLATES_DOC_ID, TEMPLATES_TYPE
from piston_vm.storage.stores import Stores
from piston_vm.web.keys import MESSAGES, SETTINGS, STORES
from tests.conftest import MakeAccount, Tenant
from tests.helpers import Api, assert_error, assert_success
from tests.mail_support import Recorder, refusing_port, smtp_server, voicemail_new_event
from tests.test_message_support import (
    create_box,
    create_message_with_audio,
    download_name,
    message_path,
    modb_of_id,
    must_stored,
    update_stored,
)
from tests.test_user_auth import cli_args

JsonObject = dict[str, Any]

NY = "America/New_York"
SENDER = "voicemail@pbx.test"
AUDIO = bytes(range(256)) * 41 + b"\r\n.\r\n..\n.end"  # dots and line ends must survive SMTP
CALLER_NAME, CALLER_NUMBER = "Ada Lovelace", "+15551234567"


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[Recorder, int]]:
    recorder = Recorder()
    async with smtp_server(recorder) as port:
        yield recorder, port


def notifier(api: Api, port: int, **overrides: Any) -> EmailNotifier:
    """A notifier like the one the event engine runs (a new instance is a restarted one)."""
    app = api.client.app
    settings: Settings = app[SETTINGS].with_overrides(**{
        "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_tls": "none", "smtp_from": SENDER,
        "email_backoff_s": 0.05, "email_retries": 2, "smtp_timeout_s": 5.0, **overrides})
    return EmailNotifier(app[STORES], settings, app[MESSAGES])


async def voicemail(
    api: Api, stores: Stores, tenant: Tenant, owner_email: str | None = "Owner@Example.org",
    audio: bytes = AUDIO, mailbox: str = "2100", **box_fields: Any,
) -> tuple[str, str]:
    """A box owned by a user with `owner_email`, and one new message with audio in it."""
    if owner_email is not None:
        owner = await stores.users.create(tenant.id, f"owner{secrets.token_hex(4)}", "pw",
                                          email=owner_email)
        box_fields.setdefault("owner_id", owner["_id"])
    box_fields.setdefault("name", "Front desk")
    box_id = await create_box(api, tenant, mailbox=mailbox, timezone=NY, **box_fields)
    data = await create_message_with_audio(
        api, tenant, box_id, audio, content_type="audio/mpeg", caller_id_name=CALLER_NAME,
        caller_id_number=CALLER_NUMBER, length=4580, timestamp=gregorian.now() - 120)
    return box_id, str(data["media_id"])


async def folder(api: Api, tenant: Tenant, box_id: str, message_id: str) -> str:
    resp, body = await api.call("GET", message_path(tenant, box_id, message_id), tenant.token)
    return str(assert_success(resp, body)["folder"])


async def statuses(api: Api, tenant: Tenant, box_id: str, message_id: str) -> list[JsonObject]:
    resp, body = await api.call(
        "GET", message_path(tenant, box_id, message_id) + "/notifications", tenant.token)
    rows: list[JsonObject] = assert_success(resp, body)
    return rows


async def attempt_docs(stores: Stores, tenant: Tenant, message_id: str) -> list[JsonObject]:
    db = modb_of_id(tenant, message_id)
    _, result = await stores.couch.request(
        "GET", stores.couch.url(db, "_all_docs"), params={"include_docs": "true"})
    return [row["doc"] for row in result["rows"]
            if row["doc"].get("pvt_type") == "notify_attempt"]


def parts(message: EmailMessage) -> tuple[str, str, list[EmailMessage]]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    return (str(text.get_content()), str(html.get_content()),
            list(message.iter_attachments()))


# -- the email -------------------------------------------------------------------------------


async def test_each_recipient_gets_its_own_copy_with_the_voicemail(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    box_id, message_id = await voicemail(
        api, stores, account, notify_email_addresses=[
            "owner@EXAMPLE.org", "second@example.org", "Second@Example.Org"])
    await update_stored(stores, account, message_id,
                        transcription={"result": "success", "text": "Call me back <soon>"})
    event = await voicemail_new_event(api, account, box_id, message_id)
    result = await notifier(api, port).handle(event)
    assert result.accepted == ("Owner@Example.org", "second@example.org")
    assert result.moved_to is None

    # Deduplicated case-insensitively; each copy names its recipient alone.
    assert [r.rcpt_tos for r in recorder.received] in (
        [["Owner@Example.org"], ["second@example.org"]],
        [["second@example.org"], ["Owner@Example.org"]])
    stored = await must_stored(stores, account, message_id)
    timestamp = stored["metadata"]["timestamp"]
    local = datetime.fromtimestamp(gregorian.to_unix(timestamp), ZoneInfo(NY))
    message_ids = set()
    for received in recorder.received:
        message = received.message
        assert received.mail_from == SENDER
        assert [addr for _, addr in getaddresses(message.get_all("To", []))] == received.rcpt_tos
        assert message.get_all("Cc") is None
        assert message.get_all("Bcc") is None
        assert getaddresses(message.get_all("From", [])) == [(CALLER_NAME, SENDER)]
        assert message["Subject"] == f"New voicemail from {CALLER_NAME} ({CALLER_NUMBER}) in " \
                                     "Front desk"
        message_ids.add(message["Message-ID"])
        text, html, attachments = parts(message)
        for body in (text, html):
            assert CALLER_NAME in body
            assert CALLER_NUMBER in body
            assert "Front desk" in body
            assert "2100" in body
            assert local.strftime("%Y-%m-%d %H:%M:%S ") + local.tzname() in body  # type: ignore[operator]
            assert "0:05" in body  # 4580 ms
        assert "Call me back <soon>" in text
        assert "Call me back &lt;soon&gt;" in html  # HTML is escaped
        assert len(attachments) == 1
        assert attachments[0].get_filename() == download_name(CALLER_NUMBER, timestamp,
                                                               zone=NY)
        assert attachments[0].get_content_type() == "audio/mpeg"
        assert attachments[0].get_content() == AUDIO  # byte for byte
    assert len(message_ids) == 2

    rows = await statuses(api, account, box_id, message_id)
    assert sorted(r["recipient"] for r in rows) == ["Owner@Example.org", "second@example.org"]
    for row in rows:
        assert row["channel"] == "email"
        assert row["result"] == "success"
        assert row["code"] == 250
        assert "queued as TEST" in row["text"]
        assert row["attempt"] == 1
        assert isinstance(row["timestamp"], int)
        assert set(row) == {"channel", "recipient", "result", "code", "text", "attempt",
                            "timestamp"}
    # No after-notify action configured: the message stays in new.
    assert await folder(api, account, box_id, message_id) == "new"


async def test_include_flags_off_leave_out_audio_and_transcription(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    box_id, message_id = await voicemail(api, stores, account, include_message_on_notify=False,
                                         include_transcription_on_notify=False)
    await update_stored(stores, account, message_id,
                        transcription={"result": "success", "text": "secret words"})
    await notifier(api, port).handle(await voicemail_new_event(api, account, box_id, message_id))
    text, html, attachments = parts(recorder.received[0].message)
    assert attachments == []
    assert "secret words" not in text
    assert "secret words" not in html


async def test_audio_over_the_limit_is_a_download_link(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    box_id, message_id = await voicemail(api, stores, account)
    event = await voicemail_new_event(api, account, box_id, message_id)
    await notifier(api, port, email_attachment_max_bytes=len(AUDIO) - 1,
                   public_url="https://vm.example.com/").handle(event)
    text, html, attachments = parts(recorder.received[0].message)
    assert attachments == []
    link = (f"https://vm.example.com/v2/accounts/{account.id}/vmboxes/{box_id}/messages/"
            f"{message_id}/raw")
    assert link in text
    assert f'href="{link}"' in html
    # Exactly at the limit it is attached.
    recorder.received.clear()
    other_box, other_id = await voicemail(api, stores, account, mailbox="2101")
    other = await voicemail_new_event(api, account, other_box, other_id)
    await notifier(api, port, email_attachment_max_bytes=len(AUDIO)).handle(other)
    assert len(parts(recorder.received[0].message)[2]) == 1


# -- after notify ----------------------------------------------------------------------------


async def test_delete_after_notify_happens_after_the_server_accepted(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    box_id, message_id = await voicemail(api, stores, account, delete_after_notify=True)
    seen: list[str] = []

    async def look() -> None:
        seen.append((await must_stored(stores, account, message_id))["metadata"]["folder"])

    recorder.on_data = look
    result = await notifier(api, port).handle(
        await voicemail_new_event(api, account, box_id, message_id))
    assert seen == ["new"]  # while the server had the email
    assert result.moved_to == "deleted"
    assert await folder(api, account, box_id, message_id) == "deleted"
    stored = await must_stored(stores, account, message_id)
    assert stored["pvt_folder_change"] == {"folder": "deleted", "reason": "delete_after_notify"}
    assert not stored.get("pvt_deleted")  # moved to the deleted folder, not deleted


async def test_save_after_notify_wins_over_delete_after_notify(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    _, port = smtp
    box_id, message_id = await voicemail(api, stores, account, delete_after_notify=True,
                                         save_after_notify=True)
    result = await notifier(api, port).handle(
        await voicemail_new_event(api, account, box_id, message_id))
    assert result.moved_to == "saved"
    assert await folder(api, account, box_id, message_id) == "saved"


async def test_after_notify_runs_once_even_if_the_message_is_new_again(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    box_id, message_id = await voicemail(api, stores, account, delete_after_notify=True)
    event = await voicemail_new_event(api, account, box_id, message_id)
    await notifier(api, port).handle(event)
    resp, body = await api.call("POST", message_path(account, box_id, message_id),
                                account.token, {"folder": "new"})
    assert_success(resp, body)
    again = await notifier(api, port).handle(event)  # a restart hands the event again
    assert again.accepted == ("Owner@Example.org",)
    assert again.moved_to is None
    assert await folder(api, account, box_id, message_id) == "new"
    assert len(recorder.received) == 1


async def test_a_permanent_failure_is_recorded_at_once_and_the_message_stays_new(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    recorder.data_replies = ["550 5.7.1 Rejected by policy"]
    box_id, message_id = await voicemail(api, stores, account, delete_after_notify=True)
    result = await notifier(api, port, email_retries=3).handle(
        await voicemail_new_event(api, account, box_id, message_id))
    assert result.accepted == ()
    assert result.failed == ("Owner@Example.org",)
    assert recorder.data_commands == 1  # no retry after a 5xx
    assert await folder(api, account, box_id, message_id) == "new"
    rows = await statuses(api, account, box_id, message_id)
    assert rows == [{"channel": "email", "recipient": "Owner@Example.org", "result": "failure",
                     "code": 550, "text": "5.7.1 Rejected by policy", "attempt": 1,
                     "timestamp": rows[0]["timestamp"]}]


async def test_one_accepted_recipient_is_enough_for_after_notify(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    box_id, message_id = await voicemail(api, stores, account, owner_email="not an address",
                                         delete_after_notify=True,
                                         notify_email_addresses=["ok@example.org"])
    result = await notifier(api, port).handle(
        await voicemail_new_event(api, account, box_id, message_id))
    assert result.accepted == ("ok@example.org",)
    assert result.failed == ("not an address",)
    assert [r.rcpt_tos for r in recorder.received] == [["ok@example.org"]]
    assert await folder(api, account, box_id, message_id) == "deleted"
    rows = {r["recipient"]: r for r in await statuses(api, account, box_id, message_id)}
    assert rows["not an address"]["result"] == "failure"
    assert rows["not an address"]["text"] == INVALID_ADDRESS
    assert rows["not an address"]["code"] is None


# -- retries ---------------------------------------------------------------------------------


async def test_temporary_failures_are_retried_then_succeed(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    recorder.data_replies = ["451 4.3.0 Try again later", "421 4.4.2 Busy"]
    box_id, message_id = await voicemail(api, stores, account, delete_after_notify=True)
    started = time.monotonic()
    result = await notifier(api, port, email_backoff_s=0.2, email_retries=2).handle(
        await voicemail_new_event(api, account, box_id, message_id))
    assert time.monotonic() - started >= 0.2 + 0.4  # doubling backoff
    assert result.accepted == ("Owner@Example.org",)
    assert len(recorder.received) == 1
    assert recorder.data_commands == 3
    rows = await statuses(api, account, box_id, message_id)
    assert [(r["attempt"], r["result"], r["code"]) for r in rows] == [
        (3, "success", 250), (2, "failure", 421), (1, "failure", 451)]
    assert rows[2]["text"] == "4.3.0 Try again later"
    docs = sorted(await attempt_docs(stores, account, message_id), key=lambda d: d["attempt"])
    assert [d["retries_left"] for d in docs] == [2, 1, 0]
    assert await folder(api, account, box_id, message_id) == "deleted"


async def test_a_refused_connection_is_retried_until_the_limit(
    api: Api, stores: Stores, account: Tenant,
) -> None:
    box_id, message_id = await voicemail(api, stores, account, delete_after_notify=True)
    result = await notifier(api, refusing_port(), email_retries=2).handle(
        await voicemail_new_event(api, account, box_id, message_id))
    assert result.failed == ("Owner@Example.org",)
    rows = await statuses(api, account, box_id, message_id)
    assert [(r["attempt"], r["result"], r["code"]) for r in rows] == [
        (3, "failure", None), (2, "failure", None), (1, "failure", None)]
    assert all("refused" in r["text"].lower() for r in rows), rows
    assert await folder(api, account, box_id, message_id) == "new"


async def test_a_refused_server_that_comes_back_gets_the_email(
    api: Api, stores: Stores, account: Tenant,
) -> None:
    port = refusing_port()
    recorder = Recorder()
    box_id, message_id = await voicemail(api, stores, account)
    handling = asyncio.ensure_future(notifier(api, port, email_backoff_s=0.5).handle(
        await voicemail_new_event(api, account, box_id, message_id)))
    await asyncio.sleep(0.2)  # the first attempt was refused; the retry waits
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SmtpServer(recorder), "127.0.0.1", port)
    try:
        result = await handling
    finally:
        server.close()
        await server.wait_closed()
    assert result.accepted == ("Owner@Example.org",)
    assert len(recorder.received) == 1


# -- never twice -----------------------------------------------------------------------------


async def test_a_restart_never_sends_an_accepted_email_again(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    box_id, message_id = await voicemail(api, stores, account)
    event = await voicemail_new_event(api, account, box_id, message_id)
    await notifier(api, port).handle(event)
    before = await attempt_docs(stores, account, message_id)
    again = await notifier(api, port).handle(event)
    assert again.accepted == ("Owner@Example.org",)
    assert len(recorder.received) == 1
    assert await attempt_docs(stores, account, message_id) == before


async def test_killed_after_acceptance_does_not_send_a_second_email(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    box_id, message_id = await voicemail(api, stores, account, delete_after_notify=True)
    event = await voicemail_new_event(api, account, box_id, message_id)
    first = asyncio.ensure_future(notifier(api, port).handle(event))

    async def kill() -> None:
        first.cancel()  # the notifier dies while the server accepts

    recorder.on_data = kill
    with pytest.raises(asyncio.CancelledError):
        await first
    recorder.on_data = None
    assert len(recorder.received) == 1
    restarted = await notifier(api, port).handle(event)
    assert restarted.accepted == ()
    assert len(recorder.received) == 1
    rows = await statuses(api, account, box_id, message_id)
    assert [(r["attempt"], r["result"]) for r in rows] == [(1, "pending")]
    # Acceptance was never confirmed: the message is not moved away unseen.
    assert await folder(api, account, box_id, message_id) == "new"

    # Long after, the attempt says what happened, and still nothing is sent again.
    doc = (await attempt_docs(stores, account, message_id))[0]
    doc["pvt_modified"] -= 3600
    await stores.couch.put_doc(modb_of_id(account, message_id), doc)
    await notifier(api, port).handle(event)
    rows = await statuses(api, account, box_id, message_id)
    assert [(r["attempt"], r["result"]) for r in rows] == [(1, "failure")]
    assert "not sent again" in rows[0]["text"]
    assert len(recorder.received) == 1


async def test_killed_before_the_message_went_out_sends_it_on_restart(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    box_id, message_id = await voicemail(api, stores, account)
    event = await voicemail_new_event(api, account, box_id, message_id)
    first = asyncio.ensure_future(notifier(api, port).handle(event))

    async def kill() -> None:
        first.cancel()

    recorder.on_rcpt = kill
    with pytest.raises(asyncio.CancelledError):
        await first
    recorder.on_rcpt = None
    assert recorder.received == []
    assert await attempt_docs(stores, account, message_id) == []
    result = await notifier(api, port).handle(event)
    assert result.accepted == ("Owner@Example.org",)
    assert len(recorder.received) == 1


async def test_two_notifiers_with_the_same_event_send_once(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    box_id, message_id = await voicemail(api, stores, account,
                                         notify_email_addresses=["b@example.org"])
    event = await voicemail_new_event(api, account, box_id, message_id)
    one, two = notifier(api, port), notifier(api, port)
    await asyncio.gather(one.handle(event), two.handle(event), one.handle(event))
    assert sorted(r.rcpt_tos[0] for r in recorder.received) == ["Owner@Example.org",
                                                                "b@example.org"]


# -- headers built from stored fields --------------------------------------------------------


async def test_caller_names_and_addresses_cannot_inject_headers_or_recipients(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    box_id, message_id = await voicemail(api, stores, account)
    evil = 'Zoë "the boss"\r\nBcc: victim@evil.test\r\n<x@evil.test>, "Ω\u2028To: y@evil.test'
    stored = await must_stored(stores, account, message_id)
    await update_stored(stores, account, message_id,
                        metadata={**stored["metadata"], "caller_id_name": evil})
    box = await stores.vmboxes.get(account.account.db, box_id)
    assert box is not None
    box["notify_email_addresses"] = ["z@example.org\r\nBcc: victim@evil.test",
                                     "a@example.org, b@evil.test", "<c@evil.test>"]
    await stores.couch.put_doc(account.db, box)
    result = await notifier(api, port).handle(
        await voicemail_new_event(api, account, box_id, message_id))
    assert result.accepted == ("Owner@Example.org",)
    assert len(result.failed) == 3
    assert [r.rcpt_tos for r in recorder.received] == [["Owner@Example.org"]]
    message = recorder.received[0].message
    assert message.get_all("Bcc") is None
    assert message.get_all("Cc") is None
    assert getaddresses(message.get_all("To", [])) == [("", "Owner@Example.org")]
    (name, address), = getaddresses(message.get_all("From", []))
    assert address == SENDER
    assert name.startswith('Zoë "the boss" Bcc: victim@evil.test')
    assert "Ω" in name
    assert "\n" not in message["Subject"]
    assert "\r" not in message["Subject"]
    assert message["Subject"].startswith("New voicemail from Zoë")
    raw_headers = recorder.received[0].raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in raw_headers
    assert b"\r\nTo: y@" not in raw_headers
    for row in await statuses(api, account, box_id, message_id):
        if row["recipient"] != "Owner@Example.org":
            assert row["result"] == "failure"
            assert row["text"] == INVALID_ADDRESS


# -- templates -------------------------------------------------------------------------------


async def test_operator_files_and_account_templates_override_the_bundled_ones(
    api: Api, stores: Stores, make_account: MakeAccount, smtp: tuple[Recorder, int],
    tmp_path: Path,
) -> None:
    recorder, port = smtp
    (tmp_path / "voicemail_new.subject.txt").write_text(
        "Operator: {{ caller_id.number }} for {{ voicemail.box_number }}")
    (tmp_path / "voicemail_new.txt").write_text("Operator text {{ voicemail.length }}")
    tenant, other = await make_account(), await make_account()
    await stores.couch.put_doc(tenant.db, {
        "_id": TEMPLATES_DOC_ID, "pvt_type": TEMPLATES_TYPE,
        "html": "<p>Account {{ caller_id.name }}</p>",
        "text": "{{ ''.__class__.__mro__ }}",  # the sandbox refuses it: the operator's text
    })
    mailer = notifier(api, port, email_templates_dir=tmp_path)
    for each in (tenant, other):
        box_id, message_id = await voicemail(api, stores, each)
        await mailer.handle(await voicemail_new_event(api, each, box_id, message_id))
    own, others = (r.message for r in recorder.received)
    assert own["Subject"] == f"Operator: {CALLER_NUMBER} for 2100"
    assert [p.rstrip() for p in parts(own)[:2]] == ["Operator text 0:05",
                                                     f"<p>Account {CALLER_NAME}</p>"]
    assert others["Subject"] == own["Subject"]
    assert parts(others)[0].rstrip() == "Operator text 0:05"
    assert "New voicemail in Front desk" in parts(others)[1]  # the bundled HTML


def test_a_broken_operator_template_fails_at_start(api: Api, tmp_path: Path) -> None:
    (tmp_path / "voicemail_new.html").write_text("{% if %}")
    with pytest.raises(jinja2.TemplateSyntaxError, match="Expected an expression"):
        notifier(api, 25, email_templates_dir=tmp_path)


# -- what the notifier ignores ---------------------------------------------------------------


async def test_without_smtp_nothing_is_attempted_and_start_says_so(
    api: Api, stores: Stores, account: Tenant, caplog: pytest.LogCaptureFixture,
) -> None:
    box_id, message_id = await voicemail(api, stores, account, delete_after_notify=True)
    app = api.client.app
    quiet = EmailNotifier(app[STORES], app[SETTINGS], app[MESSAGES])
    with caplog.at_level(logging.WARNING, logger="piston_vm.services.email_notify"):
        await quiet.start()
    assert [r.getMessage() for r in caplog.records] == [
        "no SMTP server configured (PISTON_VM_SMTP_HOST): voicemail is not sent by email"]
    result = await quiet.handle(await voicemail_new_event(api, account, box_id, message_id))
    assert result.accepted == result.failed == ()
    assert await attempt_docs(stores, account, message_id) == []
    assert await folder(api, account, box_id, message_id) == "new"
    await quiet.close()


async def test_other_events_and_gone_messages_send_nothing(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    box_id, message_id = await voicemail(api, stores, account)
    event = await voicemail_new_event(api, account, box_id, message_id)
    mailer = notifier(api, port)
    await mailer.handle(replace(event, name=VOICEMAIL_SAVED))
    resp, body = await api.call("DELETE", message_path(account, box_id, message_id),
                                account.token)
    assert_success(resp, body)
    await mailer.handle(event)
    assert recorder.received == []
    assert recorder.data_commands == 0


async def test_no_recipient_no_email(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    box_id, message_id = await voicemail(api, stores, account, owner_email=None,
                                         delete_after_notify=True)
    result = await notifier(api, port).handle(
        await voicemail_new_event(api, account, box_id, message_id))
    assert result.accepted == result.failed == ()
    assert recorder.data_commands == 0
    assert await folder(api, account, box_id, message_id) == "new"


# -- the status endpoint ---------------------------------------------------------------------


async def test_status_lists_email_and_webhook_attempts_newest_first(
    api: Api, stores: Stores, account: Tenant, smtp: tuple[Recorder, int],
) -> None:
    recorder, port = smtp
    recorder.data_replies = ["452 4.2.2 Mailbox full"]
    box_id, message_id = await voicemail(api, stores, account)
    await notifier(api, port).handle(await voicemail_new_event(api, account, box_id, message_id))
    emails = await statuses(api, account, box_id, message_id)
    newest = max(r["timestamp"] for r in emails)
    db = modb_of_id(account, message_id)
    base = {"pvt_type": "webhook_attempt", "pvt_message_id": message_id, "pvt_box_id": box_id,
            "pvt_account_id": account.id, "event_id": "e1", "hook_id": "h" * 32}
    await stores.couch.put_doc(db, {**base, "_id": "wh1", "result": "failure", "attempt": 1,
                                    "reason": "bad response code", "response_code": "500",
                                    "retries_left": 1, "pvt_created": newest + 10})
    await stores.couch.put_doc(db, {**base, "_id": "wh2", "result": "success", "attempt": 2,
                                    "response_code": "200", "retries_left": 0,
                                    "pvt_created": newest + 20})
    await stores.couch.put_doc(db, {**base, "_id": "wh3", "pvt_message_id": "other",
                                    "result": "success", "attempt": 1,
                                    "pvt_created": newest + 30})
    rows = await statuses(api, account, box_id, message_id)
    assert rows[:2] == [
        {"channel": "webhook", "recipient": "h" * 32, "result": "success", "code": 200,
         "text": None, "attempt": 2, "timestamp": newest + 20},
        {"channel": "webhook", "recipient": "h" * 32, "result": "failure", "code": 500,
         "text": "bad response code", "attempt": 1, "timestamp": newest + 10}]
    assert [(r["channel"], r["attempt"], r["code"]) for r in rows[2:]] == [
        ("email", 2, 250), ("email", 1, 452)]
    assert [r["timestamp"] for r in rows] == sorted((r["timestamp"] for r in rows), reverse=True)


async def test_status_is_scoped_like_every_endpoint(
    api: Api, stores: Stores, make_account: MakeAccount, smtp: tuple[Recorder, int],
) -> None:
    _, port = smtp
    tenant, stranger = await make_account(), await make_account()
    child = await make_account(parent=tenant)
    box_id, message_id = await voicemail(api, stores, child)
    await notifier(api, port).handle(await voicemail_new_event(api, child, box_id, message_id))
    path = message_path(child, box_id, message_id) + "/notifications"
    for token in (child.token, tenant.token):  # itself, and an ancestor
        resp, body = await api.call("GET", path, token)
        assert len(assert_success(resp, body)) == 1
    resp, body = await api.call("GET", path, stranger.token)
    assert_error(resp, body, 403)
    resp, body = await api.call("GET", path)
    assert_error(resp, body, 401)
    # The stranger's own account does not have the message.
    other_box = await create_box(api, stranger, mailbox="2100")
    for box in (box_id, other_box):
        resp, body = await api.call(
            "GET", message_path(stranger, box, message_id) + "/notifications", stranger.token)
        assert_error(resp, body, 404)
    # Another box of the same account does not have it either.
    sibling = await create_box(api, child, mailbox="2200")
    resp, body = await api.call(
        "GET", message_path(child, sibling, message_id) + "/notifications", child.token)
    assert_error(resp, body, 404)
    # A message without attempts answers an empty list.
    quiet_box, quiet_id = await voicemail(api, stores, child, owner_email=None, mailbox="2300")
    assert await statuses(api, child, quiet_box, quiet_id) == []


# -- users create --email, settings, pure helpers --------------------------------------------


async def test_users_create_sets_the_email(
    make_account: MakeAccount, stores: Stores, settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tenant = await make_account()
    args = cli_args(settings, "--account", tenant.id, "--username", "eve", "--password", "pw",
                    "--email", "Eve@Example.org")
    assert await asyncio.to_thread(main_users, args) == 0
    user_id = json.loads(capsys.readouterr().out)["user_id"]
    doc = await stores.users.get(tenant.id, user_id)
    assert doc is not None
    assert doc["email"] == "Eve@Example.org"
    bad = cli_args(settings, "--account", tenant.id, "--username", "mallory", "--password", "pw",
                   "--email", "m@example.org\nBcc: x@evil.test")
    assert await asyncio.to_thread(main_users, bad) == 2
    assert capsys.readouterr().out == ""


def test_smtp_settings_from_the_environment() -> None:
    assert settings_from_env({}).smtp_host is None
    plain = settings_from_env({"PISTON_VM_SMTP_HOST": "mx.example.org"})
    assert (plain.smtp_port, plain.smtp_security) == (25, "none")
    assert plain.smtp_from.startswith("voicemail@")
    assert (plain.email_attachment_max_bytes, plain.email_backoff_s) == (10_000_000, 30.0)
    submission = settings_from_env({
        "PISTON_VM_SMTP_HOST": "mx.example.org", "PISTON_VM_SMTP_PORT": "587",
        "PISTON_VM_SMTP_USERNAME": "u", "PISTON_VM_SMTP_PASSWORD": "p",
        "PISTON_VM_SMTP_FROM": "vm@example.org", "PISTON_VM_EMAIL_BACKOFF_S": "1.5",
        "PISTON_VM_EMAIL_ATTACHMENT_MAX_BYTES": "1000", "PISTON_VM_EMAIL_RETRIES": "1"})
    assert (submission.smtp_security, submission.smtp_username, submission.smtp_from,
            submission.email_backoff_s, submission.email_attachment_max_bytes,
            submission.email_retries) == ("starttls", "u", "vm@example.org", 1.5, 1000, 1)
    assert submission.smtp_password == "p"
    assert "smtp_password" not in repr(submission)  # never in logs
    tls = settings_from_env({"PISTON_VM_SMTP_PORT": "465", "PISTON_VM_SMTP_TLS": "TLS"})
    assert tls.smtp_security == "tls"
    assert settings_from_env({"PISTON_VM_SMTP_TLS": "none",
                              "PISTON_VM_SMTP_PORT": "2525"}).smtp_security == "none"
    with pytest.raises(ValueError, match="SMTP_TLS"):
        settings_from_env({"PISTON_VM_SMTP_TLS": "ssl"})


@pytest.mark.parametrize(("raw", "expected"), [
    ("a@example.org", "a@example.org"),
    ("  First.Last+tag@Example.ORG ", "First.Last+tag@Example.ORG"),
    ("a@bücher.de", "a@xn--bcher-kva.de"),
    ("a@example.org\r\nBcc: b@evil.test", None),
    ("a@example.org, b@evil.test", None),
    ("<a@example.org>", None),
    ("Ann <a@example.org>", None),
    ('"a b"@example.org', None),
    ("ü@example.org", None),
    ("a@localhost", None),
    ("a@@example.org", None),
    ("", None),
    (42, None),
])
def test_mail_address(raw: object, expected: str | None) -> None:
    assert mail_address(raw) == expected


def test_header_text_and_recipients() -> None:
    assert header_text("a\r\nBcc: b\u2028c\x00d\te") == "a Bcc: b c d e"
    assert header_text("x" * 300) == "x" * 250
    assert unique_recipients(["A@x.org", None, "", " a@X.org ", "b@x.org", 7]) == [
        "A@x.org", "b@x.org"]
    assert length_text(4580) == "0:05"
    assert length_text(61_000) == "1:01"
    assert length_text(None) == length_text(-1) == length_text(True) == "0:00"
