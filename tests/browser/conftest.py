"""Browser fixtures: Debian's Chromium driven by Playwright against a real `piston-vm serve`.

The service runs as its own process on the suite's CouchDB (the bundled server unless
PISTON_VM_TEST_COUCHDB_URL says otherwise), one per session. Each test gets a fresh account,
a fresh browser context (no shared storage) and a page that fails the test on any script error
or Content-Security-Policy violation. Screenshots go to var/test-artifacts/inbox/, which git
ignores. `make browser` installs Chromium; axe-core comes from tests/browser/package.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import re
import secrets
import signal
import sys
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    ViewportSize,
    async_playwright,
)

from piston_vm.core.config import REPO_ROOT, Settings
from piston_vm.storage.stores import Stores
from piston_vm.storage.users import UserStore
from tests.conftest import TEST_TOKEN_SECRET, MakeAccount, Tenant
from tests.test_kills import free_port
from tests.test_message_support import json_part, multipart
from tests.test_shutdown import couchdb_url

JsonObject = dict[str, Any]

CHROMIUM = Path(os.environ.get("PISTON_VM_TEST_CHROMIUM", "/usr/bin/chromium"))
# The machine's network is closed: without the background-networking flags Chromium keeps
# trying to reach Google's hosts. Root needs --no-sandbox.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
AXE_SCRIPT = Path(__file__).with_name("node_modules") / "axe-core" / "axe.min.js"
ARTIFACTS = REPO_ROOT / "var" / "test-artifacts" / "inbox"
START_TIMEOUT_S = 30.0
# Playwright's waits, in milliseconds.
WAIT_MS = 10_000

DESKTOP: ViewportSize = {"width": 1280, "height": 860}
PHONE: ViewportSize = {"width": 390, "height": 844}

# Console errors a page may show without failing its test: the browser's own line for an answer
# the page handles, by the address it came from: a token that expired answers 401 (the page
# asks to sign in), and so do wrong credentials (the page says so).
EXPECTED_CONSOLE = (
    (re.compile(r"^Failed to load resource: .* status of 401\b"),
     re.compile(r"/v2/(accounts/[0-9a-f]{32}/|user_auth$|api_auth$)")),
)

WAV_RATE_HZ = 8000


def wav_audio(seconds: float, tone_hz: float = 440.0) -> bytes:
    """A real PCM WAV file (8 kHz, mono, 16 bit) of a sine tone, made with the stdlib."""
    frames = int(seconds * WAV_RATE_HZ)
    samples = bytearray()
    for n in range(frames):
        value = int(12000 * math.sin(2 * math.pi * tone_hz * n / WAV_RATE_HZ))
        samples += value.to_bytes(2, "little", signed=True)
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(WAV_RATE_HZ)
        file.writeframes(bytes(samples))
    return out.getvalue()


@dataclass
class Service:
    url: str
    process: asyncio.subprocess.Process
    log_path: Path


# Package scope: the service's event engine follows every database of the suite's CouchDB, and
# must not go on delivering other tests' webhooks once the browser tests are done.
@pytest.fixture(scope="package")
async def inbox_service(settings: Settings, tmp_path_factory: pytest.TempPathFactory
                        ) -> AsyncIterator[Service]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("inbox-serve") / "serve.log"
    env = {**os.environ, "PISTON_VM_COUCHDB_URL": couchdb_url(settings),
           "PISTON_VM_TOKEN_SECRET": TEST_TOKEN_SECRET,
           # Tests create accounts and must see them at once.
           "PISTON_VM_ACCOUNT_CACHE_TTL_S": "0",
           "PISTON_VM_SHUTDOWN_GRACE_S": "0",
           # Its own engine database: the live updates come from the real event stream.
           "PISTON_VM_EVENTS_DB": "piston_vm_events_inbox_" + secrets.token_hex(4)}
    env.pop("PISTON_VM_INBOX", None)
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "piston_vm", "serve", "--host", "127.0.0.1", "--port",
            str(port), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log_file,
            stderr=log_file)
    url = f"http://127.0.0.1:{port}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    try:
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + "/readyz") as resp:
                        if resp.status == 200:
                            break
                assert process.returncode is None, log_path.read_text()
                assert loop.time() < deadline, "piston-vm serve did not get ready"
                await asyncio.sleep(0.05)
        yield Service(url, process, log_path)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


def chromium() -> Path:
    # Fails, never skips: a suite that quietly left its browser tests out would pass untested.
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium "
                    "(or set PISTON_VM_TEST_CHROMIUM)")
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_FLAGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


# -- the account's data, through the service's own API -----------------------------------


@dataclass
class Seeder:
    """Boxes, messages and users of one test account, made through the HTTP API."""

    http: aiohttp.ClientSession
    base: str
    tenant: Tenant
    stores: Stores

    @property
    def boxes_path(self) -> str:
        return f"{self.base}/v2/accounts/{self.tenant.id}/vmboxes"

    async def call(self, method: str, path: str, data: Any = None, status: int = 200, *,
                   body: bytes | None = None, headers: dict[str, str] | None = None,
                   params: dict[str, str] | None = None) -> Any:
        sent = {"X-Auth-Token": self.tenant.token, **(headers or {})}
        payload = body
        if data is not None:
            payload = json.dumps({"data": data}).encode()
            sent["Content-Type"] = "application/json"
        async with self.http.request(method, path, headers=sent, data=payload,
                                     params=params) as resp:
            answer = await resp.json()
            assert resp.status == status, answer
            return answer["data"]

    async def box(self, name: str, mailbox: str, **fields: Any) -> str:
        data = await self.call("PUT", self.boxes_path, {"name": name, "mailbox": mailbox,
                                                        **fields}, 201)
        return str(data["id"])

    async def message(self, box: str, audio: bytes, *, name: str, number: str,
                      timestamp: int, length_ms: int, folder: str = "new") -> JsonObject:
        body, content_type = multipart(
            json_part({"caller_id_name": name, "caller_id_number": number,
                       "timestamp": timestamp, "length": length_ms, "folder": folder}),
            ("audio/wav", audio, "voicemail.wav"))
        data: JsonObject = await self.call(
            "PUT", f"{self.boxes_path}/{box}/messages", status=201, body=body,
            headers={"Content-Type": content_type})
        return data

    async def messages(self, box: str) -> list[JsonObject]:
        rows: list[JsonObject] = await self.call(
            "GET", f"{self.boxes_path}/{box}/messages", params={"paginate": "false"})
        return rows

    async def user(self, username: str, password: str) -> None:
        await UserStore(self.stores.couch).create(self.tenant.id, username, password)


@pytest.fixture
async def seeder(inbox_service: Service, make_account: MakeAccount, stores: Stores
                 ) -> AsyncIterator[Seeder]:
    tag = secrets.token_hex(4)
    # A realm and name of its own: user logins look accounts up by them.
    tenant = await make_account(name=f"Inbox {tag}", realm=f"inbox-{tag}.example.net")
    async with aiohttp.ClientSession() as http:
        yield Seeder(http, inbox_service.url, tenant, stores)


# -- pages -------------------------------------------------------------------------------


@dataclass
class Inbox:
    """One browser context and page on the inbox, with what went wrong in it."""

    context: BrowserContext
    page: Page
    base: str
    errors: list[str] = field(default_factory=list)
    # A test's own expected console lines, as (text, address) patterns.
    allowed_console: list[tuple[re.Pattern[str], re.Pattern[str]]] = field(
        default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        text, url = message.text, str(message.location.get("url", ""))
        if any(said.search(text) and where.search(url)
               for said, where in (*EXPECTED_CONSOLE, *self.allowed_console)):
            return
        self.errors.append(f"console: {text} ({url})")

    async def goto(self, path: str = "/") -> None:
        await self.page.goto(self.base + path)

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def session_storage(self) -> dict[str, str]:
        stored: dict[str, str] = await self.page.evaluate(
            "() => Object.fromEntries(Object.entries(sessionStorage))")
        return stored

    async def local_storage_size(self) -> int:
        return int(await self.page.evaluate("() => localStorage.length"))


OpenInbox = Callable[..., Awaitable[Inbox]]

# Records media events (they do not bubble, so on the capture phase) before any page script.
MEDIA_PROBE = """
window.__media = [];
for (const name of ["loadedmetadata", "canplay", "playing", "seeked", "error"]) {
  document.addEventListener(name, (event) => {
    window.__media.push({name, time: event.target.currentTime});
  }, true);
}
window.__csp = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__csp.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


@pytest.fixture
async def open_inbox(browser: Browser, inbox_service: Service) -> AsyncIterator[OpenInbox]:
    opened: list[Inbox] = []

    async def open_(viewport: ViewportSize | None = None, **options: Any) -> Inbox:
        context = await browser.new_context(
            viewport=viewport or DESKTOP, locale="en-US", accept_downloads=True,
            # Not the boxes' zone: times must come from the box, not from the browser.
            timezone_id=options.pop("timezone_id", "Asia/Tokyo"), **options)
        context.set_default_timeout(WAIT_MS)
        await context.add_init_script(MEDIA_PROBE)
        page = await context.new_page()
        inbox = Inbox(context, page, inbox_service.url)
        page.on("console", inbox.on_console)
        page.on("pageerror", lambda error: inbox.errors.append(f"page error: {error}"))
        opened.append(inbox)
        return inbox

    yield open_
    for inbox in opened:
        with contextlib.suppress(Exception):
            violations = await inbox.page.evaluate("() => window.__csp")
            inbox.errors.extend(f"CSP: {v}" for v in violations)
        await inbox.context.close()
    problems = [e for inbox in opened for e in inbox.errors]
    assert problems == [], problems
