"""The request pipeline and envelope on every route: parsing, errors, CORS, verbs (docs/api.md
2–7)."""

from __future__ import annotations

import json

from tests.conftest import Tenant
from tests.helpers import HEX32, Api, assert_error, assert_success


def boxes(account: Tenant) -> str:
    return f"/v2/accounts/{account.id}/vmboxes"


async def test_request_id_is_echoed_or_generated(api: Api, account: Tenant) -> None:
    resp, body = await api.call("GET", boxes(account), account.token,
                                headers={"X-Request-ID": "req-123"})
    assert_success(resp, body)
    assert resp.headers["X-Request-ID"] == "req-123"
    assert body["request_id"] == "req-123"
    resp, body = await api.call("GET", boxes(account), account.token)
    assert HEX32.match(body["request_id"])


async def test_success_envelope_keys(api: Api, account: Tenant) -> None:
    resp, body = await api.call("GET", boxes(account), account.token)
    assert_success(resp, body)
    assert body["version"] == "4.3.142"
    assert body["auth_token"] == account.token


async def test_empty_json_body_on_get_and_ui_metadata_on_delete(
    api: Api, account: Tenant
) -> None:
    resp, body = await api.call("GET", boxes(account), account.token, body=b"",
                                headers={"Content-Type": "application/json"})
    assert_success(resp, body)


async def test_unknown_query_parameters_are_ignored(api: Api, account: Tenant) -> None:
    resp, body = await api.call("GET", boxes(account) + "?_=1710522303000", account.token)
    assert_success(resp, body)


async def test_malformed_json_and_missing_data(api: Api, account: Tenant) -> None:
    resp, body = await api.call("PUT", boxes(account), account.token, body=b"{not json",
                                headers={"Content-Type": "application/json"})
    data = assert_error(resp, body, 400, "validation error")
    assert data == {"json": {"invalid": {"message": "All JSON must be valid", "target": "body"}}}
    resp, body = await api.call("PUT", boxes(account), account.token, body=b'{"name": "x"}',
                                headers={"Content-Type": "application/json"})
    assert assert_error(resp, body, 400)["data"]["required"]["value"] == "data"
    resp, body = await api.call("PUT", boxes(account), account.token, body=b'{"data": 5}',
                                headers={"Content-Type": "application/json"})
    assert assert_error(resp, body, 400)["data"]["type"]["target"] == "object, array"


async def test_form_urlencoded_json_is_read_as_json(api: Api, account: Tenant) -> None:
    payload = json.dumps({"data": {"name": "Curl", "mailbox": "77"}})
    resp, body = await api.call(
        "PUT", boxes(account), account.token, body=payload,
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert assert_success(resp, body, 201)["name"] == "Curl"


async def test_envelope_keys_are_case_insensitive(api: Api, account: Tenant) -> None:
    resp, body = await api.call("PUT", boxes(account), account.token,
                                body=json.dumps({"DATA": {"name": "Up", "mailbox": "5"}}),
                                headers={"Content-Type": "application/json"})
    assert assert_success(resp, body, 201)["name"] == "Up"


async def test_body_over_the_limit_is_413(make_client: object, account: Tenant) -> None:
    from collections.abc import Awaitable, Callable
    from typing import Any, cast
    client = await cast(Callable[..., Awaitable[Any]], make_client)(max_upload_bytes=1000)
    api = Api(client)
    resp, body = await api.call("PUT", boxes(account), account.token,
                                {"name": "x" * 2000, "mailbox": "1"})
    data = assert_error(resp, body, 413, "validation error")
    assert data == {"file": {"maxSize": {
        "message": "Payload or Files must not be more than 1000 bytes", "target": 1000}}}


async def test_v1_is_gone(api: Api, account: Tenant) -> None:
    resp, body = await api.call("GET", f"/v1/accounts/{account.id}/vmboxes")
    assert assert_error(resp, body, 410, "gone")["message"].startswith("API version 1")


async def test_unknown_routes_are_json_404(api: Api, account: Tenant) -> None:
    for path in (f"/v2/accounts/{account.id}/storage", f"/v2/accounts/{account.id}",
                 f"/v2/accounts/{account.id}/messages", "/v2/nothing", "/favicon.ico"):
        resp, body = await api.call("GET", path, account.token)
        assert assert_error(resp, body, 404, "not_found") == {"message": "not found"}


async def test_disallowed_method_is_405_with_allow(api: Api, account: Tenant) -> None:
    resp, body = await api.call("PATCH", boxes(account), account.token, {"name": "x"})
    assert assert_error(resp, body, 405, "invalid_method") == {"message": "method not allowed"}
    assert resp.headers["Allow"] == "GET, PUT"


async def test_trailing_slash_is_the_same_path(api: Api, account: Tenant) -> None:
    resp, body = await api.call("GET", boxes(account) + "/", account.token)
    assert_success(resp, body)


async def test_account_ids_are_checked_before_auth(api: Api) -> None:
    resp, body = await api.call("GET", "/v2/accounts/not-an-id/vmboxes")
    assert assert_error(resp, body, 404, "bad identifier") == {
        "message": "invalid account_id 'not-an-id'"}
    resp, body = await api.call("GET", "/v2/accounts//vmboxes")
    assert assert_error(resp, body, 404, "bad identifier") == {"message": "missing account_id"}
    unknown = "f" * 32
    resp, body = await api.call("GET", f"/v2/accounts/{unknown}/vmboxes")
    assert assert_error(resp, body, 404, "bad_identifier") == {
        "cause": unknown, "message": "bad identifier"}


async def test_verb_tunnelling_only_on_post(api: Api, account: Tenant) -> None:
    resp, body = await api.call("POST", boxes(account) + "?verb=PUT", account.token,
                                {"name": "Tunnel", "mailbox": "9"})
    assert assert_success(resp, body, 201)["name"] == "Tunnel"
    resp, body = await api.call("POST", boxes(account), account.token,
                                body=json.dumps({"verb": "put", "data": {"name": "T2",
                                                                         "mailbox": "10"}}),
                                headers={"Content-Type": "application/json"})
    assert_success(resp, body, 201)
    resp, body = await api.call("GET", boxes(account) + "?verb=DELETE", account.token)
    assert len(assert_success(resp, body)) == 2


async def test_wrong_content_type_is_415_json(api: Api, account: Tenant) -> None:
    resp, body = await api.call("PUT", boxes(account), account.token, body="name=x",
                                headers={"Content-Type": "text/plain"})
    assert assert_error(resp, body, 415, "unsupported_media_type") == {
        "message": "unsupported media type", "cause": "text/plain"}


async def test_preflight_on_any_path(api: Api, account: Tenant) -> None:
    for path in (boxes(account), f"/v2/accounts/{account.id}/storage"):
        resp = await api.client.options(path, headers={
            "Origin": "http://ui.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "X-Auth-Token, X-Kazoo-Cluster-ID"})
        assert resp.status == 200
        assert await resp.read() == b""
        methods = resp.headers["Access-Control-Allow-Methods"]
        assert methods.startswith("OPTIONS, ")
        assert "GET" in methods
        allowed = [h.strip() for h in resp.headers["Access-Control-Allow-Headers"].split(",")]
        assert {"content-type", "x-auth-token", "x-kazoo-cluster-id"} <= set(allowed)
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert resp.headers["Access-Control-Max-Age"] == "86400"
    resp = await api.client.options(boxes(account), headers={
        "Access-Control-Request-Method": "PATCH"})
    assert resp.headers["Access-Control-Allow-Methods"] == "OPTIONS, GET, PUT, PATCH"


async def test_cors_headers_on_success_and_error(api: Api, account: Tenant) -> None:
    resp, body = await api.call("GET", boxes(account), account.token)
    assert resp.headers["Access-Control-Expose-Headers"].startswith("content-type")
    resp, body = await api.call("GET", boxes(account))
    assert_error(resp, body, 401)
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_head_answers_like_get_without_a_body(api: Api, account: Tenant) -> None:
    resp = await api.client.head(boxes(account), headers={"X-Auth-Token": account.token})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert await resp.read() == b""


async def test_pretty_print(api: Api, account: Tenant) -> None:
    resp = await api.client.get(boxes(account), headers={
        "X-Auth-Token": account.token, "X-Pretty-Print": "true"})
    assert "\n" in (await resp.text())


async def test_healthz(api: Api) -> None:
    resp, body = await api.call("GET", "/healthz")
    assert resp.status == 200
    assert body == {"status": "ok"}
