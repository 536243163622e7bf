"""Email pieces built from stored fields, so that no field can leave the header it is put in
(docs/email.md, "Headers")."""

from __future__ import annotations

import email.utils
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP

# Anything that could end a header line or hide one: C0 controls (CR, LF, TAB…), DEL, NEL and
# the Unicode line and paragraph separators. They become one space.
_HEADER_BREAKERS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# Dot-atom addresses only: a quoted local part ("a b"@x) is legal but never needed for a
# voicemail recipient, and refusing it keeps commas, quotes and brackets out of envelopes.
_ADDRESS = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+$")
MAX_ADDRESS_CHARS = 254
MAX_HEADER_TEXT_CHARS = 250
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


def header_text(value: object, max_chars: int = MAX_HEADER_TEXT_CHARS) -> str:
    """A value fit for one header: line breaks and controls become a space, then capped."""
    text = _HEADER_BREAKERS.sub(" ", "" if value is None else str(value)).strip()
    return text[:max_chars].rstrip()


def mail_address(raw: object) -> str | None:
    """The address as SMTP can carry it (domain IDNA-encoded), or None when it is not one
    plain address (a list, a display name, a line break, non-ASCII local part…)."""
    if not isinstance(raw, str):
        return None
    local, at, domain = raw.strip().rpartition("@")
    if not at or not local:
        return None
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return None
    address = f"{local}@{ascii_domain}"
    if len(address) > MAX_ADDRESS_CHARS or not _ADDRESS.match(address):
        return None
    return address


def unique_recipients(candidates: Iterable[object]) -> list[str]:
    """Recipients in order, each once: addresses that differ only in case are one person.

    Entries that are not addresses are kept (as written, trimmed) so that their failure can be
    recorded; non-strings and empty strings are dropped.
    """
    seen: set[str] = set()
    unique: list[str] = []
    for candidate in candidates:
        if not isinstance(candidate, str) or not candidate.strip():
            continue
        key = candidate.strip().lower()
        if key not in seen:
            seen.add(key)
            unique.append(candidate.strip())
    return unique


def mime_type(content_type: object) -> tuple[str, str]:
    """(maintype, subtype) of a stored content type; application/octet-stream when unusable."""
    bare = str(content_type or "").split(";", 1)[0].strip().lower()
    if not _MIME_TYPE.match(bare):
        return "application", "octet-stream"
    maintype, subtype = bare.split("/", 1)
    return maintype, subtype


def message_id_header(message_id: str, recipient: str, sender: str) -> str:
    """A Message-ID that is the same for every send of one voicemail to one recipient: mail
    systems that see it twice can tell it is one email."""
    digest = hashlib.sha256(f"{message_id}\n{recipient.lower()}".encode()).hexdigest()[:32]
    domain = sender.rpartition("@")[2] or "piston-vm.invalid"
    return f"<{digest}@{domain}>"


@dataclass(frozen=True, slots=True)
class Rendered:
    """The three parts of an email as the templates made them."""

    subject: str
    text: str
    html: str


@dataclass(frozen=True, slots=True)
class AttachedFile:
    filename: str
    content_type: str
    data: bytes


def build_email(
    rendered: Rendered,
    sender: str,
    sender_name: str,
    recipient: str,
    message_id: str,
    attachment: AttachedFile | None = None,
    now: datetime | None = None,
) -> EmailMessage:
    """One copy for one recipient: `To:` names only them. Header values go through the email
    package's header objects (quoting, RFC 2047 for unicode), after header_text."""
    message = EmailMessage(policy=SMTP)
    message["Subject"] = header_text(rendered.subject, 998)
    message["From"] = Address(display_name=header_text(sender_name), addr_spec=sender)
    message["To"] = Address(addr_spec=recipient)
    message["Date"] = email.utils.format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = message_id
    # RFC 3834: machine-made mail; vacation responders must not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    if attachment is not None:
        maintype, subtype = mime_type(attachment.content_type)
        message.add_attachment(attachment.data, maintype=maintype, subtype=subtype,
                               filename=header_text(attachment.filename))
    return message
