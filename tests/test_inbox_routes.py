"""The inbox page as HTTP (issue 16): its routes, headers and files, without a browser.

What the page does in a browser is tests/browser/test_inbox.py; this file holds the serving
side: a strict Content-Security-Policy on the page and its assets and on nothing else, no
inline script, only same-origin files named one by one, and PISTON_VM_INBOX=off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html.parser import HTMLParser

import pytest

from piston_vm.core.config import settings_from_env
from piston_vm.web.inbox import (
    ASSETS,
    ASSETS_PREFIX,
    CONTENT_SECURITY_POLICY,
    PAGE_FILE,
    PAGE_HEADERS,
    STATIC_DIR,
)
from tests.conftest import AppFactory, Tenant
from tests.helpers import Api, assert_error, assert_success

PAGE_ADDRESSES = ("/", "/inbox", "/inbox/", "/inbox/boxes/some-box-id", "/inbox/boxes/x/")
IMPORT_RE = re.compile(r"""^\s*import\b[^;]*?from\s+["']([^"']+)["']""", re.MULTILINE | re.DOTALL)


class PageShape(HTMLParser):
    """Every script, style and inline handler of the page, and what each element loads."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = False
        self.loads: list[str] = []
        self.inline_attributes: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.inline_attributes.append(f"<{tag} {name}>")
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True
        for name in ("src", "href"):
            value = attributes.get(name)
            if value and not (tag == "a" and value.startswith("#")):
                self.loads.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True


def assert_page_headers(headers: Mapping[str, str]) -> None:
    for name, value in PAGE_HEADERS.items():
        assert headers.get(name) == value, name


async def test_the_page_is_served_at_every_address_with_its_headers(api: Api) -> None:
    body = (STATIC_DIR / PAGE_FILE).read_bytes()
    for path in PAGE_ADDRESSES:
        resp = await api.client.get(path)
        assert resp.status == 200, path
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert_page_headers(resp.headers)
        assert await resp.read() == body
        assert resp.headers.get("X-Request-ID")


def test_the_policy_allows_this_origin_only_and_no_inline_code() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "img-src", "media-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert directives["frame-ancestors"] == "'none'"
    assert directives["form-action"] == "'none'"
    assert directives["require-trusted-types-for"] == "'script'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_the_page_has_no_inline_script_or_style_and_loads_only_its_assets() -> None:
    shape = PageShape()
    shape.feed((STATIC_DIR / PAGE_FILE).read_text())
    assert shape.scripts == [{"type": "module", "src": ASSETS_PREFIX + "main.js"}]
    assert not shape.inline_script
    assert shape.inline_attributes == []
    assert "<style" not in (STATIC_DIR / PAGE_FILE).read_text()
    assert shape.loads, "the page loads nothing?"
    for url in shape.loads:
        assert url.startswith(ASSETS_PREFIX), url
        assert url.removeprefix(ASSETS_PREFIX) in ASSETS, url


def test_the_asset_table_is_the_folder() -> None:
    on_disk = {p.name for p in STATIC_DIR.iterdir() if p.is_file()}
    assert on_disk == {*ASSETS, PAGE_FILE}


def test_modules_import_only_modules_of_the_table_and_name_no_other_host() -> None:
    for name in ASSETS:
        text = (STATIC_DIR / name).read_text()
        # No third-party requests: no absolute URL anywhere, SVG's namespace aside.
        urls = set(re.findall(r"https?://[^\s\"')]+", text)) - {"http://www.w3.org/2000/svg"}
        assert urls == set(), (name, urls)
        if name.endswith(".js"):
            assert "innerHTML" not in text, name
            assert "eval(" not in text, name
            for target in IMPORT_RE.findall(text):
                assert target.startswith("./"), (name, target)
                assert target.removeprefix("./") in ASSETS, (name, target)
    main = (STATIC_DIR / "main.js").read_text()
    scripts = "".join((STATIC_DIR / n).read_text() for n in ASSETS if n.endswith(".js"))
    assert not re.search(r"localStorage\s*[.\[]", scripts)
    assert "sessionStorage" in (STATIC_DIR / "session.js").read_text()
    assert "./session.js" in main


async def test_every_asset_is_served_with_its_type_and_the_page_headers(api: Api) -> None:
    for name, content_type in ASSETS.items():
        resp = await api.client.get(ASSETS_PREFIX + name)
        assert resp.status == 200, name
        assert resp.headers["Content-Type"] == content_type
        assert_page_headers(resp.headers)
        assert await resp.read() == (STATIC_DIR / name).read_bytes()


async def test_assets_revalidate_with_their_etag(api: Api) -> None:
    resp = await api.client.get(ASSETS_PREFIX + "main.js")
    etag = resp.headers["ETag"]
    await resp.read()
    again = await api.client.get(ASSETS_PREFIX + "main.js", headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""


async def test_head_answers_like_get_without_a_body(api: Api) -> None:
    resp = await api.client.head("/")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert int(resp.headers["Content-Length"]) == (STATIC_DIR / PAGE_FILE).stat().st_size
    assert await resp.read() == b""


@pytest.mark.parametrize("path", [
    ASSETS_PREFIX + "nope.js",
    ASSETS_PREFIX + "..%2F..%2Fapp.py",
    ASSETS_PREFIX + "../inbox.py",
    ASSETS_PREFIX,
    "/inbox/other",
    "/inbox/boxes/",
    "/index.html",
])
async def test_names_outside_the_table_are_the_api_404(api: Api, path: str) -> None:
    resp, body = await api.call("GET", path)
    assert assert_error(resp, body, 404, "not_found") == {"message": "not found"}
    assert "Content-Security-Policy" not in resp.headers


async def test_api_answers_are_unchanged_by_the_page(api: Api, account: Tenant) -> None:
    resp, body = await api.call("GET", f"/v2/accounts/{account.id}/vmboxes", account.token)
    assert_success(resp, body)
    for path in ("/v2/openapi.json", "/healthz"):
        other = await api.client.get(path)
        assert other.status == 200
        await other.read()
        for answer in (resp, other):
            for name in PAGE_HEADERS:
                assert name not in answer.headers, (path, name)


async def test_inbox_off_removes_the_routes(make_client: AppFactory) -> None:
    api = Api(await make_client(inbox=False))
    for path in (*PAGE_ADDRESSES, ASSETS_PREFIX + "main.js"):
        resp, body = await api.call("GET", path)
        assert assert_error(resp, body, 404, "not_found") == {"message": "not found"}, path
    # The API itself is still there.
    resp = await api.client.get("/v2/openapi.json")
    assert resp.status == 200
    await resp.read()


def test_the_switch_reads_on_and_off() -> None:
    assert settings_from_env({}).inbox is True
    assert settings_from_env({"PISTON_VM_INBOX": "off"}).inbox is False
    assert settings_from_env({"PISTON_VM_INBOX": "on"}).inbox is True
    with pytest.raises(ValueError, match="PISTON_VM_INBOX must be on or off"):
        settings_from_env({"PISTON_VM_INBOX": "maybe"})
