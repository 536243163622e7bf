"""Running it like a production service (docs/operations.md): the access log in text and JSON,
redaction of secrets, Prometheus metrics, the client address behind trusted proxies, and the
probes (/healthz liveness, /readyz readiness) through CouchDB outages and draining.

Everything goes through HTTP against the bundled CouchDB-protocol server; the outage tests start
a server of their own (tests/test_faults.py's `couch` fixture) so they can stop it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from piston_vm import __version__
from piston_vm.app import create_metrics_app
from piston_vm.core import logs
from piston_vm.core.config import CouchEndpoint, Settings, parse_networks, settings_from_env
from piston_vm.core.metrics import PrometheusMetrics
from piston_vm.storage.couch import CouchClient
from piston_vm.storage.stores import Stores
from piston_vm.storage.users import UserStore
from piston_vm.web.forwarded import client_address
from piston_vm.web.health import begin_draining
from piston_vm.web.keys import LIFECYCLE
from piston_vm.web.observe import redacted_path
from tests.conftest import AppFactory, MakeAccount, Tenant
from tests.helpers import Api, assert_error, assert_success
from tests.test_faults import Couch, couch  # noqa: F401  (`couch` is a fixture)
from tests.test_message_support import (
    create_box,
    create_message_with_audio,
    json_part,
    messages_path,
    multipart,
    raw_path,
    vmboxes_path,
)

JsonObject = dict[str, Any]
ClientFactory = Any  # pytest-aiohttp's aiohttp_client

ACCESS_FIELDS = {"time", "request_id", "remote", "method", "path", "status", "bytes_in",
                 "bytes_out", "duration_ms", "account_id"}
TEXT_LINE = re.compile(
    r"^(?P<time>\S+) (?P<level>[A-Z]+) (?P<logger>\S+) \[(?P<request_id>[^\]]*)\] (?P<msg>.*)$")
ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
BOX_ROUTE = "/v2/accounts/{account_id}/vmboxes/{box_id}"
RAW_ROUTE = "/v2/accounts/{account_id}/vmboxes/{box_id}/messages/{message_id}/raw"


# -- capturing what the service logs ---------------------------------------------------------


@contextmanager
def captured_logs(log_format: str) -> Iterator[io.StringIO]:
    """Every piston_vm record (access and application) while the block runs, as the service
    would write it with PISTON_VM_LOG_FORMAT=`log_format`."""
    stream = io.StringIO()
    handler = logs.handler(log_format, stream)
    logger = logging.getLogger("piston_vm")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def text_access_records(text: str) -> list[JsonObject]:
    records = []
    for line in text.splitlines():
        match = TEXT_LINE.match(line)
        assert match is not None, line
        if match["logger"] != logs.ACCESS_LOGGER:
            continue
        fields: JsonObject = dict(item.split("=", 1) for item in match["msg"].split(" "))
        fields.update(time=match["time"], request_id=match["request_id"])
        records.append(fields)
    return records


def json_records(text: str) -> list[JsonObject]:
    records = [json.loads(line) for line in text.splitlines()]
    for record in records:
        assert isinstance(record, dict), record
        assert {"time", "level", "logger", "message", "request_id"} <= set(record), record
        assert ISO_TIME.match(record["time"]), record
    return records


def assert_no_secrets(text: str, *secrets_: str) -> None:
    for secret in secrets_:
        assert secret not in text, f"a secret reached the log: {secret[:8]}…"


# -- the access log --------------------------------------------------------------------------


async def test_text_access_log_has_every_field_and_redacts_the_query_token(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account)
    with captured_logs("text") as out:
        by_header = await api.client.get(vmboxes_path(account) + f"/{box}",
                                         headers={"X-Auth-Token": account.token})
        header_body = await by_header.read()
        by_query = await api.client.get(vmboxes_path(account),
                                        params={"auth_token": account.token, "paginate": "no"})
        await by_query.read()
        missing, _ = await api.call("GET", "/v2/nowhere")
    assert by_header.status == 200
    assert by_query.status == 200
    assert missing.status == 404

    text = out.getvalue()
    assert_no_secrets(text, account.token, account.api_key)
    records = text_access_records(text)
    assert len(records) == 3, text
    first, second, third = records
    for record in records:
        assert set(record) >= ACCESS_FIELDS, record
        assert ISO_TIME.match(record["time"]), record
        assert record["remote"] == "127.0.0.1"
        assert float(record["duration_ms"]) >= 0
    assert first["request_id"] == by_header.headers["X-Request-ID"]
    assert first["method"] == "GET"
    assert first["path"] == vmboxes_path(account) + f"/{box}"
    assert first["status"] == "200"
    assert first["bytes_in"] == "0"
    assert int(first["bytes_out"]) == len(header_body)
    assert first["account_id"] == account.id
    assert second["request_id"] == by_query.headers["X-Request-ID"]
    assert second["path"] == vmboxes_path(account) + "?auth_token=REDACTED&paginate=no"
    assert third["status"] == "404"
    assert third["account_id"] == "-"


async def test_json_log_is_one_object_per_record_without_credentials(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    tenant = await make_account(name=f"Logs {secrets.token_hex(4)}",
                                realm=f"{secrets.token_hex(4)}.example.net")
    password = f"pw-{secrets.token_hex(8)}"
    await UserStore(stores.couch).create(tenant.id, "alice", password)
    credentials = hashlib.md5(f"alice:{password}".encode()).hexdigest()
    box = await create_box(api, tenant, pin="4321")
    audio = secrets.token_bytes(3000)
    with captured_logs("json") as out:
        resp, body = await api.call("PUT", "/v2/api_auth", data={"api_key": tenant.api_key})
        assert_success(resp, body, 201)
        api_token = body["auth_token"]
        resp, body = await api.call("PUT", "/v2/user_auth", data={
            "credentials": credentials, "account_name": tenant.account.name})
        assert_success(resp, body, 201)
        user_token = body["auth_token"]
        # A secret sent as a query value (this one is not read there: 401) is redacted too.
        resp, body = await api.call("PUT", "/v2/api_auth", params={"api_key": tenant.api_key})
        assert resp.status == 401, body
        message = await create_message_with_audio(api, tenant, box, audio)
        download = await api.client.get(raw_path(tenant, box, message["media_id"]),
                                        params={"auth_token": tenant.token})
        assert await download.read() == audio
    text = out.getvalue()
    assert_no_secrets(text, tenant.token, tenant.api_key, password, credentials, api_token,
                      user_token, "4321")
    records = json_records(text)
    access = [r for r in records if r["logger"] == logs.ACCESS_LOGGER]
    assert len(access) == 5, records
    for record in access:
        assert set(record) >= ACCESS_FIELDS, record
        assert isinstance(record["status"], int)
        assert isinstance(record["bytes_in"], int)
        assert isinstance(record["bytes_out"], int)
        assert isinstance(record["duration_ms"], int | float)
    logins = access[:3]
    assert [r["path"] for r in logins] == ["/v2/api_auth", "/v2/user_auth",
                                           "/v2/api_auth?api_key=REDACTED"]
    assert [r["status"] for r in logins] == [201, 201, 401]
    upload, fetched = access[3], access[4]
    assert upload["method"] == "PUT"
    assert upload["status"] == 201
    assert upload["bytes_in"] > len(audio)  # the audio and the multipart framing
    assert upload["account_id"] == tenant.id
    assert fetched["bytes_out"] == len(audio)
    assert fetched["path"].endswith("/raw?auth_token=REDACTED")
    assert fetched["request_id"] == download.headers["X-Request-ID"]


async def test_access_log_off(make_client: AppFactory, account: Tenant) -> None:
    api = Api(await make_client(access_log=False))
    with captured_logs("text") as out:
        resp, _ = await api.call("GET", vmboxes_path(account), account.token)
    assert resp.status == 200
    assert text_access_records(out.getvalue()) == []


def test_redacted_path_replaces_only_secret_values() -> None:
    assert redacted_path("/v2/x") == "/v2/x"
    assert redacted_path("/v2/x?a=1&auth_token=t0k&b=&AUTH_TOKEN=z&pin=12&api%5Fkey=k") == (
        "/v2/x?a=1&auth_token=REDACTED&b=&AUTH_TOKEN=REDACTED&pin=REDACTED&api%5Fkey=REDACTED")
    assert redacted_path("/v2/x?auth_token") == "/v2/x?auth_token"


# -- the client address behind proxies ---------------------------------------------------------


def _request_from(peer: str, forwarded: str | None) -> web.Request:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return make_mocked_request("GET", "/", headers=headers).clone(remote=peer)


def test_forwarded_address_only_from_trusted_proxies() -> None:
    proxies = parse_networks("10.0.0.0/8, 192.0.2.7")
    assert client_address(_request_from("198.51.100.1", "203.0.113.9"), proxies) == (
        "198.51.100.1")
    assert client_address(_request_from("10.1.2.3", "203.0.113.9"), proxies) == "203.0.113.9"
    # From the right: trusted hops are skipped; what the client wrote to their left is not read.
    assert client_address(_request_from("10.1.2.3", "6.6.6.6, 203.0.113.9, 192.0.2.7"),
                          proxies) == "203.0.113.9"
    assert client_address(_request_from("10.1.2.3", "[2001:db8::1]:80"), proxies) == (
        "2001:db8::1")
    assert client_address(_request_from("10.1.2.3", None), proxies) == "10.1.2.3"
    assert client_address(_request_from("10.1.2.3", "junk, 10.9.9.9"), proxies) == "10.9.9.9"
    assert client_address(_request_from("10.1.2.3", "203.0.113.9"), ()) == "10.1.2.3"
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        parse_networks("10.0.0.0/8,not-an-address")


async def test_trusted_proxy_address_is_logged_and_throttled(
    make_client: AppFactory, make_account: MakeAccount
) -> None:
    tenant = await make_account(name=f"Proxied {secrets.token_hex(4)}")
    behind_proxy = Api(await make_client(trusted_proxies=parse_networks("127.0.0.1")))
    direct = Api(await make_client())

    async def fail_login(api: Api, address: str) -> int:
        resp, _ = await api.call("PUT", "/v2/user_auth", headers={"X-Forwarded-For": address},
                                 data={"credentials": secrets.token_hex(16),
                                       "account_name": tenant.account.name})
        return resp.status

    with captured_logs("json") as out:
        assert await fail_login(behind_proxy, "203.0.113.9") == 401
        assert await fail_login(direct, "203.0.113.9") == 401
    remotes = [r["remote"] for r in json_records(out.getvalue())
               if r["logger"] == logs.ACCESS_LOGGER]
    assert remotes == ["203.0.113.9", "127.0.0.1"]

    # The account-and-address key (docs/operations.md, "Login throttling") counts the
    # forwarded address: one client's failures do not block the next one behind the proxy.
    for _ in range(4):
        assert await fail_login(behind_proxy, "203.0.113.9") == 401
    assert await fail_login(behind_proxy, "203.0.113.9") == 429
    assert await fail_login(behind_proxy, "203.0.113.10") == 401


# -- metrics ---------------------------------------------------------------------------------


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: TestClient) -> Samples:  # type: ignore[type-arg]
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_requests_by_route_template(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    before = await scrape(api.client)
    for _ in range(3):
        resp, body = await api.call("GET", vmboxes_path(account) + f"/{box}", account.token)
        assert_success(resp, body)
    resp, body = await api.call("GET", vmboxes_path(account) + "/nosuchbox", account.token)
    assert_error(resp, body, 404)
    made_up = secrets.token_hex(8)
    resp, _ = await api.call("GET", f"/v2/{made_up}")
    assert resp.status == 404
    after = await scrape(api.client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "piston_vm_http_requests_total"
    assert moved(requests, route=BOX_ROUTE, method="GET", status="200") == 3
    assert moved(requests, route=BOX_ROUTE, method="GET", status="404") == 1
    assert moved(requests, route="unmatched", method="GET", status="404") == 1
    assert moved(requests, route="/metrics", method="GET", status="200") == 1
    assert moved("piston_vm_http_request_duration_seconds_count", route=BOX_ROUTE) == 4
    assert moved("piston_vm_http_request_duration_seconds_bucket", route=BOX_ROUTE,
                 le="+Inf") == 4
    assert moved("piston_vm_couchdb_requests_total", operation="get_doc", outcome="ok") >= 3
    assert moved("piston_vm_couchdb_request_duration_seconds_count", operation="get_doc") >= 4
    # Route labels are templates: no account id, box id or made-up path ever becomes a label.
    for (_, labels) in after:
        for _, label in labels:
            assert account.id not in label, labels
            assert box not in label, labels
            assert made_up not in label, labels

    assert value(after, "piston_vm_build_info", version=__version__, commit="unknown") == 1
    assert ("piston_vm_couchdb_writes_short_of_quorum_total", ()) in after
    assert value(after, "piston_vm_uploads_in_flight") == 0
    assert value(after, "piston_vm_http_requests_in_flight") == 1  # the scrape itself
    assert ("process_resident_memory_bytes", ()) in after


async def test_metrics_count_audio_bytes_in_and_out(api: Api, account: Tenant) -> None:
    box = await create_box(api, account)
    audio = secrets.token_bytes(1_500_000)  # over the in-memory spool: written to a temp file
    before = await scrape(api.client)
    body, content_type = multipart(json_part({}), ("audio/mpeg", audio, "big.mp3"))
    # A stream, not bytes: aiohttp warns about large bytes bodies that block its loop.
    resp = await api.client.put(messages_path(account, box), data=io.BytesIO(body), headers={
        "X-Auth-Token": account.token, "Content-Type": content_type})
    created = await resp.json()
    assert resp.status == 201, created
    path = raw_path(account, box, created["data"]["media_id"])
    whole = await api.client.get(path, headers={"X-Auth-Token": account.token})
    assert await whole.read() == audio
    part = await api.client.get(path, headers={"X-Auth-Token": account.token,
                                               "Range": "bytes=0-99"})
    assert part.status == 206
    assert len(await part.read()) == 100
    after = await scrape(api.client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("piston_vm_audio_bytes_total", direction="in") == len(audio)
    assert moved("piston_vm_audio_bytes_total", direction="out") == len(audio) + 100
    assert moved("piston_vm_http_requests_total", route=RAW_ROUTE, method="GET",
                 status="206") == 1
    assert moved("piston_vm_couchdb_requests_total", operation="put_doc_with_attachments",
                 outcome="ok") == 1
    assert moved("piston_vm_couchdb_requests_total", operation="open_attachment",
                 outcome="ok") == 2
    assert value(after, "piston_vm_uploads_in_flight") == 0


async def test_metrics_off(make_client: AppFactory, account: Tenant) -> None:
    api = Api(await make_client(metrics=False))
    resp, body = await api.call("GET", "/metrics")
    assert_error(resp, body, 404)
    resp, body = await api.call("GET", vmboxes_path(account), account.token)
    assert_success(resp, body)


async def test_metrics_on_their_own_port(
    make_client: AppFactory, aiohttp_client: ClientFactory, account: Tenant
) -> None:
    main = await make_client(metrics_port=9464, commit="abc1234")
    api = Api(main)
    resp, body = await api.call("GET", "/metrics")
    assert_error(resp, body, 404)
    resp, body = await api.call("GET", vmboxes_path(account), account.token)
    assert_success(resp, body)
    metrics_app = create_metrics_app(main.app)
    assert metrics_app is not None
    samples = await scrape(await aiohttp_client(metrics_app))
    assert value(samples, "piston_vm_http_requests_total",
                 route="/v2/accounts/{account_id}/vmboxes", method="GET", status="200") == 1
    assert value(samples, "piston_vm_build_info", version=__version__, commit="abc1234") == 1


def test_each_app_has_its_own_registry() -> None:
    first, second = PrometheusMetrics("1", "a"), PrometheusMetrics("1", "b")
    first.http_request("/x", "GET", 200, 0.01)
    first.http_request("/x", "BREW", 200, 0.01)  # made-up methods share one label value
    assert b'route="/x"' in first.exposition()[0]
    assert b'method="other"' in first.exposition()[0]
    assert b'route="/x"' not in second.exposition()[0]


def test_histogram_buckets_count_values_at_or_below_their_bound() -> None:
    metrics = PrometheusMetrics("1", "a")
    for seconds in (0.001, 0.0011, 0.004, 100.0):
        metrics.http_request("/x", "GET", 200, seconds)
    samples = {(s.name, s.labels.get("le")): s.value
               for family in text_string_to_metric_families(metrics.exposition()[0].decode())
               for s in family.samples if s.labels.get("route") == "/x"}
    name = "piston_vm_http_request_duration_seconds"
    assert samples[(name + "_bucket", "0.001")] == 1
    assert samples[(name + "_bucket", "0.0025")] == 2
    assert samples[(name + "_bucket", "0.005")] == 3
    assert samples[(name + "_bucket", "60.0")] == 3
    assert samples[(name + "_bucket", "+Inf")] == 4
    assert samples[(name + "_count", None)] == 4
    assert samples[(name + "_sum", None)] == pytest.approx(100.0061)


def test_settings_from_the_environment() -> None:
    settings = settings_from_env({
        "PISTON_VM_TRUSTED_PROXIES": "10.0.0.0/8,192.0.2.7", "PISTON_VM_LOG_FORMAT": "json",
        "PISTON_VM_ACCESS_LOG": "off", "PISTON_VM_METRICS": "off",
        "PISTON_VM_METRICS_PORT": "9464", "PISTON_VM_SHUTDOWN_GRACE_S": "1.5",
        "PISTON_VM_SHUTDOWN_TIMEOUT_S": "10", "PISTON_VM_COMMIT": "abc1234"})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "192.0.2.7/32"]
    assert settings.log_format == "json"
    assert (settings.access_log, settings.metrics) == (False, False)
    assert settings.metrics_port == 9464
    assert (settings.shutdown_grace_s, settings.shutdown_timeout_s) == (1.5, 10.0)
    assert settings.commit == "abc1234"
    defaults = settings_from_env({})
    assert (defaults.log_format, defaults.access_log, defaults.metrics) == ("text", True, True)
    assert (defaults.metrics_port, defaults.trusted_proxies) == (None, ())
    assert (defaults.shutdown_grace_s, defaults.shutdown_timeout_s) == (5.0, 30.0)
    for bad in ({"PISTON_VM_LOG_FORMAT": "xml"}, {"PISTON_VM_METRICS": "maybe"},
                {"PISTON_VM_SHUTDOWN_GRACE_S": "-1"}):
        with pytest.raises(ValueError, match="PISTON_VM_"):
            settings_from_env(bad)


def test_json_records_outside_requests_carry_a_placeholder_request_id() -> None:
    with captured_logs("json") as out:
        logging.getLogger("piston_vm.test").warning("plain %s", "record")
    (record,) = json_records(out.getvalue())
    assert record["message"] == "plain record"
    assert record["level"] == "WARNING"
    assert record["request_id"] == "-"
    datetime.fromisoformat(record["time"].replace("Z", "+00:00"))


# -- probes ----------------------------------------------------------------------------------


async def test_readiness_follows_couchdb_and_draining(
    couch: Couch, make_client: AppFactory, settings: Settings,  # noqa: F811
) -> None:
    client = await make_client(couchdb=couch.endpoint, couchdb_timeout_s=1.0)
    api = Api(client)
    resp, body = await api.call("GET", "/readyz")
    assert resp.status == 200, body
    assert body == {"status": "ok", "failed": [], "checks": {
        "couchdb": "up", "design_documents": "installed", "draining": False}}

    await couch.stop()
    with captured_logs("json") as out:
        resp, body = await api.call("GET", "/readyz")
        assert resp.status == 503, body
        assert body["failed"] == ["couchdb"]
        assert body["checks"]["couchdb"] == "unreachable"
        failing, _ = await api.call("GET", "/v2/accounts/" + "a" * 32 + "/vmboxes", "t")
        assert failing.status == 503
    resp, body = await api.call("GET", "/healthz")
    assert resp.status == 200, body
    # Application records logged while a request is handled carry its request id.
    warnings = [r for r in json_records(out.getvalue())
                if r["logger"] == "piston_vm.storage.couch"]
    assert warnings, out.getvalue()
    assert {r["request_id"] for r in warnings} == {failing.headers["X-Request-ID"]}

    await couch.start()
    resp, body = await api.call("GET", "/readyz")
    assert resp.status == 200, body

    # A design document removed under the service: not ready until it is installed again.
    direct = CouchClient(couch.endpoint, 1.0)
    await direct.start()
    try:
        design = await direct.get_doc("accounts", "_design/accounts")
        assert design is not None
        await direct.delete_doc("accounts", "_design/accounts", design["_rev"])
        resp, body = await api.call("GET", "/readyz")
        assert resp.status == 503, body
        assert body["failed"] == ["design_documents"]
        await Stores.build(settings.with_overrides(couchdb=couch.endpoint),
                           direct).accounts.ensure_accounts_db()
        resp, body = await api.call("GET", "/readyz")
        assert resp.status == 200, body
    finally:
        await direct.close()

    begin_draining(client.app)
    resp, body = await api.call("GET", "/readyz")
    assert resp.status == 503, body
    assert body["failed"] == ["draining"]
    assert body["checks"]["draining"] is True
    resp, body = await api.call("GET", "/healthz")
    assert resp.status == 200  # still alive, and still serving while it drains

    # After the grace period a request on a connection kept alive is turned away.
    client.app[LIFECYCLE].refuse_new_requests()
    resp, body = await api.call("GET", "/healthz")
    assert_error(resp, body, 503, "shutting_down")
    assert resp.headers["Retry-After"] == "1"


async def test_readiness_reports_credentials_couchdb_refuses(
    settings: Settings, stores: Stores
) -> None:
    assert settings.couchdb is not None
    wrong = CouchEndpoint(settings.couchdb.url, settings.couchdb.user, "not-the-password")
    client = CouchClient(wrong, 1.0)
    await client.start()
    try:
        readiness = await Stores.build(settings, client).accounts.readiness()
    finally:
        await client.close()
    assert (readiness.couchdb, readiness.design_documents, readiness.ready) == (
        "unauthorized", "unknown", False)
    assert (await stores.accounts.readiness()).ready
