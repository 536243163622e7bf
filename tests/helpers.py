"""Test helpers that assert status *and* the platform's envelope shape on every response."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

JsonObject = dict[str, Any]

ISO8601_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")


class Api:
    """A test client that sends JSON envelopes and returns (response, decoded body)."""

    def __init__(self, client: TestClient) -> None:  # type: ignore[type-arg]
        self.client = client

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        body: bytes | str | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[ClientResponse, Any]:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers.setdefault("X-Auth-Token", token)
        if data is not None:
            body = json.dumps({"data": data})
            all_headers.setdefault("Content-Type", "application/json")
        resp = await self.client.request(
            method, path, data=body, headers=all_headers, params=params
        )
        raw = await resp.read()
        decoded: Any = None
        if resp.headers.get("Content-Type") == "application/json" and raw:
            decoded = json.loads(raw)
        return resp, decoded


def assert_json(resp: ClientResponse) -> None:
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers.get("X-Request-ID")


def assert_success(resp: ClientResponse, body: Any, status: int = 200) -> Any:
    """Check the success envelope and return its `data`."""
    assert resp.status == status, body
    assert_json(resp)
    assert body["status"] == "success"
    assert "data" in body
    assert body["request_id"] == resp.headers["X-Request-ID"]
    assert ISO8601_Z.match(body["timestamp"])
    assert isinstance(body["node"], str)
    assert body["node"]
    return body["data"]


def assert_error(
    resp: ClientResponse, body: Any, status: int, message: str | None = None
) -> JsonObject:
    """Check the error envelope (string `error`) and return its `data`."""
    assert resp.status == status, body
    assert_json(resp)
    assert body["status"] == "error"
    assert body["error"] == str(status)
    assert isinstance(body["message"], str)
    assert isinstance(body["data"], dict)
    assert body["request_id"] == resp.headers["X-Request-ID"]
    assert "revision" not in body
    assert "page_size" not in body
    if message is not None:
        assert body["message"] == message, body
    data: JsonObject = body["data"]
    return data
