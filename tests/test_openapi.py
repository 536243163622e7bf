"""The OpenAPI document: kept, served, built from the routes, and checked against the live service.

The property-based run drives every documented operation with schemathesis against the app on
a real loopback port, twice: once with generated box and message ids (mostly bad ones), once with
the ids of a real box and message (success paths). Each response must not be a 5xx and must match
the document: status code, content type, headers and body schema. Failures are collected across
all operations and reported together, each with a curl line that reproduces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import hypothesis
import jsonschema
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_30

from piston_vm.api.routes import ENDPOINTS as ROUTES
from piston_vm.app import create_app
from piston_vm.core.config import DEFAULT_SCHEMAS_DIR, Settings
from piston_vm.web.inbox import ROUTE_PATHS as INBOX_PATHS
from piston_vm.web.openapi import (
    OPENAPI_FILE,
    build_openapi,
    load_json_schemas,
    openapi_path,
    render,
)
from piston_vm.web.routing import ENDPOINTS
from tests.conftest import MakeAccount, Tenant
from tests.helpers import Api, assert_json

JsonObject = dict[str, Any]

KEPT_FILE = DEFAULT_SCHEMAS_DIR / OPENAPI_FILE
CATCH_ALL = "/{tail}"
HTTP_METHODS = ("GET", "PUT", "POST", "PATCH", "DELETE")

# The time budget of the property-based run: examples per operation and pass, and a wall-clock
# cap for the whole run (2-core CI machine; the rest of the suite needs the remaining minutes).
MAX_EXAMPLES = 20
MIN_EXAMPLES = 200  # far fewer means the budget cut the run short: it proved little
RUN_BUDGET_S = 75.0
REQUEST_TIMEOUT_S = 15.0
FAILURES_KEPT_PER_OPERATION = 3
FAILURE_TEXT_CHARS = 2000
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
AUDIO = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 4


def kept_document() -> JsonObject:
    document: JsonObject = json.loads(KEPT_FILE.read_text())
    return document


# -- the document itself ----------------------------------------------------------------------


def test_kept_file_is_the_freshly_built_document() -> None:
    expected = render(build_openapi(DEFAULT_SCHEMAS_DIR, ROUTES))
    assert KEPT_FILE.read_text() == expected, (
        "schemas/openapi.json is stale: "
        "run `piston-vm openapi > schemas/openapi.json`")


def test_document_is_valid_openapi_3_0() -> None:
    document = kept_document()
    assert document["openapi"] == "3.0.3"
    problems = [f"{list(e.absolute_path)}: {e.message}"
                for e in jsonschema.Draft4Validator(OPENAPI_30).iter_errors(document)]
    assert problems == []
    for ref in _refs(document):
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict), f"dangling $ref {ref}"
            assert part in target, f"dangling $ref {ref}"
            target = target[part]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_request_schemas_keep_every_rule_of_schemas_dir() -> None:
    """Independently of the translator: names, required lists, types, enums and limits agree."""
    components = kept_document()["components"]["schemas"]
    drafts = load_json_schemas(DEFAULT_SCHEMAS_DIR)
    assert set(drafts) <= set(components)
    rules = ("type", "required", "enum", "minLength", "maxLength", "minimum", "maximum",
             "format", "default")
    for name, draft in drafts.items():
        for path, draft_node, oas_node in _walk_pairs(draft, components[name]):
            for rule in rules:
                assert draft_node.get(rule) == oas_node.get(rule), (name, path, rule)
            assert "id" not in oas_node
            assert "$schema" not in oas_node
            if "$ref" in draft_node:
                assert oas_node["$ref"] == f"#/components/schemas/{draft_node['$ref']}"


def _walk_pairs(draft: JsonObject, oas: JsonObject, path: str = "") -> Iterator[
        tuple[str, JsonObject, JsonObject]]:
    yield path, draft, oas
    for name, sub in draft.get("properties", {}).items():
        yield from _walk_pairs(sub, oas["properties"][name], f"{path}.{name}")
    if isinstance(draft.get("items"), dict):
        yield from _walk_pairs(draft["items"], oas["items"], f"{path}[]")
    for index, sub in enumerate(draft.get("oneOf", [])):
        yield from _walk_pairs(sub, oas["oneOf"][index], f"{path}|{index}")


async def test_served_document_is_the_kept_file(api: Api) -> None:
    for path in ("/v2/openapi.json", "/v2/openapi.json/"):
        resp = await api.client.get(path)
        assert resp.status == 200
        assert_json(resp)
        assert await resp.read() == KEPT_FILE.read_bytes()


def routed_operations(app: web.Application) -> dict[str, set[str]]:
    """Path → methods, from the router itself (HEAD, the catch-all and `/` twins left out)."""
    table = app[ENDPOINTS]
    canonicals = {r.canonical for r in app.router.resources()}
    routed: dict[str, set[str]] = {}
    for resource in app.router.resources():
        path = resource.canonical
        if path == CATCH_ALL or (path.endswith("/") and path[:-1] in canonicals):
            continue
        if path in {openapi_path(p) for p in INBOX_PATHS}:  # the browser page (web/inbox.py)
            continue
        endpoint = table.get(path)
        if endpoint is not None:
            methods = set(endpoint.allowed)
        else:
            methods = {route.method for route in resource} - {"HEAD"}
        routed[openapi_path(path)] = methods
    return routed


def test_every_route_is_documented_with_its_methods(settings: Settings) -> None:
    routed = routed_operations(create_app(settings))
    documented = {path: {method.upper() for method in item}
                  for path, item in kept_document()["paths"].items()}
    assert "/v2/openapi.json" in routed
    assert "/healthz" in routed
    assert routed == documented


def test_every_account_operation_documents_the_gate_statuses() -> None:
    for path, item in kept_document()["paths"].items():
        for method, operation in item.items():
            codes = set(operation["responses"])
            assert {"400", "413"} <= codes, (method, path)
            if path.startswith("/v2/accounts/"):
                assert {"401", "403", "404", "503"} <= codes, (method, path)
                assert "security" not in operation
            if method in ("put", "post", "patch"):
                assert "415" in codes, (method, path)


# -- the property-based run ---------------------------------------------------------------------


@dataclass
class RunReport:
    examples: int = 0
    operations: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    by_operation: dict[str, dict[int, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)
    stopped_by_budget: bool = False

    def count(self, label: str, status: int) -> None:
        self.examples += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1
        per_operation = self.by_operation.setdefault(label, {})
        per_operation[status] = per_operation.get(status, 0) + 1


@dataclass(frozen=True)
class Target:
    """Where the run goes: the live app, a token, and the real ids made for one pass."""

    base_url: str
    token: str
    routed: dict[str, set[str]]
    deadline: float


@dataclass(frozen=True)
class Pass:
    """One walk over the routed operations: which ids are fixed, which mode, which bodies."""

    ids: dict[str, str]
    mode: GenerationMode = GenerationMode.POSITIVE
    only_with: frozenset[str] = frozenset()  # only operations with one of these path ids
    bodies: dict[tuple[str, str], JsonObject] = field(default_factory=dict)


def _order(operation: Any) -> tuple[bool, int]:
    # Deletes last, deepest first, so the real box and message live through everything else.
    return operation.method.upper() == "DELETE", -operation.path.count("/")


def _fuzz(target: Target, one_pass: Pass, report: RunReport) -> None:
    """One pass over every routed operation; runs in a worker thread (requests is blocking)."""
    # Reproductions must show the real values: tokens and cursors here are test data.
    config = schemathesis.Config.from_dict(
        {"output": {"sanitization": {"enabled": False}, "truncation": {"enabled": False}}})
    schema = schemathesis.openapi.from_dict(kept_document(), config=config)
    operations = sorted((result.ok() for result in schema.get_all_operations()
                         if isinstance(result, Ok)), key=_order)
    session = requests.Session()
    for operation in operations:
        method = operation.method.upper()
        if method not in target.routed.get(operation.path, set()):
            continue
        names = {p.name for p in operation.path_parameters}
        if one_pass.only_with and not names & one_pass.only_with:
            continue
        report.operations += 1
        extra: dict[str, Any] = {}
        body = one_pass.bodies.get((method, operation.path))
        if body is not None:
            extra = {"body": body, "media_type": "application/json"}
        strategy = operation.as_strategy(
            generation_mode=one_pass.mode,
            path_parameters={k: v for k, v in one_pass.ids.items() if k in names} or None,
            **extra)
        began = time.monotonic()
        _run_operation(strategy, target, session, report)
        label = f"{method} {operation.path}"
        report.seconds[label] = report.seconds.get(label, 0.0) + time.monotonic() - began
    session.close()


def _run_operation(
    strategy: Any, target: Target, session: requests.Session, report: RunReport,
) -> None:
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
        phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
        verbosity=hypothesis.Verbosity.quiet, print_blob=False,
    )
    @hypothesis.given(case=strategy)
    def run(case: schemathesis.Case[Any]) -> None:
        if time.monotonic() > target.deadline:
            report.stopped_by_budget = True
            return
        response = case.call(base_url=target.base_url, session=session,
                             headers={"X-Auth-Token": target.token}, timeout=REQUEST_TIMEOUT_S)
        report.count(case.operation.label, response.status_code)
        try:
            case.validate_response(response, checks=CHECKS)
        except (FailureGroup, Failure) as failure:
            seen = report.failures.setdefault(case.operation.label, [])
            if len(seen) < FAILURES_KEPT_PER_OPERATION:
                seen.append(_describe(failure, response, case.as_curl_command(
                    headers=dict(response.request.headers))))

    # Negative mode: an operation without inputs has nothing to get wrong.
    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        run()


def _describe(failure: FailureGroup | Failure, response: schemathesis.Response, curl: str) -> str:
    """One failure in a few lines: status, what was wrong, and how to reproduce it."""
    parts = failure.exceptions if isinstance(failure, FailureGroup) else (failure,)
    problems = "; ".join(f"{part.title}: {part.message}".strip()[:FAILURE_TEXT_CHARS]
                         for part in parts)
    text = response.content[:300].decode(errors="replace")
    return f"{response.status_code} {problems}\n  body: {text}\n  {curl}"


async def _seed(base_url: str, tenant: Tenant, mailbox: str) -> dict[str, str]:
    """A real box with one message that has audio, and a webhook, made through the API."""
    headers = {"X-Auth-Token": tenant.token}
    boxes = f"{base_url}/v2/accounts/{tenant.id}/vmboxes"
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.put(boxes, json={"data": {"name": "Fuzz", "mailbox": mailbox}}) as resp:
            assert resp.status == 201, await resp.text()
            box_id = str((await resp.json())["data"]["id"])
        async with http.put(f"{boxes}/{box_id}/messages?caller_id_number=6001", data=AUDIO,
                            headers={"Content-Type": "audio/mpeg"}) as resp:
            assert resp.status == 201, await resp.text()
            message_id = str((await resp.json())["data"]["media_id"])
        hook = {"name": "Fuzz", "uri": "https://receiver.example.com/", "hook": "object",
                "custom_data": {"type": "all", "action": "all"}}
        async with http.put(f"{base_url}/v2/accounts/{tenant.id}/webhooks",
                            json={"data": hook}) as resp:
            assert resp.status == 201, await resp.text()
            webhook_id = str((await resp.json())["data"]["id"])
    return {"account_id": tenant.id, "box_id": box_id, "message_id": message_id,
            "webhook_id": webhook_id}


async def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(
    settings: Settings, make_account: MakeAccount,
) -> None:
    tenant = await make_account(name="Fuzz Account")
    app = create_app(settings)
    routed = routed_operations(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    report = RunReport()
    started = time.monotonic()
    try:
        host, port = runner.addresses[0][:2]
        target = Target(f"http://{host}:{port}", tenant.token, routed,
                        started + RUN_BUDGET_S)
        for_negative = await _seed(target.base_url, tenant, "4242")
        for_success = await _seed(target.base_url, tenant, "4243")
        real_ids = frozenset({"box_id", "message_id", "webhook_id"})
        zip_path = "/v2/accounts/{account_id}/vmboxes/{box_id}/messages/raw"
        passes = [
            # Generated ids: mostly unknown, malformed or hostile ones.
            Pass({"account_id": tenant.id}),
            # Schema-violating queries and bodies must get documented 4xx. The ids stay real:
            # an "invalid" box id such as `messages` names another documented path (docs/api.md 1).
            Pass(for_negative, GenerationMode.NEGATIVE),
            # Success paths on a real box, message and webhook; this pass ends by deleting them.
            Pass(for_success, only_with=real_ids, bodies={("POST", zip_path): {
                "data": {"messages": [for_success["message_id"]]}}}),
        ]
        for one_pass in passes:
            await asyncio.to_thread(_fuzz, target, one_pass, report)
    finally:
        await runner.cleanup()
    elapsed = time.monotonic() - started
    summary = (f"schemathesis: {report.examples} examples over {report.operations} operation "
               f"runs in {elapsed:.1f} s, statuses {dict(sorted(report.by_status.items()))}"
               + (" (stopped by the time budget)" if report.stopped_by_budget else ""))
    print(summary)
    details = "\n\n".join(f"== {label}\n" + "\n--\n".join(texts)
                           for label, texts in report.failures.items())
    coverage = "\n".join(
        f"{label}: {dict(sorted(statuses.items()))} in {report.seconds.get(label, 0):.1f} s"
        for label, statuses in report.by_operation.items())
    (Path(tempfile.gettempdir()) / "piston_vm-schemathesis.txt").write_text(
        summary + "\n\n" + coverage + "\n\n" + details)
    assert report.examples >= MIN_EXAMPLES, summary
    assert report.failures == {}, summary + "\n\n" + details
