"""Legacy (pre-4.0) box messages moved into MODBs (docs/storage.md 6; docs/decisions.md D-13,
P-25), and the command."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import secrets
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from piston_vm.cli.migrate import MigrateError, ProgressBar, run_migrate
from piston_vm.core import errors, gregorian
from piston_vm.core.config import CouchEndpoint, Settings
from piston_vm.services.audio import AudioService
from piston_vm.services.legacy import (
    LegacyMigrator,
    MigrationReport,
    as_time,
    message_time,
    remaining_messages,
)
from piston_vm.services.message_docs import Located
from piston_vm.storage.names import DbName
from piston_vm.storage.stores import Stores
from tests.conftest import MakeAccount, Tenant

JsonObject = dict[str, Any]

HEX32 = re.compile(r"^[0-9a-f]{32}$")
# 2016-08-11T00:18:42Z, then one message every 13 days: 12 messages over five months.
BASE_TIME = 63638093922
STEP_S = 13 * 86_400
BOX_MODIFIED = 63680000000  # 2017-12-09, the box's own pvt_modified
MEDIA_MODIFIED = 63660000000  # 2017-04-21, a media doc's pvt_modified
LA = "America/Los_Angeles"


def month_of(time: int) -> str:
    year, month = gregorian.utc_month(time)
    return f"{year:04d}{month:02d}"


def audio_bytes(seed: str, size: int = 3000) -> bytes:
    """Distinct, non-repeating bytes per message, so a mixed-up link would be noticed."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return out[:size]


async def put_media(
    stores: Stores,
    tenant: Tenant,
    box_id: str,
    audio: bytes | None,
    media_id: str | None = None,
    **fields: Any,
) -> str:
    """A legacy media doc in the account DB, its audio uploaded as a standalone attachment."""
    media_id = media_id or secrets.token_hex(16)
    doc: JsonObject = {
        "_id": media_id, "name": f"mailbox 3001 message {media_id[:6]}",
        "description": "voicemail message with media", "media_source": "recording",
        "source_type": "voicemail", "source_id": box_id, "streamable": True,
        "pvt_type": "private_media", "pvt_account_id": tenant.id,
        "pvt_account_db": tenant.account.db.encoded, **fields,
    }
    rev = await stores.couch.put_doc(tenant.db, doc)
    if audio is not None:
        await stores.couch.put_attachment(
            tenant.db, media_id, rev, f"{media_id}.mp3", "audio/mpeg", audio, len(audio))
    return media_id


def element(media_id: str | None, timestamp: Any = None, **extra: Any) -> JsonObject:
    """A legacy `messages` element as the pre-4.0 callflow wrote it."""
    item: JsonObject = {
        "from": "15554443344@10.0.1.1", "to": "3001@sip.example.net",
        "caller_id_number": "15554443344", "caller_id_name": "NO ONE",
        "call_id": secrets.token_hex(16), "folder": "new", "length": 20520,
    }
    if timestamp is not None:
        item["timestamp"] = timestamp
    if media_id is not None:
        item["media_id"] = media_id
    item.update(extra)
    return item


async def put_box(
    stores: Stores, tenant: Tenant, elements: list[Any], mailbox: str = "3001", **extra: Any
) -> JsonObject:
    box: JsonObject = {
        "_id": secrets.token_hex(16), "name": f"Legacy {mailbox}", "mailbox": mailbox,
        "pin": "0000", "timezone": LA, "media": {}, "media_extension": "wav",
        "check_if_owner": True, "require_pin": False, "messages": elements,
        "pvt_type": "vmbox", "pvt_vsn": "1", "pvt_account_id": tenant.id,
        "pvt_account_db": tenant.account.db.encoded,
        "pvt_created": BOX_MODIFIED - 86_400, "pvt_modified": BOX_MODIFIED, **extra,
    }
    await stores.couch.put_doc(tenant.db, box)
    return box


@dataclass
class LegacyBox:
    """A realistic legacy box and what each of its entries should become."""

    box: JsonObject
    audio: dict[str, bytes] = field(default_factory=dict)  # media id → bytes (migrates)
    times: dict[str, int] = field(default_factory=dict)  # media id → expected message time
    dangling: set[str] = field(default_factory=set)  # migrates, link points at a missing doc
    no_media: set[str] = field(default_factory=set)  # media doc without attachment: fails
    bulk_only: set[str] = field(default_factory=set)  # tries used up: only the command tries

    @property
    def id(self) -> str:
        return str(self.box["_id"])

    @property
    def migratable(self) -> set[str]:
        return set(self.times)


async def legacy_box(stores: Stores, tenant: Tenant, mailbox: str = "3001") -> LegacyBox:
    """12 good entries across six months, plus every awkward case of docs/storage.md 6.1."""
    plan = LegacyBox({})
    box_id = secrets.token_hex(16)
    elements: list[Any] = []
    for n in range(12):
        audio = audio_bytes(f"{box_id}:{n}")
        media_id = await put_media(stores, tenant, box_id, audio,
                                   pvt_created=BASE_TIME + n * STEP_S)
        time = BASE_TIME + n * STEP_S + 17
        # Some timestamps were stored as strings by old callflows: they still parse.
        elements.append(element(media_id, str(time) if n % 4 == 3 else time))
        plan.audio[media_id] = audio
        plan.times[media_id] = time
    # No timestamp: the media doc's pvt_modified is the time.
    audio = audio_bytes(f"{box_id}:no-ts")
    media_id = await put_media(stores, tenant, box_id, audio, pvt_modified=MEDIA_MODIFIED,
                               pvt_created=MEDIA_MODIFIED - 5)
    elements.append(element(media_id, None))
    plan.audio[media_id], plan.times[media_id] = audio, MEDIA_MODIFIED
    # Malformed timestamp and a media doc without times: the box's pvt_modified.
    audio = audio_bytes(f"{box_id}:bad-ts")
    media_id = await put_media(stores, tenant, box_id, audio)
    elements.append(element(media_id, "yesterday"))
    plan.audio[media_id], plan.times[media_id] = audio, BOX_MODIFIED
    # Media doc missing altogether: not a failure (6.2 step 7); the link dangles.
    media_id = secrets.token_hex(16)
    elements.append(element(media_id, BASE_TIME + 5))
    plan.times[media_id] = BASE_TIME + 5
    plan.dangling.add(media_id)
    # Media doc missing and no timestamp: falls back to the box time.
    media_id = secrets.token_hex(16)
    elements.append(element(media_id, None))
    plan.times[media_id] = BOX_MODIFIED
    plan.dangling.add(media_id)
    # Media doc present but its audio never arrived.
    media_id = await put_media(stores, tenant, box_id, None, pvt_modified=MEDIA_MODIFIED)
    elements.append(element(media_id, BASE_TIME + 9))
    plan.no_media.add(media_id)
    # Failed twice before (a lazy pass still retries it) and now succeeds.
    audio = audio_bytes(f"{box_id}:twice")
    media_id = await put_media(stores, tenant, box_id, audio)
    elements.append(element(media_id, BASE_TIME + 11, migration_error="conflict",
                            migration_tries=2))
    plan.audio[media_id], plan.times[media_id] = audio, BASE_TIME + 11
    # Failed five times: a lazy pass skips it, the command retries and migrates it.
    audio = audio_bytes(f"{box_id}:five")
    media_id = await put_media(stores, tenant, box_id, audio)
    elements.append(element(media_id, BASE_TIME + 13, migration_error="no_modb",
                            migration_tries=5))
    plan.audio[media_id], plan.times[media_id] = audio, BASE_TIME + 13
    plan.bulk_only.add(media_id)
    # No media id at all: an empty element and one that already failed five times.
    elements.append({})
    elements.append(element(None, BASE_TIME, migration_error="no_timestamp", migration_tries=5))
    plan.box = await put_box(stores, tenant, elements, mailbox=mailbox, _id=box_id)
    return plan


async def all_doc_revs(stores: Stores, db: str) -> dict[str, str]:
    _, result = await stores.couch.request(
        "GET", stores.couch.url(db, "_all_docs"), db=db)
    return {str(row["id"]): str(row["value"]["rev"]) for row in result["rows"]}


async def account_revs(stores: Stores, tenant: Tenant) -> dict[str, dict[str, str]]:
    """Every document revision of the account: its DB and all of its MODBs."""
    revs = {tenant.db: await all_doc_revs(stores, tenant.db)}
    for modb in await stores.messages.all_modbs(tenant.account.db):
        revs[modb.unencoded] = await all_doc_revs(stores, modb.unencoded)
    return revs


async def box_messages(stores: Stores, tenant: Tenant, box_id: str) -> list[Any]:
    box = await stores.couch.get_doc(tenant.db, box_id)
    assert box is not None
    messages = box.get("messages")
    assert isinstance(messages, list)
    return messages


async def migrated_docs(stores: Stores, tenant: Tenant, box_id: str) -> dict[str, Located]:
    """old media id → the box's migrated message, read from every MODB."""
    found: dict[str, Located] = {}
    for modb in await stores.messages.all_modbs(tenant.account.db):
        _, result = await stores.couch.request(
            "GET", stores.couch.url(modb.unencoded, "_all_docs"),
            params={"include_docs": "true"}, db=modb.unencoded)
        for row in result["rows"]:
            doc = row["doc"]
            if doc.get("source_id") == box_id and "pvt_previous_id" in doc:
                assert doc["pvt_previous_id"] not in found, "migrated twice"
                found[doc["pvt_previous_id"]] = Located(modb, doc)
    return found


async def read_audio(stores: Stores, located: Located) -> bytes | None:
    audio = AudioService(stores)
    source = await audio.source(located)
    if source is None:
        return None
    return b"".join([chunk async for chunk in audio.chunks(source)])


def by_media_id(messages: list[Any]) -> dict[str, JsonObject]:
    return {m["media_id"]: m for m in messages if isinstance(m, dict) and "media_id" in m}


@pytest.fixture
def migrator(stores: Stores, settings: Settings) -> LegacyMigrator:
    return LegacyMigrator(stores, settings)


# -- pure rules -----------------------------------------------------------------------------


def test_message_time_fallbacks_in_the_spec_order() -> None:
    box = {"pvt_modified": BOX_MODIFIED, "pvt_created": 1}
    media = {"pvt_modified": MEDIA_MODIFIED, "pvt_created": 2}
    now = gregorian.now()
    assert message_time({"timestamp": BASE_TIME}, media, box, now) == (BASE_TIME, True)
    assert message_time({"timestamp": f" {BASE_TIME} "}, media, box, now) == (BASE_TIME, True)
    assert message_time({"timestamp": float(BASE_TIME)}, media, box, now) == (BASE_TIME, True)
    unusable: Any
    for unusable in (None, "", "soon", True, [], {}, 0, -5, "12ab", 1.5, 10**20):
        assert message_time({"timestamp": unusable}, media, box, now) == (MEDIA_MODIFIED, True)
    assert message_time({}, {"pvt_created": 63600000000}, box, now) == (63600000000, True)
    assert message_time({}, None, box, now) == (BOX_MODIFIED, False)
    assert message_time({}, {}, {"pvt_created": 63600000001}, now) == (63600000001, False)
    assert message_time({}, None, {}, now) == (now, False)


def test_as_time_accepts_only_integers_naming_a_real_month() -> None:
    assert as_time(63630058722) == 63630058722
    assert as_time("63630058722") == 63630058722
    assert as_time(None) is None
    assert as_time(False) is None
    assert as_time(0) is None
    assert as_time(10**15) is None  # year > 9999: no MODB name exists for it


def test_remaining_messages_removes_by_id_and_annotates_only_untouched_failures() -> None:
    no_id: JsonObject = {}
    bad = {"media_id": "b", "migration_error": "forbidden", "migration_tries": "2"}
    concurrent_edit = {"media_id": "a", "timestamp": 1, "migration_error": "x"}
    failures = [(no_id, "no_media_id"), (bad, "forbidden")]
    result = remaining_messages([concurrent_edit, no_id, bad, "junk"], {"a"}, failures)
    assert result == [
        {"migration_error": "no_media_id", "migration_tries": 1},
        {"media_id": "b", "migration_error": "forbidden", "migration_tries": 3},
        "junk",
    ]
    # A re-read array where another pass already annotated the element: left as it is.
    annotated = {**bad, "migration_tries": 3}
    assert remaining_messages([annotated], {"a"}, [(bad, "forbidden")]) == [annotated]


def test_report_adds_up_and_merges() -> None:
    report = MigrationReport(processed=5, migrated=2, skipped=1)
    report.failed["no_media_id"] += 2
    other = MigrationReport(processed=1, migrated=1)
    report.merge(other)
    assert report.as_dict() == {
        "processed": 6, "migrated": 3, "succeeded": 3, "failed": {"no_media_id": 2},
        "failed_total": 2, "no_id": 2, "skipped": 1}


# -- one box, lazily --------------------------------------------------------------------------


async def test_lazy_migration_of_a_realistic_box(
    stores: Stores, account: Tenant, migrator: LegacyMigrator
) -> None:
    plan = await legacy_box(stores, account)
    before = await stores.couch.get_doc(account.db, plan.id)
    assert before is not None
    legacy_count = len(before["messages"])
    media_revs = {k: v for k, v in (await all_doc_revs(stores, account.db)).items()
                  if k not in (plan.id, account.id) and not k.startswith("_design/")}

    report = await migrator.migrate_box(account.account, plan.id, lazy=True)

    lazy_ids = plan.migratable - plan.bulk_only
    assert report.processed == legacy_count == 21
    assert report.migrated == len(lazy_ids) == 17
    assert report.failed == Counter({"no_media": 1, "no_media_id": 1})
    assert report.skipped == 2
    assert report.processed == report.migrated + report.failed_total + report.skipped

    migrated = await migrated_docs(stores, account, plan.id)
    assert set(migrated) == lazy_ids
    for old_id in lazy_ids:
        located = migrated[old_id]
        time = plan.times[old_id]
        assert located.id == f"{month_of(time)}-{old_id}"
        assert located.modb == account.account.db.modb(*gregorian.utc_month(time))
        assert located.doc["utc_seconds"] == time
        audio = await read_audio(stores, located)
        if old_id in plan.dangling:
            assert audio is None
        else:
            assert audio == plan.audio[old_id], old_id
    # Months come from the message time, across six months (and the fallbacks' months).
    assert len({located.modb for located in migrated.values()}) >= 6

    # What stays: the media doc without audio and the empty element, both annotated, and the
    # two whose lazy tries are used up, untouched.
    remaining = await box_messages(stores, account, plan.id)
    assert len(remaining) == 4
    assert legacy_count == len(remaining) + len(migrated)
    (no_media_id,) = plan.no_media
    kept = by_media_id(remaining)
    assert kept[no_media_id]["migration_error"] == "no_media"
    assert kept[no_media_id]["migration_tries"] == 1
    assert {"migration_error": "no_media_id", "migration_tries": 1} in remaining
    (five,) = plan.bulk_only
    assert kept[five]["migration_tries"] == 5
    assert kept[five]["migration_error"] == "no_modb"
    assert remaining[-1]["migration_tries"] == 5
    assert remaining[-1]["migration_error"] == "no_timestamp"

    # Only `messages` changed on the box; the legacy media docs were not touched at all.
    after = await stores.couch.get_doc(account.db, plan.id)
    assert after is not None
    assert {k: v for k, v in after.items() if k not in ("_rev", "messages")} == {
        k: v for k, v in before.items() if k not in ("_rev", "messages")}
    revs = await all_doc_revs(stores, account.db)
    assert {k: revs[k] for k in media_revs} == media_revs


async def test_migrated_document_is_exactly_the_spec_mapping(
    stores: Stores, account: Tenant, migrator: LegacyMigrator
) -> None:
    box_id = secrets.token_hex(16)
    audio = audio_bytes("exact")
    media_id = await put_media(stores, account, box_id, audio)
    legacy = element(media_id, 63674208419, migration_error="conflict", migration_tries=1,
                     custom_key="kept")
    await put_box(stores, account, [legacy], _id=box_id, mailbox="3001")

    report = await migrator.migrate_box(account.account, box_id, lazy=True)
    assert (report.processed, report.migrated) == (1, 1)

    modb = account.account.db.modb(2017, 10)
    new_id = f"201710-{media_id}"
    doc = await stores.messages.get(modb, new_id)
    assert doc is not None
    (attachment,) = doc["pvt_attachments"]
    assert re.fullmatch(r"[0-9a-f]{32}\.wav", attachment)
    metadata = {k: v for k, v in legacy.items()
                if k not in ("migration_error", "migration_tries")}
    metadata.update(media_id=new_id, timestamp=63674208419)
    expected = {
        "_id": new_id,
        "name": "mailbox 3001 message 2017-10-02 17:6:59",
        "description": "voicemail message with media",
        "source_type": "voicemail",
        "source_id": box_id,
        "media_source": "recording",
        "media_filename": attachment,
        "streamable": True,
        "utc_seconds": 63674208419,
        "metadata": metadata,
        "pvt_attachments": {attachment: {
            "content_type": "audio/x-wav", "length": 0, "stub": False,
            "handler": {"kz_att_link": {
                "att_dbname": account.account.db.encoded, "att_docid": media_id}}}},
        "pvt_type": "mailbox_message",
        "pvt_account_id": account.id,
        "pvt_account_db": modb.encoded,
        "pvt_created": 63674208419,
        "pvt_modified": 63674208419,
        "pvt_node": "piston_vm@test",
        "pvt_moved_to_modb": "true",
        "pvt_previous_id": media_id,
    }
    assert {k: v for k, v in doc.items() if k not in ("_rev", "pvt_document_hash")} == expected
    assert re.fullmatch(r"[0-9a-f]{32}", doc["pvt_document_hash"])
    assert await read_audio(stores, Located(modb, doc)) == audio
    # The MODB was created on demand with its design doc.
    assert await stores.couch.get_doc(modb.unencoded, "_design/mailbox_messages") is not None
    assert await box_messages(stores, account, box_id) == []


async def test_extension_defaults_to_mp3_and_other_extensions_map_their_type(
    stores: Stores, account: Tenant, migrator: LegacyMigrator
) -> None:
    expected = {None: ("mp3", "audio/mpeg"), "mp4": ("mp4", "audio/mp4"),
                "mp3": ("mp3", "audio/mpeg")}
    for extension, (ext, content_type) in expected.items():
        box_id = secrets.token_hex(16)
        media_id = await put_media(stores, account, box_id, b"abc")
        box = await put_box(stores, account, [element(media_id, BASE_TIME)], _id=box_id)
        if extension is None:
            del box["media_extension"]
        else:
            box["media_extension"] = extension
        await stores.couch.put_doc(account.db, box)
        await migrator.migrate_box(account.account, box_id, lazy=True)
        doc = await stores.messages.get(account.account.db.modb(*gregorian.utc_month(BASE_TIME)),
                                        f"{month_of(BASE_TIME)}-{media_id}")
        assert doc is not None
        (name, entry), = doc["pvt_attachments"].items()
        assert name.endswith("." + ext)
        assert HEX32.fullmatch(name.split(".")[0])
        assert doc["media_filename"] == name
        assert entry["content_type"] == content_type


async def test_nothing_to_do_is_one_read_and_no_write(
    stores: Stores, account: Tenant, migrator: LegacyMigrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = await put_box(stores, account, [])
    without = await put_box(stores, account, [], mailbox="3002")
    del without["messages"]
    await stores.couch.put_doc(account.db, without)
    before = await all_doc_revs(stores, account.db)
    original_request = stores.couch.request
    requests: list[str] = []

    async def counting(method: str, url: Any, **kwargs: Any) -> Any:
        requests.append(f"{method} {url.path}")
        return await original_request(method, url, **kwargs)

    monkeypatch.setattr(stores.couch, "request", counting)
    for box_id in (plain["_id"], without["_id"], secrets.token_hex(16)):
        report = await migrator.migrate_box(account.account, box_id, lazy=True)
        assert report == MigrationReport()
    monkeypatch.undo()
    assert len(requests) == 3, requests  # one box GET each
    assert await all_doc_revs(stores, account.db) == before
    assert await stores.messages.all_modbs(account.account.db) == []


async def test_lazy_passes_stop_after_the_retry_limit(
    stores: Stores, account: Tenant, migrator: LegacyMigrator, settings: Settings
) -> None:
    box = await put_box(stores, account, [{"caller_id_name": "no media id"}])
    for tries in range(1, settings.migration_retry_limit + 1):
        report = await migrator.migrate_box(account.account, box["_id"], lazy=True)
        assert report.failed == Counter({"no_media_id": 1})
        (stored,) = await box_messages(stores, account, box["_id"])
        assert stored == {"caller_id_name": "no media id", "migration_error": "no_media_id",
                          "migration_tries": tries}
    revs = await all_doc_revs(stores, account.db)
    report = await migrator.migrate_box(account.account, box["_id"], lazy=True)
    assert (report.processed, report.skipped, report.failed_total) == (1, 1, 0)
    assert await all_doc_revs(stores, account.db) == revs


async def test_save_errors_stay_in_the_box_with_couchdb_error_text(
    stores: Stores, account: Tenant, migrator: LegacyMigrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    box_id = secrets.token_hex(16)
    forbidden, unreachable, fine = (
        [await put_media(stores, account, box_id, b"x") for _ in range(3)])
    elements = [element(forbidden, BASE_TIME), element(unreachable, BOX_MODIFIED),
                element(fine, BASE_TIME + 1, migration_error="forbidden", migration_tries=3)]
    await put_box(stores, account, elements, _id=box_id)
    original_bulk = stores.messages.bulk_save

    async def refusing(modb: DbName, new_docs: list[JsonObject]) -> dict[str, str | None]:
        if modb.month == gregorian.utc_month(BOX_MODIFIED):
            raise errors.datastore_unreachable()
        rejected = [d for d in new_docs if d["pvt_previous_id"] == forbidden]
        outcome = await original_bulk(modb, [d for d in new_docs if d not in rejected])
        return {**outcome, **{d["_id"]: "forbidden" for d in rejected}}

    monkeypatch.setattr(stores.messages, "bulk_save", refusing)
    report = await migrator.migrate_box(account.account, box_id, lazy=True)
    monkeypatch.undo()

    assert report.migrated == 1
    assert report.failed == Counter({"forbidden": 1, "db_error": 1})
    kept = by_media_id(await box_messages(stores, account, box_id))
    assert set(kept) == {forbidden, unreachable}
    assert kept[forbidden] == {**elements[0], "migration_error": "forbidden",
                               "migration_tries": 1}
    assert kept[unreachable] == {**elements[1], "migration_error": "db_error",
                                 "migration_tries": 1}
    # The next pass succeeds: the entries leave the box as migrated messages.
    report = await migrator.migrate_box(account.account, box_id, lazy=True)
    assert report.migrated == 2
    assert await box_messages(stores, account, box_id) == []
    assert set(await migrated_docs(stores, account, box_id)) == {forbidden, unreachable, fine}


# -- the bulk pass and re-runs ---------------------------------------------------------------


async def test_bulk_retries_used_up_entries_and_a_rerun_changes_nothing(
    stores: Stores, account: Tenant, migrator: LegacyMigrator
) -> None:
    plan = await legacy_box(stores, account)
    await migrator.migrate_box(account.account, plan.id, lazy=True)

    report = await migrator.migrate_account(account.account, lazy=False)
    # The five-times entry migrates now; the no-id one fails again (recorded, not dropped).
    assert report.processed == 4
    assert report.migrated == 1
    assert report.failed == Counter({"no_media": 1, "no_media_id": 2})
    assert report.skipped == 0
    migrated = await migrated_docs(stores, account, plan.id)
    assert set(migrated) == plan.migratable
    (five,) = plan.bulk_only
    assert await read_audio(stores, migrated[five]) == plan.audio[five]
    remaining = await box_messages(stores, account, plan.id)
    assert len(remaining) == 3
    assert {"caller_id_name", "migration_error"} <= set(remaining[-1])
    # A new reason is recorded (tries + 1); failing again as recorded leaves an entry alone.
    assert remaining[-1]["migration_tries"] == 6
    assert remaining[-1]["migration_error"] == "no_media_id"
    assert {"migration_error": "no_media_id", "migration_tries": 1} in remaining
    assert by_media_id(remaining)[next(iter(plan.no_media))]["migration_tries"] == 1
    assert len(remaining) + len(migrated) == 21

    revs = await account_revs(stores, account)
    again = await migrator.migrate_account(account.account, lazy=False)
    assert (again.processed, again.migrated, again.failed_total) == (3, 0, 3)
    assert await account_revs(stores, account) == revs
    lazily = await migrator.migrate_account(account.account, lazy=True)
    assert lazily.migrated == 0
    assert await migrated_docs(stores, account, plan.id) == migrated


async def test_account_pass_finds_every_box_with_pending_entries(
    stores: Stores, account: Tenant, migrator: LegacyMigrator
) -> None:
    plans = [await legacy_box(stores, account, mailbox=str(3001 + n)) for n in range(3)]
    await put_box(stores, account, [], mailbox="4000")
    seen: list[tuple[int, int]] = []

    report = await migrator.migrate_account(
        account.account, lazy=True, progress=lambda done, total: seen.append((done, total)))

    assert report.processed == 3 * 21
    assert report.migrated == 3 * 17
    assert report.skipped == 3 * 2
    assert seen[0] == (0, 63)
    assert seen[-1] == (63, 63)
    for plan in plans:
        assert set(await migrated_docs(stores, account, plan.id)) == (
            plan.migratable - plan.bulk_only)
    # Another lazy pass only retries the failures with tries left (and counts them).
    report = await migrator.migrate_account(account.account, lazy=True)
    assert (report.migrated, report.skipped, report.failed_total) == (0, 6, 6)


async def test_dry_run_writes_nothing(
    stores: Stores, account: Tenant, migrator: LegacyMigrator
) -> None:
    plan = await legacy_box(stores, account)
    revs = await account_revs(stores, account)
    report = await migrator.migrate_account(account.account, lazy=False, dry_run=True)
    assert report.processed == 21
    assert report.migrated == len(plan.migratable)
    assert report.failed == Counter({"no_media": 1, "no_media_id": 2})
    assert await account_revs(stores, account) == revs


# -- concurrency ---------------------------------------------------------------------------


async def test_two_concurrent_passes_migrate_each_entry_once(
    stores: Stores, account: Tenant, settings: Settings
) -> None:
    plan = await legacy_box(stores, account)
    # Two migrators = two service instances: no shared lock, only CouchDB between them.
    first, second = LegacyMigrator(stores, settings), LegacyMigrator(stores, settings)
    reports = await asyncio.gather(
        first.migrate_box(account.account, plan.id, lazy=True),
        second.migrate_box(account.account, plan.id, lazy=True),
        first.migrate_box(account.account, plan.id, lazy=True),
    )
    migrated = await migrated_docs(stores, account, plan.id)
    assert set(migrated) == plan.migratable - plan.bulk_only
    for located in migrated.values():
        assert str(located.doc["_rev"]).startswith("1-"), "written more than once"
    remaining = await box_messages(stores, account, plan.id)
    assert len(remaining) == 4
    assert len(remaining) + len(migrated) == 21
    # The two instances both read the whole box and both count every entry as migrated: the
    # loser's writes were conflicts, which mean "already migrated". The third call waited for
    # the first one's lock and saw only what was left.
    for report in reports:
        assert report.processed == report.migrated + report.failed_total + report.skipped
    assert [(r.processed, r.migrated) for r in reports] == [(21, 17), (21, 17), (4, 0)]
    assert all("conflict" not in r.failed for r in reports)
    # The concurrent pair recorded their shared failure once; the third pass once more.
    (no_media_id,) = plan.no_media
    assert by_media_id(remaining)[no_media_id]["migration_tries"] == 2


async def test_box_update_keeps_a_concurrent_edit(
    stores: Stores, account: Tenant, migrator: LegacyMigrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    box_id = secrets.token_hex(16)
    media = [await put_media(stores, account, box_id, audio_bytes(str(n))) for n in range(3)]
    await put_box(stores, account, [element(m, BASE_TIME + n) for n, m in enumerate(media)],
                  _id=box_id)
    late_media = await put_media(stores, account, box_id, b"late")
    original_put = stores.couch.put_doc
    edits = 0

    async def racing_put(db: str, doc: JsonObject) -> str:
        nonlocal edits
        if doc.get("_id") == box_id and edits == 0:
            # Someone renames the box and a new legacy message arrives just before our save.
            edits += 1
            fresh = await stores.couch.get_doc(db, box_id)
            assert fresh is not None
            fresh["name"] = "Renamed meanwhile"
            fresh["messages"].append(element(late_media, BASE_TIME + 100))
            await original_put(db, fresh)
        return await original_put(db, doc)

    monkeypatch.setattr(stores.couch, "put_doc", racing_put)
    report = await migrator.migrate_box(account.account, box_id, lazy=True)
    monkeypatch.undo()

    assert report.migrated == 3
    box = await stores.couch.get_doc(account.db, box_id)
    assert box is not None
    assert box["name"] == "Renamed meanwhile"
    assert [m["media_id"] for m in box["messages"]] == [late_media]
    assert set(await migrated_docs(stores, account, box_id)) == set(media)


async def test_an_interrupted_run_is_finished_by_the_next_one(
    stores: Stores, account: Tenant, migrator: LegacyMigrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documents written but the box not yet saved (a crash between steps 5 and 6)."""
    plan = await legacy_box(stores, account)
    before = await box_messages(stores, account, plan.id)

    async def crash(*_args: Any, **_kwargs: Any) -> bool:
        raise asyncio.CancelledError

    monkeypatch.setattr(migrator, "_update_box", crash)
    with pytest.raises(asyncio.CancelledError):
        await migrator.migrate_box(account.account, plan.id, lazy=False)
    monkeypatch.undo()
    assert await box_messages(stores, account, plan.id) == before
    written = await migrated_docs(stores, account, plan.id)
    assert set(written) == plan.migratable
    # A re-run while the box's own time moved on: entries timed by the box keep their doc.
    box = await stores.couch.get_doc(account.db, plan.id)
    assert box is not None
    box["pvt_modified"] = BOX_MODIFIED + 90 * 86_400
    await stores.couch.put_doc(account.db, box)

    report = await migrator.migrate_box(account.account, plan.id, lazy=False)
    assert report.migrated == len(plan.migratable)
    after = await migrated_docs(stores, account, plan.id)
    assert {k: v.doc["_rev"] for k, v in after.items()} == {
        k: v.doc["_rev"] for k, v in written.items()}
    assert len(await box_messages(stores, account, plan.id)) == 3


# -- old ids (docs/decisions.md P-25)
# -------------------------------------------------------------------------


async def test_resolve_old_id(
    stores: Stores, account: Tenant, migrator: LegacyMigrator
) -> None:
    plan = await legacy_box(stores, account)
    other = await put_box(stores, account, [], mailbox="3999")
    await migrator.migrate_box(account.account, plan.id, lazy=True)
    migrated = await migrated_docs(stores, account, plan.id)
    for old_id, located in migrated.items():
        assert await migrator.resolve_old_id(account.account, plan.id, old_id) == located.id
    some_old_id = next(iter(migrated))
    assert await migrator.resolve_old_id(account.account, other["_id"], some_old_id) is None
    assert await migrator.resolve_old_id(account.account, plan.id, secrets.token_hex(16)) is None
    (no_media_id,) = plan.no_media
    assert await migrator.resolve_old_id(account.account, plan.id, no_media_id) is None
    assert await migrator.resolve_old_id(account.account, plan.id, "") is None
    assert await migrator.resolve_old_id(account.account, plan.id, "x" * 300) is None
    current = migrated[some_old_id].id
    assert await migrator.resolve_old_id(account.account, plan.id, current) == current
    # A deleted message is not found by its old id either.
    located = migrated[some_old_id]
    await stores.messages.save(located.modb, {**located.doc, "pvt_deleted": True})
    assert await migrator.resolve_old_id(account.account, plan.id, some_old_id) is None


# -- the command ---------------------------------------------------------------------------


async def test_run_migrate_one_account_dry_run_then_real_then_again(
    stores: Stores, account: Tenant, settings: Settings
) -> None:
    plan = await legacy_box(stores, account)
    revs = await account_revs(stores, account)
    dry = await run_migrate(settings, account.id, False, True)
    assert (dry.processed, dry.migrated) == (21, len(plan.migratable))
    assert await account_revs(stores, account) == revs

    report = await run_migrate(settings, account.id, False, False)
    assert report.as_dict() == {
        "processed": 21, "migrated": 18, "succeeded": 18,
        "failed": {"no_media": 1, "no_media_id": 2}, "failed_total": 3, "no_id": 2,
        "skipped": 0}
    assert set(await migrated_docs(stores, account, plan.id)) == plan.migratable

    revs = await account_revs(stores, account)
    again = await run_migrate(settings, account.id, False, False)
    assert (again.processed, again.migrated, again.failed_total) == (3, 0, 3)
    assert await account_revs(stores, account) == revs


async def test_run_migrate_stops_between_boxes_and_a_rerun_finishes(
    stores: Stores, make_account: MakeAccount, settings: Settings
) -> None:
    tenant = await make_account()
    plans = [await legacy_box(stores, tenant, mailbox=str(5000 + n)) for n in range(6)]
    stop = asyncio.Event()

    def progress(_accounts_done: int, _accounts: int, done: int, _total: int) -> None:
        if done > 0:
            stop.set()  # Ctrl-C right after the first box finished

    first = await run_migrate(settings, tenant.id, False, False, progress=progress, stop=stop)
    assert 0 < first.processed < 6 * 21
    # Every entry is in exactly one place: still in its box, or migrated and removed.
    for plan in plans:
        remaining = await box_messages(stores, tenant, plan.id)
        migrated = await migrated_docs(stores, tenant, plan.id)
        assert len(remaining) + len(migrated) == 21
        assert not set(by_media_id(remaining)) & set(migrated)
    second = await run_migrate(settings, tenant.id, False, False)
    assert first.migrated + second.migrated == 6 * 18
    for plan in plans:
        assert set(await migrated_docs(stores, tenant, plan.id)) == plan.migratable


async def test_run_migrate_all_accounts(
    stores: Stores, make_account: MakeAccount, settings: Settings
) -> None:
    tenants = [await make_account(name=f"Legacy {n}") for n in range(2)]
    plans = [await legacy_box(stores, tenant) for tenant in tenants]
    dry = await run_migrate(settings, None, True, True)
    assert dry.migrated >= 2 * len(plans[0].migratable)
    report = await run_migrate(settings, None, True, False)
    assert report.migrated >= 2 * len(plans[0].migratable)
    for tenant, plan in zip(tenants, plans, strict=True):
        assert set(await migrated_docs(stores, tenant, plan.id)) == plan.migratable
    again = await run_migrate(settings, None, True, False)
    assert again.migrated == 0


async def test_run_migrate_refuses_unknown_accounts(settings: Settings) -> None:
    with pytest.raises(MigrateError):
        await run_migrate(settings, secrets.token_hex(16), False, False)
    with pytest.raises(MigrateError):
        await run_migrate(settings, "not-an-account", False, False)
    with pytest.raises(MigrateError):
        await run_migrate(Settings(), secrets.token_hex(16), False, False)


def _url(endpoint: CouchEndpoint) -> str:
    scheme, rest = endpoint.url.split("://", 1)
    return f"{scheme}://{endpoint.user}:{endpoint.password}@{rest}"


# The command as the lead's __main__ wires it: add_migrate_parser + main_migrate.
_COMMAND = (
    "import argparse, sys\n"
    "from piston_vm.cli.migrate import add_migrate_parser, main_migrate\n"
    "parser = argparse.ArgumentParser(prog='piston-vm')\n"
    "add_migrate_parser(parser.add_subparsers(dest='command', required=True))\n"
    "sys.exit(main_migrate(parser.parse_args(sys.argv[1:])))\n"
)


async def run_command(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _COMMAND, "migrate", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_command_prints_a_json_summary_and_no_bar_off_a_terminal(
    stores: Stores, account: Tenant, settings: Settings
) -> None:
    plan = await legacy_box(stores, account)
    assert settings.couchdb is not None
    url = _url(settings.couchdb)
    code, out, err = await run_command("--account", account.id, "--dry-run", "--couchdb-url", url)
    assert code == 0, err
    assert json.loads(out)["dry_run"] is True
    assert await box_messages(stores, account, plan.id) == plan.box["messages"]

    code, out, err = await run_command("--account", account.id, "--couchdb-url", url)
    assert code == 0, err
    assert json.loads(out) == {
        "processed": 21, "migrated": 18, "succeeded": 18,
        "failed": {"no_media": 1, "no_media_id": 2}, "failed_total": 3, "no_id": 2,
        "skipped": 0, "dry_run": False, "interrupted": False}
    assert "\r" not in err
    assert set(await migrated_docs(stores, account, plan.id)) == plan.migratable

    code, out, err = await run_command("--account", secrets.token_hex(16), "--couchdb-url", url)
    assert (code, out) == (1, "")
    assert "does not exist" in err
    code, _, err = await run_command("--account", account.id, "--all")
    assert code == 2
    assert "not allowed with argument" in err


def test_progress_bar_draws_one_line() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar(0, 3, 5, 10)
    first = stream.getvalue()
    bar(2, 3, 10, 10)
    bar.close()
    drawn = stream.getvalue()
    assert "account 1/3" in first
    assert "5/10" in first
    assert "50%" in first
    last = drawn.rsplit("\r", 1)[-1]
    assert "account 3/3" in last
    assert "10/10" in last
    assert "100%" in last
    assert drawn.endswith("\n")
    assert "\n" not in drawn[:-1]  # one line, redrawn in place
