"""The engine's pure rules without CouchDB: deriving events from changes, which addresses a
webhook may reach, and the Standard Webhooks signature (docs/events.md)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest

from piston_vm.core.events import Event
from piston_vm.outbound.webhooks import BlockedAddress, address_allowed, check_uri
from piston_vm.services.events.derive import Origin, message_change, vmbox_change
from piston_vm.services.events.webhooks import (
    hook_matches,
    hook_payload,
    request_parts,
    sign,
)
from piston_vm.storage.names import DbName

ACCOUNT = "a" * 32
ORIGIN = Origin(DbName(ACCOUNT, (2026, 12)), ("p" * 32,), baseline_before=1000, now=5000,
                app_version="4.3", node="piston_vm@test")


def change(doc_id: str, rev: str, deleted: bool = False, **doc: Any) -> dict[str, Any]:
    body = {"_id": doc_id, "_rev": rev, **doc}
    if deleted:
        body["_deleted"] = True
    return {"id": doc_id, "changes": [{"rev": rev}], "deleted": deleted, "doc": body}


def message(folder: str = "new", audio: bool = True, modified: int = 2000,
            **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"pvt_type": "mailbox_message", "source_id": "box1",
                           "metadata": {"folder": folder, "from": "1001@realm",
                                        "to": "2000@realm", "length": 5000},
                           "pvt_modified": modified, **extra}
    if audio:
        doc["_attachments"] = {"a.mp3": {"stub": True, "length": 10}}
    return doc


def names(events: list[Event]) -> list[str]:
    return [e.name for e in events]


def test_a_message_goes_through_new_saved_deleted_and_removal() -> None:
    known: dict[str, list[Any]] = {}
    first = message_change(ORIGIN, change("m1", "1-a", **message()), known)
    assert names(first) == ["doc_created", "voicemail_new"]
    new = first[1]
    assert new.payload["from_user"] == "1001"
    assert new.payload["to_realm"] == "realm"
    assert new.tree == ORIGIN.tree
    assert names(message_change(ORIGIN, change("m1", "2-b", **message()), known)) == [
        "doc_edited"]
    assert names(message_change(ORIGIN, change("m1", "3-c", **message("saved")), known)) == [
        "doc_edited", "voicemail_saved"]
    # Back to new is not new voicemail again.
    assert names(message_change(ORIGIN, change("m1", "4-d", **message("new")), known)) == [
        "doc_edited"]
    deleted = message_change(ORIGIN, change("m1", "5-e", **message(
        "deleted", pvt_folder_change={"folder": "deleted", "reason": "delete_after_notify"})),
        known)
    assert names(deleted) == ["doc_edited", "voicemail_deleted"]
    assert deleted[1].payload["reason"] == "delete_after_notify"
    gone = message_change(ORIGIN, change("m1", "6-f", deleted=True), known)
    assert names(gone) == ["doc_deleted"]  # already in deleted: no second voicemail_deleted
    assert "m1" not in known


def test_ids_are_stable_and_differ_by_revision_and_name() -> None:
    one = message_change(ORIGIN, change("m1", "1-a", **message()), {})
    again = message_change(ORIGIN, change("m1", "1-a", **message()), {})
    other = message_change(ORIGIN, change("m1", "1-z", **message()), {})
    assert [e.id for e in one] == [e.id for e in again]
    assert one[1].id != other[1].id
    assert one[0].id != one[1].id


def test_a_stale_reason_is_not_believed() -> None:
    known: dict[str, list[Any]] = {"m1": ["box1", "saved", 1]}
    events = message_change(ORIGIN, change("m1", "3-c", **message(
        "deleted", pvt_folder_change={"folder": "saved", "reason": "crossbar_action"})), known)
    assert events[1].payload["reason"] == "unknown"


def test_moves_copies_and_old_documents_are_not_news() -> None:
    known: dict[str, list[Any]] = {}
    moved = message_change(ORIGIN, change("m2", "1-a", **message(
        pvt_moved_from={"id": "m1"}, pvt_move_pending=True)), known)
    assert names(moved) == ["doc_created"]
    # A lost move removes its copy: no voicemail_deleted.
    assert names(message_change(ORIGIN, change("m2", "2-b", deleted=True), known)) == [
        "doc_deleted"]
    copied = message_change(ORIGIN, change("m3", "1-a", **message(history=["box0"])), known)
    assert names(copied) == ["doc_created"]
    old = message_change(ORIGIN, change("m4", "1-a", **message(modified=999)), known)
    assert old == []
    assert known["m4"][1] == "new"
    source = message_change(ORIGIN, change("m4", "2-b", deleted=True,
                                           pvt_moved_to={"id": "m5"}), known)
    assert names(source) == ["doc_deleted"]


def test_audio_arriving_later_is_the_moment_of_new_voicemail() -> None:
    known: dict[str, list[Any]] = {}
    assert names(message_change(ORIGIN, change("m1", "1-a", **message(audio=False)),
                                known)) == ["doc_created"]
    assert names(message_change(ORIGIN, change("m1", "2-b", **message()), known)) == [
        "doc_edited", "voicemail_new"]


def test_other_documents_produce_nothing_and_boxes_have_object_events() -> None:
    known: dict[str, int] = {}
    account = Origin(DbName(ACCOUNT), (), 1000, 5000, "4.3", "n")
    assert message_change(ORIGIN, change("x", "1-a", pvt_type="webhook_attempt"), {}) == []
    box: dict[str, Any] = {"pvt_type": "vmbox", "pvt_modified": 2000}
    assert names(vmbox_change(account, change("b1", "1-a", **box), known)) == ["doc_created"]
    assert names(vmbox_change(account, change("b1", "2-a", **box), known)) == ["doc_edited"]
    assert names(vmbox_change(account, change("b1", "3-a", pvt_deleted=True, **box),
                              known)) == ["doc_deleted"]
    assert vmbox_change(account, change("w", "1-a", pvt_type="webhook"), known) == []


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1",
                                     "169.254.169.254", "100.100.100.200", "::1", "fe80::1",
                                     "fc00::1", "0.0.0.0", "224.0.0.1", "::ffff:127.0.0.1",
                                     "100.64.0.1"])
def test_private_and_special_addresses_are_refused(address: str) -> None:
    assert not address_allowed(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(address)


@pytest.mark.parametrize("uri", ["ftp://example.com/x", "file:///etc/passwd", "gopher://h/",
                                 "http://127.0.0.1/", "http://[::1]:8080/", "https:///nohost"])
def test_uris_that_are_never_called(uri: str) -> None:
    with pytest.raises(BlockedAddress):
        check_uri(uri, allow_private=False)


def test_the_signature_is_the_standard_webhooks_one() -> None:
    key = b"k" * 32
    secret = "whsec_" + base64.b64encode(key).decode()
    signature = sign(secret, "msg_1", 1700000000, b'{"a":1}')
    expected = base64.b64encode(hmac.new(key, b'msg_1.1700000000.{"a":1}',
                                         hashlib.sha256).digest()).decode()
    assert signature == "v1," + expected


def test_hook_modifiers_select_events() -> None:
    event = message_change(ORIGIN, change("m1", "1-a", **message()), {})
    created, new = event
    assert hook_matches({"hook": "notifications"}, new)
    assert hook_matches({"hook": "notifications", "custom_data": {"type": "all"}}, new)
    assert not hook_matches({"hook": "notifications", "custom_data": {"type": "voicemail_saved"}},
                            new)
    assert not hook_matches({"hook": "notifications"}, created)
    assert hook_matches({"hook": "object", "custom_data": {"type": "mailbox_message",
                                                           "action": "doc_created"}}, created)
    assert not hook_matches({"hook": "object", "custom_data": {"type": "vmbox"}}, created)
    assert not hook_matches({"hook": "object"}, new)


def test_request_shapes_follow_verb_and_format() -> None:
    payload = {"a": 1, "b": "x y", "c": {"d": True}}
    method, query, body, headers = request_parts({"http_verb": "put", "format": "json"}, payload)
    assert (method, query, headers["Content-Type"]) == ("PUT", None, "application/json")
    method, query, body, headers = request_parts({}, payload)
    assert method == "POST"
    assert body == b"a=1&b=x+y&c=%7B%22d%22%3Atrue%7D"
    method, query, body, headers = request_parts({"http_verb": "get"}, payload)
    assert method == "GET"
    assert body == b""
    assert query == {"a": "1", "b": "x y",
                                                          "c": '{"d":true}'}


def test_custom_data_is_merged_but_never_renames_the_event() -> None:
    created, new = message_change(ORIGIN, change("m1", "1-a", **message()), {})
    hook = {"hook": "object", "custom_data": {"type": "all", "action": "all", "site": "A"}}
    payload = hook_payload(hook, created)
    assert payload["action"] == "doc_created"
    assert payload["type"] == "mailbox_message"
    assert payload["site"] == "A"
    notify = hook_payload({"hook": "notifications",
                           "custom_data": {"type": "voicemail_new", "node": "mine"}}, new)
    assert notify["type"] == "voicemail_new"  # not a payload field: added
    assert notify["node"] == "mine"  # custom_data overwrites other values (the platform's rule)
