"""The inbox in a real browser (issue 16): Debian's Chromium, driven by Playwright, against
`piston-vm serve` on the suite's CouchDB.

Every test checks the page against the service's own answers: what the page shows is compared
with what the API stores, and what the page does is read back through the API. Messages carry
real WAV audio (stdlib `wave`), so the <audio> element decodes them and reports their length.
Screenshots of the main screens, desktop and phone, are written to var/test-artifacts/inbox/.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Locator, Page, Request, Route, expect

from piston_vm.core import gregorian, tokens
from tests.browser.conftest import (
    ARTIFACTS,
    AXE_SCRIPT,
    PHONE,
    Inbox,
    OpenInbox,
    Seeder,
    wav_audio,
)
from tests.conftest import TEST_TOKEN_SECRET

JsonObject = dict[str, Any]

FRONT_ZONE = "America/New_York"
NIGHT_ZONE = "Europe/Paris"
SESSION_KEY = "piston_vm.inbox.session"
UNIX_EPOCH_GREGORIAN_S = 62167219200


@dataclass
class Voicemail:
    id: str
    name: str
    number: str
    timestamp: int
    seconds: float
    folder: str
    audio: bytes

    @property
    def label(self) -> str:
        return f"{self.name} ({self.number})"


@dataclass
class Scene:
    front: str
    night: str
    alice: Voicemail
    bob: Voicemail
    carol: Voicemail

    @property
    def newest_first(self) -> list[Voicemail]:
        return sorted((self.alice, self.bob, self.carol), key=lambda v: -v.timestamp)


async def add_voicemail(seeder: Seeder, box: str, name: str, number: str, ago_s: int,
                        seconds: float, tone_hz: float, folder: str = "new") -> Voicemail:
    audio = wav_audio(seconds, tone_hz)
    timestamp = gregorian.now() - ago_s
    data = await seeder.message(box, audio, name=name, number=number, timestamp=timestamp,
                                length_ms=int(seconds * 1000), folder=folder)
    return Voicemail(data["media_id"], name, number, timestamp, seconds, folder, audio)


async def build_scene(seeder: Seeder) -> Scene:
    """Front Desk: two new messages and one saved; Night Line: empty. Two time zones."""
    front = await seeder.box("Front Desk", "2100", timezone=FRONT_ZONE)
    night = await seeder.box("Night Line", "2200", timezone=NIGHT_ZONE)
    alice = await add_voicemail(seeder, front, "Alice Example", "6001", 600, 3.0, 440)
    bob = await add_voicemail(seeder, front, "Bob Builder", "6002", 7200, 2.0, 550, "saved")
    carol = await add_voicemail(seeder, front, "Carol Caller", "6003", 86_400, 4.0, 660)
    return Scene(front, night, alice, bob, carol)


def local_time(timestamp: int, zone: str) -> datetime:
    return datetime.fromtimestamp(timestamp - UNIX_EPOCH_GREGORIAN_S, ZoneInfo(zone))


def download_name(voicemail: Voicemail, zone: str) -> str:
    """docs/api.md 9.16: <caller id number>_<YYYY-MM-DD>_<HH-MM-SS>.<ext>, in the box's zone."""
    return f"{voicemail.number}_{local_time(voicemail.timestamp, zone):%Y-%m-%d_%H-%M-%S}.wav"


# -- driving the page ----------------------------------------------------------------------


def rows(page: Page) -> Locator:
    return page.locator("#message-list > li")


def row(page: Page, voicemail: Voicemail) -> Locator:
    return page.locator(f'#message-list > li[data-id="{voicemail.id}"]')


def box_button(page: Page, name: str) -> Locator:
    return page.locator("#box-list button", has_text=name)


async def sign_in_with_key(inbox: Inbox, seeder: Seeder, path: str = "/") -> None:
    await inbox.goto(path)
    page = inbox.page
    await page.get_by_text("Sign in with an API key instead").click()
    await page.get_by_label("API key").fill(seeder.tenant.api_key)
    await page.get_by_role("button", name="Sign in with the key").click()
    await expect(page.locator("#inbox")).to_be_visible()


async def front_desk_open(inbox: Inbox, scene: Scene) -> None:
    await expect(box_button(inbox.page, "Front Desk")).to_have_attribute("aria-current", "true")
    await expect(rows(inbox.page)).to_have_count(3)


async def stored_folders(seeder: Seeder, box: str) -> dict[str, str]:
    return {m["media_id"]: m["folder"] for m in await seeder.messages(box)}


async def media_event(page: Page, name: str) -> None:
    await page.wait_for_function("(name) => window.__media.some(e => e.name === name)", arg=name)


async def stored_session(inbox: Inbox) -> JsonObject:
    stored = await inbox.session_storage()
    assert list(stored) == [SESSION_KEY], stored
    session: JsonObject = json.loads(stored[SESSION_KEY])
    return session


# -- signing in ----------------------------------------------------------------------------


async def test_sign_in_with_username_and_password_shows_boxes_counts_and_messages(
    open_inbox: OpenInbox, seeder: Seeder
) -> None:
    scene = await build_scene(seeder)
    await seeder.user("frontdesk", "pässword 1")
    inbox = await open_inbox()
    page = inbox.page
    await inbox.goto("/")
    await expect(page.get_by_role("heading", name="Sign in to your voicemail")).to_be_visible()
    await expect(page.get_by_label("Account name or realm")).to_be_focused()
    await inbox.screenshot("desktop-sign-in")

    account_name = str(seeder.tenant.account.name)
    await page.get_by_label("Account name or realm").fill(account_name)
    await page.get_by_label("Username").fill("frontdesk")
    await page.get_by_label("Password").fill("wrong password")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.locator("#sign-in-problem")).to_have_text(
        "Those details did not sign you in. Check them and try again.")
    assert await inbox.session_storage() == {}

    await page.get_by_label("Password").fill("pässword 1")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await front_desk_open(inbox, scene)
    await expect(page.locator("#account-label")).to_have_text(account_name)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Front Desk (2100)")

    # The counts are the API's folders counts.
    await expect(box_button(page, "Front Desk")).to_contain_text("2 new, 1 saved")
    await expect(box_button(page, "Night Line")).to_contain_text("0 new, 0 saved")
    await expect(page).to_have_title("(2) Voicemail")

    # Newest first, each with caller, time in the box's zone, length, folder; new ones marked.
    listed = rows(page)
    for index, voicemail in enumerate(scene.newest_first):
        item = listed.nth(index)
        await expect(item).to_have_attribute("data-id", voicemail.id)
        await expect(item.locator(".caller-name")).to_have_text(voicemail.name)
        await expect(item.locator(".caller-number")).to_have_text(voicemail.number)
        moment = local_time(voicemail.timestamp, FRONT_ZONE)
        await expect(item.locator("time")).to_have_attribute("datetime", moment.isoformat())
        hour = moment.strftime("%I:%M %p").lstrip("0")
        await expect(item.locator("time")).to_contain_text(hour)
        await expect(item.locator(".duration-value")).to_have_text(
            f"0:{int(voicemail.seconds):02d}")
        await expect(item.locator(".folder-value")).to_have_text(voicemail.folder)
        badge = item.locator(".badge")
        if voicemail.folder == "new":
            await expect(badge).to_be_visible()
            await expect(item).to_have_class(re.compile(r"\bis-new\b"))
        else:
            await expect(badge).to_be_hidden()
    await expect(page.locator("#box-meta")).to_contain_text(
        f"Times in the box's time zone, {FRONT_ZONE}.")

    # The token lives in sessionStorage only: a user token, for this account and user.
    session = await stored_session(inbox)
    claims = tokens.verify(session["token"], (TEST_TOKEN_SECRET,))
    assert claims.account_id == seeder.tenant.id
    assert claims.method == "cb_user_auth"
    assert claims.owner_id == session["ownerId"]
    assert claims.owner_id is not None
    assert await inbox.local_storage_size() == 0
    assert await inbox.context.cookies() == []
    await inbox.screenshot("desktop-inbox")


async def test_sign_in_with_an_api_key_on_a_phone(open_inbox: OpenInbox, seeder: Seeder) -> None:
    scene = await build_scene(seeder)
    inbox = await open_inbox(viewport=PHONE)
    page = inbox.page
    await inbox.goto("/")
    await page.get_by_text("Sign in with an API key instead").click()
    await inbox.screenshot("phone-sign-in")
    await page.get_by_role("button", name="Sign in with the key").click()
    await expect(page.locator("#sign-in-problem")).to_have_text("Enter the API key.")
    await expect(page.get_by_label("API key")).to_be_focused()
    await page.get_by_label("API key").fill(seeder.tenant.api_key)
    await page.get_by_role("button", name="Sign in with the key").click()
    await front_desk_open(inbox, scene)
    await expect(box_button(page, "Front Desk")).to_contain_text("2 new, 1 saved")
    claims = tokens.verify((await stored_session(inbox))["token"], (TEST_TOKEN_SECRET,))
    assert claims.method == "cb_api_auth"
    assert claims.account_id == seeder.tenant.id
    # Phone-sized: one column, nothing wider than the screen.
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"]
    await inbox.screenshot("phone-inbox")


async def test_md5_of_the_login_is_pythons(open_inbox: OpenInbox, seeder: Seeder) -> None:
    import hashlib

    inbox = await open_inbox()
    await inbox.goto("/")
    # Block boundaries (55, 56, 63, 64 bytes) and non-ASCII text, as UTF-8.
    texts = ["", "a", "user:password", "x" * 55, "x" * 56, "y" * 63, "z" * 64, "é" * 40,
             "frontdesk:pässword 1", "日本:語" * 30]
    hashed = await inbox.page.evaluate(
        "async (texts) => { const { md5Hex } = await import('/inbox/assets/md5.js');"
        " return texts.map((text) => md5Hex(text)); }", texts)
    assert hashed == [hashlib.md5(t.encode()).hexdigest() for t in texts]


# -- listening -----------------------------------------------------------------------------


async def test_play_a_message_and_seek(open_inbox: OpenInbox, seeder: Seeder) -> None:
    scene = await build_scene(seeder)
    for viewport, tag in ((None, "desktop"), (PHONE, "phone")):
        inbox = await open_inbox(viewport=viewport)
        page = inbox.page
        audio_requests: list[Request] = []

        def keep(request: Request, seen: list[Request] = audio_requests) -> None:
            if "/raw?" in request.url:
                seen.append(request)

        page.on("requestfinished", keep)
        await sign_in_with_key(inbox, seeder)
        await front_desk_open(inbox, scene)
        await row(page, scene.carol).get_by_role(
            "button", name=re.compile(r"^Play message from Carol Caller")).click()
        await media_event(page, "canplay")
        await expect(page.locator("#player-what")).to_contain_text("Carol Caller (6003)")
        duration = await page.evaluate("() => document.getElementById('audio').duration")
        assert duration == pytest.approx(scene.carol.seconds, abs=0.01)
        await expect(row(page, scene.carol).locator(".duration-value")).to_have_text("0:04")
        await expect(row(page, scene.carol)).to_have_class(re.compile(r"\bis-playing\b"))
        await inbox.screenshot(f"{tag}-playing")

        # The service answers Range, so the whole recording is seekable, not only what loaded.
        seekable_end = await page.evaluate(
            "() => { const a = document.getElementById('audio');"
            " return a.seekable.length ? a.seekable.end(a.seekable.length - 1) : 0; }")
        assert seekable_end == pytest.approx(scene.carol.seconds, abs=0.01)
        await page.evaluate("() => { document.getElementById('audio').currentTime = 2.5; }")
        await media_event(page, "seeked")
        position = await page.evaluate("() => document.getElementById('audio').currentTime")
        assert 2.5 <= position < scene.carol.seconds
        ranged = []
        token = (await stored_session(inbox))["token"]
        for request in audio_requests:
            headers = await request.all_headers()
            response = await request.response()
            assert response is not None
            assert request.url.endswith(f"/raw?auth_token={token}")
            if "range" in headers:
                ranged.append((headers["range"], response.status,
                               await response.header_value("content-range")))
        assert ranged, "the browser never asked for a range"
        assert all(status in (200, 206) and content_range for _, status, content_range in ranged)


async def test_download_one_message_and_several_as_a_zip(
    open_inbox: OpenInbox, seeder: Seeder
) -> None:
    scene = await build_scene(seeder)
    inbox = await open_inbox()
    page = inbox.page
    await sign_in_with_key(inbox, seeder)
    await front_desk_open(inbox, scene)

    async with page.expect_download() as one:
        await row(page, scene.alice).get_by_role(
            "link", name=re.compile(r"^Download message from Alice Example")).click()
    download = await one.value
    assert download.suggested_filename == download_name(scene.alice, FRONT_ZONE)
    path = await download.path()
    assert path.read_bytes() == scene.alice.audio

    for voicemail in (scene.alice, scene.carol):
        await row(page, voicemail).get_by_role("checkbox").check()
    await expect(page.locator("#selection-count")).to_have_text("2 selected")
    async with page.expect_download() as several:
        await page.get_by_role("button", name="Download ZIP").click()
    archive = await several.value
    assert archive.suggested_filename == "voicemail-2100.zip"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await archive.save_as(ARTIFACTS / "front-desk.zip")
    with zipfile.ZipFile(io.BytesIO((ARTIFACTS / "front-desk.zip").read_bytes())) as zipped:
        assert zipped.testzip() is None
        # In the list's order: newest first.
        assert zipped.namelist() == [download_name(scene.alice, FRONT_ZONE),
                                     download_name(scene.carol, FRONT_ZONE)]
        assert zipped.read(zipped.namelist()[0]) == scene.alice.audio
        assert zipped.read(zipped.namelist()[1]) == scene.carol.audio
    await expect(page.locator("#notice")).to_have_text("Downloading 2 messages as a ZIP file.")


# -- changing messages ---------------------------------------------------------------------


async def test_mark_saved_and_new_one_and_many(open_inbox: OpenInbox, seeder: Seeder) -> None:
    scene = await build_scene(seeder)
    inbox = await open_inbox()
    page = inbox.page
    await sign_in_with_key(inbox, seeder)
    await front_desk_open(inbox, scene)

    alice = row(page, scene.alice)
    await alice.get_by_role("button", name=re.compile(r"^Mark saved: message from Alice")).click()
    await expect(alice.locator(".folder-value")).to_have_text("saved")
    await expect(alice.locator(".badge")).to_be_hidden()
    # The same button, now the way back, keeps the focus.
    await expect(alice.get_by_role(
        "button", name=re.compile(r"^Mark new: message from Alice"))).to_be_focused()
    await expect(page.locator("#notice")).to_have_text(
        "Marked the message from Alice Example (6001) saved.")
    await expect(box_button(page, "Front Desk")).to_contain_text("1 new, 2 saved")
    await expect(page).to_have_title("(1) Voicemail")
    assert (await stored_folders(seeder, scene.front))[scene.alice.id] == "saved"

    # Many at once: the bulk endpoint.
    for voicemail in (scene.alice, scene.bob):
        await row(page, voicemail).get_by_role("checkbox").check()
    await page.get_by_role("button", name="Mark new", exact=True).click()
    await expect(page.locator("#notice")).to_have_text("2 messages marked new.")
    await expect(box_button(page, "Front Desk")).to_contain_text("3 new, 0 saved")
    await expect(page.locator("#selection-count")).to_have_text("None selected")
    assert set((await stored_folders(seeder, scene.front)).values()) == {"new"}
    await expect(page.locator("#problem")).to_be_empty()


async def test_move_a_message_to_another_box(open_inbox: OpenInbox, seeder: Seeder) -> None:
    scene = await build_scene(seeder)
    inbox = await open_inbox()
    page = inbox.page
    await sign_in_with_key(inbox, seeder)
    await front_desk_open(inbox, scene)

    await row(page, scene.carol).get_by_role("checkbox").check()
    await page.get_by_label("Move to").select_option(label="Night Line (2200)")
    await page.get_by_role("button", name="Move", exact=True).click()
    await expect(page.locator("#notice")).to_have_text("1 message moved to Night Line (2200).")
    await expect(rows(page)).to_have_count(2)
    await expect(row(page, scene.carol)).to_have_count(0)
    await expect(box_button(page, "Front Desk")).to_contain_text("1 new, 1 saved")
    await expect(box_button(page, "Night Line")).to_contain_text("1 new, 0 saved")

    assert scene.carol.id not in await stored_folders(seeder, scene.front)
    [moved] = await seeder.messages(scene.night)
    assert moved["caller_id_number"] == "6003"
    assert moved["media_id"] != scene.carol.id

    # The other box, by its button; its address is a deep link; times in its own zone.
    await box_button(page, "Night Line").click()
    await expect(page).to_have_url(re.compile(rf"/inbox/boxes/{scene.night}$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Night Line (2200)")
    await expect(page.get_by_role("heading", level=1)).to_be_focused()
    await expect(rows(page)).to_have_count(1)
    # A move stamps the copy with the time of the move (docs/storage.md 5.7).
    await expect(rows(page).first.locator("time")).to_have_attribute(
        "datetime", local_time(moved["timestamp"], NIGHT_ZONE).isoformat())
    await page.go_back()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Front Desk (2100)")
    await page.reload()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Front Desk (2100)")
    await page.goto(f"{inbox.base}/inbox/boxes/{scene.night}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Night Line (2200)")


async def test_bulk_delete_shows_the_message_that_failed(
    open_inbox: OpenInbox, seeder: Seeder
) -> None:
    scene = await build_scene(seeder)
    inbox = await open_inbox()
    page = inbox.page
    inbox.allowed_console.append((re.compile(r"^Failed to load resource: net::ERR_FAILED$"),
                                  re.compile(r"/events\?")))

    async def no_stream(route: Route) -> None:
        await route.abort()

    # Without the live stream, so that the page does not hear of the delete made behind its
    # back before the user's own (it would drop the message from the list at once).
    await page.route(re.compile(r"/v2/accounts/[0-9a-f]{32}/events\?"), no_stream)
    await sign_in_with_key(inbox, seeder, "/?poll_ms=3600000")
    await front_desk_open(inbox, scene)

    # A single delete asks first; "Cancel" keeps the message.
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.dismiss()))
    await row(page, scene.alice).get_by_role(
        "button", name=re.compile(r"^Delete message from Alice")).click()
    await expect(rows(page)).to_have_count(3)
    assert len(await seeder.messages(scene.front)) == 3

    await page.get_by_label("Select all").check()
    await expect(page.locator("#selection-count")).to_have_text("3 selected")
    # Someone else deletes Bob's message while it is selected here.
    await seeder.call("DELETE", f"{seeder.boxes_path}/{scene.front}/messages/{scene.bob.id}")
    asked: list[str] = []

    async def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.once("dialog", lambda dialog: asyncio.ensure_future(accept(dialog)))
    await page.get_by_role("button", name="Delete", exact=True).click()
    await expect(page.locator("#notice")).to_have_text("2 messages deleted.")
    bob_time = local_time(scene.bob.timestamp, FRONT_ZONE).strftime("%-I:%M %p")
    problem = page.locator("#problem")
    await expect(problem).to_contain_text("1 message could not be deleted: Bob Builder (6002), ")
    await expect(problem).to_contain_text(bob_time)
    await expect(problem).to_contain_text("(not found).")
    await expect(problem).to_have_attribute("role", "alert")
    assert asked == ["Delete 3 selected messages?"]
    await expect(rows(page)).to_have_count(0)
    await expect(page.locator("#empty")).to_be_visible()
    # The toolbar went away under the focus: the box's heading has it, not <body>.
    await expect(page.get_by_role("heading", level=1)).to_be_focused()
    await expect(box_button(page, "Front Desk")).to_contain_text("0 new, 0 saved")
    assert await seeder.messages(scene.front) == []
    await inbox.screenshot("desktop-bulk-delete-failure")


# -- live ----------------------------------------------------------------------------------


async def test_a_message_created_through_the_api_appears_without_reload(
    open_inbox: OpenInbox, seeder: Seeder
) -> None:
    scene = await build_scene(seeder)
    inbox = await open_inbox()
    page = inbox.page
    # The event stream when the service has one, else polling: fast here either way.
    await sign_in_with_key(inbox, seeder, "/?poll_ms=300")
    await front_desk_open(inbox, scene)
    await page.evaluate("() => { window.__same_document = true; }")

    dave = await add_voicemail(seeder, scene.front, "Dave Dialer", "6004", 5, 1.0, 770)
    await expect(rows(page)).to_have_count(4)
    await expect(rows(page).first).to_have_attribute("data-id", dave.id)
    await expect(rows(page).first.locator(".badge")).to_be_visible()
    await expect(page.locator("#notice")).to_have_text("New voicemail from Dave Dialer (6004).")
    await expect(box_button(page, "Front Desk")).to_contain_text("3 new, 1 saved")
    await expect(page).to_have_title("(3) Voicemail")

    # Another box's count follows too.
    await add_voicemail(seeder, scene.night, "Eve Evening", "6005", 5, 1.0, 880)
    await expect(box_button(page, "Night Line")).to_contain_text("1 new, 0 saved")
    assert await page.evaluate("() => window.__same_document") is True


async def test_an_event_on_the_account_stream_refreshes_the_box(
    open_inbox: OpenInbox, seeder: Seeder
) -> None:
    """The stream's side of live updates, with the stream played by the test: polling is
    set to an hour, so only the event can bring the new message."""
    scene = await build_scene(seeder)
    inbox = await open_inbox()
    page = inbox.page
    release = asyncio.Event()
    streams: list[str] = []
    event: dict[str, str] = {}

    async def stream(route: Route) -> None:
        streams.append(route.request.url)
        if len(streams) > 1:
            await route.fulfill(status=200, body="retry: 3600000\n\n",
                                headers={"Content-Type": "text/event-stream"})
            return
        await release.wait()
        body = (f"retry: 3600000\nevent: voicemail_new\ndata: {json.dumps(event)}\n\n")
        await route.fulfill(status=200, body=body, headers={"Content-Type": "text/event-stream"})

    await inbox.context.route(re.compile(r"/v2/accounts/[0-9a-f]{32}/events\?"), stream)
    await sign_in_with_key(inbox, seeder, "/?poll_ms=3600000")
    await front_desk_open(inbox, scene)
    dave = await add_voicemail(seeder, scene.front, "Dave Dialer", "6004", 5, 1.0, 770)
    await page.wait_for_timeout(1000)
    await expect(rows(page)).to_have_count(3)  # nothing brings it but the event

    event.update(voicemail_box=scene.front, voicemail_id=dave.id)
    release.set()
    await expect(rows(page)).to_have_count(4)
    await expect(rows(page).first).to_have_attribute("data-id", dave.id)
    await expect(box_button(page, "Front Desk")).to_contain_text("3 new, 1 saved")
    token = (await stored_session(inbox))["token"]
    assert streams[0] == (f"{inbox.base}/v2/accounts/{seeder.tenant.id}/events"
                          f"?auth_token={token}")


async def test_a_failed_check_for_new_voicemail_is_shown_and_taken_back(
    open_inbox: OpenInbox, seeder: Seeder
) -> None:
    scene = await build_scene(seeder)
    inbox = await open_inbox()
    page = inbox.page
    inbox.allowed_console.append((re.compile(r"^Failed to load resource: net::ERR_FAILED$"),
                                  re.compile(r"/vmboxes$|/events\?")))

    async def no_stream(route: Route) -> None:
        await route.abort()

    # Without the event stream the page checks for new voicemail itself (polling).
    await page.route(re.compile(r"/v2/accounts/[0-9a-f]{32}/events\?"), no_stream)
    await sign_in_with_key(inbox, seeder, "/?poll_ms=300")
    await front_desk_open(inbox, scene)

    async def unreachable(route: Route) -> None:
        await route.abort()

    boxes = re.compile(r"/v2/accounts/[0-9a-f]{32}/vmboxes$")
    await page.route(boxes, unreachable)
    await expect(page.locator("#problem")).to_contain_text("Could not check for new voicemail.")
    await expect(rows(page)).to_have_count(3)  # what was shown stays
    await page.unroute(boxes)
    await expect(page.locator("#problem")).to_be_empty()


# -- leaving -------------------------------------------------------------------------------


async def test_sign_out_forgets_the_session(open_inbox: OpenInbox, seeder: Seeder) -> None:
    scene = await build_scene(seeder)
    inbox = await open_inbox()
    page = inbox.page
    await sign_in_with_key(inbox, seeder)
    await front_desk_open(inbox, scene)
    await row(page, scene.alice).get_by_role("button", name=re.compile(r"^Play")).click()
    await media_event(page, "canplay")
    assert list(await inbox.session_storage()) == [SESSION_KEY]

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in to your voicemail")).to_be_visible()
    await expect(page.locator("#sign-in-notice")).to_have_text("You are signed out.")
    assert await inbox.session_storage() == {}
    assert await page.evaluate("() => document.getElementById('audio').hasAttribute('src')") \
        is False
    await expect(page.locator("#message-list > li")).to_have_count(0)
    await expect(page.locator("#inbox")).to_be_hidden()
    # Nothing brings the inbox back without signing in again.
    await page.reload()
    await expect(page.get_by_role("heading", name="Sign in to your voicemail")).to_be_visible()
    await page.goto(f"{inbox.base}/inbox/boxes/{scene.front}")
    await expect(page.get_by_role("heading", name="Sign in to your voicemail")).to_be_visible()
    await expect(page.locator("#inbox")).to_be_hidden()


async def test_an_expired_token_sends_the_user_back_to_sign_in(
    open_inbox: OpenInbox, seeder: Seeder
) -> None:
    scene = await build_scene(seeder)
    inbox = await open_inbox()
    page = inbox.page
    await inbox.goto(f"/inbox/boxes/{scene.front}?poll_ms=300")
    # A real token of this account that the service stops accepting in three seconds.
    token = tokens.issue(TEST_TOKEN_SECRET, seeder.tenant.id, "cb_api_auth", 3)
    await page.evaluate(
        "([key, value]) => sessionStorage.setItem(key, value)",
        [SESSION_KEY, json.dumps({"token": token, "accountId": seeder.tenant.id,
                                  "accountName": "Soon expired", "ownerId": None})])
    await page.reload()
    await front_desk_open(inbox, scene)

    await expect(page.locator("#sign-in-problem")).to_have_text(
        "Your session has expired. Sign in again to continue.", timeout=15_000)
    await expect(page.get_by_role("heading", name="Sign in to your voicemail")).to_be_visible()
    await expect(page.locator("#inbox")).to_be_hidden()
    assert await inbox.session_storage() == {}

    # Signing in again goes back to the box that was open.
    await page.get_by_text("Sign in with an API key instead").click()
    await page.get_by_label("API key").fill(seeder.tenant.api_key)
    await page.get_by_role("button", name="Sign in with the key").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Front Desk (2100)")
    await expect(page.locator("#sign-in-problem")).to_be_hidden()


# -- paging, keyboard, accessibility -------------------------------------------------------


async def test_older_messages_page_in_with_the_cursor(open_inbox: OpenInbox, seeder: Seeder
                                                      ) -> None:
    box = await seeder.box("Busy", "2300", timezone=FRONT_ZONE)
    made = [await add_voicemail(seeder, box, f"Caller {n}", f"70{n:02d}", 3600 * n + 60, 1.0,
                                300 + 40 * n) for n in range(5)]
    inbox = await open_inbox()
    page = inbox.page
    await sign_in_with_key(inbox, seeder, "/?page_size=2&poll_ms=600000")
    more = page.get_by_role("button", name="Show older messages")
    await expect(rows(page)).to_have_count(2)
    await more.click()
    await expect(rows(page)).to_have_count(4)
    await more.click()
    await expect(rows(page)).to_have_count(5)
    await expect(more).to_be_hidden()
    shown = await rows(page).evaluate_all("(items) => items.map((item) => item.dataset.id)")
    assert shown == [v.id for v in made]  # made newest first
    # The focus was on the button that went away: the first of the older messages has it.
    await expect(row(page, made[4]).get_by_role("checkbox")).to_be_focused()


async def test_keyboard_only(open_inbox: OpenInbox, seeder: Seeder) -> None:
    scene = await build_scene(seeder)
    inbox = await open_inbox()
    page = inbox.page
    await inbox.goto("/")
    await expect(page.get_by_label("Account name or realm")).to_be_focused()

    async def focused() -> str:
        return str(await page.evaluate(
            "() => { const e = document.activeElement;"
            " return e.id || e.getAttribute('aria-label') || e.textContent.trim(); }"))

    await page.keyboard.press("Shift+Tab")
    order = [await focused()]
    for _ in range(5):
        await page.keyboard.press("Tab")
        order.append(await focused())
    assert order == ["Skip to content", "account-name", "username", "password", "Sign in",
                     "Sign in with an API key instead"]
    await page.keyboard.press("Enter")  # opens the <details>
    await page.keyboard.press("Tab")
    assert await focused() == "api-key"
    await page.keyboard.type(seeder.tenant.api_key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_be_focused()
    await front_desk_open(inbox, scene)

    # From the heading: the toolbar, then the first message; Space selects, Enter plays.
    await page.keyboard.press("Tab")
    assert await focused() == "select-all"
    for _ in range(20):
        await page.keyboard.press("Tab")
        if (await focused()).startswith("Select message from Alice"):
            break
    await page.keyboard.press("Space")
    await expect(page.locator("#selection-count")).to_have_text("1 selected")
    await page.keyboard.press("Tab")
    assert (await focused()).startswith("Play message from Alice")
    await page.keyboard.press("Enter")
    await media_event(page, "canplay")
    await expect(page.locator("#player-what")).to_contain_text("Alice Example")

    # Back up to the boxes: Shift+Tab from the heading reaches the last box.
    await page.get_by_role("heading", level=1).focus()
    await page.keyboard.press("Shift+Tab")
    assert (await focused()).startswith("Night Line")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Night Line (2200)")
    await expect(page.get_by_role("heading", level=1)).to_be_focused()


async def axe_violations(page: Page) -> list[JsonObject]:
    # Injected through the DevTools protocol, not a <script>: the page's CSP stays as it is,
    # and axe-core is never served to users.
    await page.evaluate(AXE_SCRIPT.read_text())
    found: list[JsonObject] = await page.evaluate(
        """async () => {
          const result = await axe.run(document, {resultTypes: ["violations"]});
          return result.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map((n) => n.target.join(" "))}));
        }""")
    return found


async def test_no_serious_or_critical_accessibility_violation(
    open_inbox: OpenInbox, seeder: Seeder
) -> None:
    assert AXE_SCRIPT.is_file(), f"{AXE_SCRIPT} is missing: `make browser` installs axe-core"
    scene = await build_scene(seeder)
    report: dict[str, list[JsonObject]] = {}
    for viewport, tag in ((None, "desktop"), (PHONE, "phone")):
        inbox = await open_inbox(viewport=viewport)
        page = inbox.page
        await inbox.goto("/")
        await page.get_by_role("button", name="Sign in", exact=True).click()  # a problem shown
        await page.get_by_text("Sign in with an API key instead").click()
        report[f"{tag} sign-in"] = await axe_violations(page)
        await page.get_by_label("API key").fill(seeder.tenant.api_key)
        await page.get_by_role("button", name="Sign in with the key").click()
        await front_desk_open(inbox, scene)
        await row(page, scene.alice).get_by_role("checkbox").check()
        await row(page, scene.alice).get_by_role("button", name=re.compile("^Play")).click()
        await media_event(page, "canplay")
        await row(page, scene.bob).get_by_role(
            "button", name=re.compile("^Mark (new|saved): message from Bob")).click()
        await expect(page.locator("#notice")).not_to_be_empty()
        report[f"{tag} inbox"] = await axe_violations(page)
        if tag == "phone":
            # The check itself can fail: an unlabelled field added here is reported.
            await page.evaluate("() => document.getElementById('toolbar')"
                                ".append(document.createElement('input'))")
            control = await axe_violations(page)
            assert {v["id"]: v["impact"] for v in control}.get("label") == "critical", control
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "axe.json").write_text(json.dumps(report, indent=2))
    serious = {screen: [v for v in found if v["impact"] in ("serious", "critical")]
               for screen, found in report.items()}
    assert serious == {screen: [] for screen in report}, serious
