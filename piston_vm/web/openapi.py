"""The OpenAPI 3.0.3 document of the whole API, built from the route table and schemas/.

`build_openapi(schemas_dir, routes)` derives paths, methods, gates and accepted body types from
the route table, and embeds the draft-04 request schemas of schemas/ (translated to OpenAPI
schema objects: 3.0 cannot `$ref` draft-04 files that name themselves with `id`) under
`components/schemas`. The result is kept in schemas/openapi.json (`python -m piston_vm.web.openapi
> schemas/openapi.json`) and served at `GET /v2/openapi.json`; a test rebuilds it and compares,
so the kept file, the routes and the schemas cannot drift apart.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import web

from piston_vm import __version__
from piston_vm.web.health import HEALTHZ_PATH, READYZ_PATH
from piston_vm.web.keys import SETTINGS
from piston_vm.web.metrics import METRICS_PATH
from piston_vm.web.routing import ENDPOINTS, BodyKind, Endpoint

JsonObject = dict[str, Any]

OPENAPI_FILE = "openapi.json"
OPENAPI_PATH = "/v2/openapi.json"
# Served outside the route table (app.py), without a token or envelope.
PROBE_PATHS = (HEALTHZ_PATH, READYZ_PATH, METRICS_PATH)
USER_AUTH_PATH = "/v2/user_auth"

_EVENTS = "/v2/accounts/{account_id}/events"
_BOXES = "/v2/accounts/{account_id}/vmboxes"
_BOX = _BOXES + "/{box_id}"
_MESSAGES = _BOX + "/messages"
_MESSAGE = _MESSAGES + "/{message_id}"

# `{account_id:[^/]*}` in aiohttp's table is `{account_id}` in OpenAPI.
_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*)?\}")

# Keywords an OpenAPI 3.0 schema object shares with draft-04 (copied verbatim), and those whose
# values are themselves schemas (translated). Any other draft-04 keyword becomes an `x-` extension.
_VERBATIM_KEYWORDS = frozenset({
    "title", "description", "default", "enum", "format", "required", "type",
    "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems",
    "maxProperties", "minProperties",
})
_SUBSCHEMA_KEYWORDS = frozenset({"items", "additionalProperties", "not"})
_SUBSCHEMA_LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf"})
_DROPPED_KEYWORDS = frozenset({"$schema", "id"})

_JSON = "application/json"
# Mailbox numbers are compared as integers, so only integer strings are valid (docs/decisions.md
# D-18).
MAILBOX_PATTERN = "^[+-]?[0-9]+$"
_ERROR_REF = "#/components/schemas/ErrorEnvelope"
_SUCCESS_REF = "#/components/schemas/SuccessEnvelope"


def component_ref(name: str) -> JsonObject:
    return {"$ref": f"#/components/schemas/{name}"}


def openapi_path(aiohttp_path: str) -> str:
    return _PARAM_RE.sub(r"{\1}", aiohttp_path)


# -- draft-04 → OpenAPI 3.0 schema objects -------------------------------------------------------


def load_json_schemas(schemas_dir: Path) -> dict[str, JsonObject]:
    """The draft-04 request schemas of `schemas_dir` by their `id` (the OpenAPI file excluded)."""
    schemas: dict[str, JsonObject] = {}
    for path in sorted(schemas_dir.glob("*.json")):
        if path.name == OPENAPI_FILE:
            continue
        schema = json.loads(path.read_text())
        schemas[str(schema.get("id", path.stem))] = schema
    return schemas


def to_openapi_schema(schema: Any, names: Collection[str]) -> Any:
    """Translate one draft-04 schema; `$ref`s name other schemas by `id` and must be in `names`."""
    if not isinstance(schema, dict):
        return schema
    out: JsonObject = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYWORDS:
            continue
        if key == "$ref":
            if value not in names:
                raise ValueError(f"$ref to an unknown schema: {value!r}")
            out["$ref"] = component_ref(value)["$ref"]
        elif key == "properties":
            out[key] = {name: to_openapi_schema(sub, names) for name, sub in value.items()}
        elif key in _SUBSCHEMA_KEYWORDS:
            out[key] = to_openapi_schema(value, names) if isinstance(value, dict) else value
        elif key in _SUBSCHEMA_LIST_KEYWORDS:
            out[key] = [to_openapi_schema(sub, names) for sub in value]
        elif key == "type" and isinstance(value, list):
            out.update(_type_list(value))
        elif key in _VERBATIM_KEYWORDS:
            out[key] = copy.deepcopy(value)
        else:
            # support_level, patternProperties, dependencies…: kept as information only.
            out["x-" + key.replace("_", "-")] = copy.deepcopy(value)
    if out.get("type") == "array" and "items" not in out:
        out["items"] = {}  # OpenAPI 3.0 requires `items` on every array schema
    if "$ref" in out and len(out) > 1:
        # OpenAPI 3.0 ignores siblings of $ref; keep them by wrapping the reference.
        return {**{k: v for k, v in out.items() if k != "$ref"}, "allOf": [{"$ref": out["$ref"]}]}
    return out


def _type_list(types: list[str]) -> JsonObject:
    """Draft-04 `type: [...]`: 3.0 has one type per schema, plus `nullable`."""
    real = [t for t in types if t != "null"]
    result: JsonObject = {}
    if "null" in types:
        result["nullable"] = True
    if len(real) == 1:
        result["type"] = real[0]
    elif real:
        result["anyOf"] = [{"type": t} for t in real]
    return result


def _without_required(schema: JsonObject) -> JsonObject:
    partial = {k: v for k, v in schema.items() if k != "required"}
    partial["description"] = (
        "Any subset of the box fields; `null` removes a field (docs/api.md 9.5)")
    return partial


# -- shapes the service owns (docs/api.md 4, 5, 9, 10)
# -----------------------------------------------


def _own_schemas() -> JsonObject:
    string = {"type": "string"}
    integer = {"type": "integer"}
    message_fields: JsonObject = {
        "media_id": {"type": "string", "description": "The message id, `YYYYMM-<hex>`"},
        "call_id": string,
        "caller_id_name": string,
        "caller_id_number": string,
        "from": string,
        "to": string,
        "folder": {"type": "string", "description": "`new`, `saved` or `deleted`"},
        "length": integer,
        "timestamp": {"type": "integer", "description": "Gregorian seconds"},
        "retention": {"type": "string", "description": "`enforced` when older than retention"},
        "retention_message": string,
    }
    return {
        "SuccessEnvelope": {
            "type": "object",
            "description": "Every JSON success answer (docs/api.md 4.1)",
            "required": ["status", "data", "request_id", "timestamp", "node"],
            "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "enum": ["success"]},
                "data": {"description": "The endpoint's payload"},
                "request_id": string,
                "revision": {"type": "string",
                             "description": "`_rev` of a box, or an md5 of a list's data"},
                "auth_token": string,
                "timestamp": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
                "version": string,
                "node": string,
                "page_size": {"type": "integer", "minimum": 0,
                              "description": "Number of items in `data` (docs/decisions.md P-3)"},
                "start_key": {"type": "string", "description": "Echo of the request's start_key"},
                "next_start_key": {"type": "string",
                                   "description": "Opaque cursor; present only when more exist"},
                "message": string,
                "tokens": {"type": "object", "properties": {"consumed": integer,
                                                            "remaining": integer}},
            },
        },
        "ErrorEnvelope": {
            "type": "object",
            "description": "Every error answer, /raw and ZIP requests included (docs/api.md 5.1)",
            "required": ["status", "error", "message", "data", "request_id"],
            "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "enum": ["error"]},
                "error": {"type": "string", "pattern": "^[1-5][0-9][0-9]$",
                          "description": "The HTTP status as a string (docs/decisions.md D-19)"},
                "message": string,
                "data": {"type": "object"},
                "request_id": string,
                "auth_token": string,
                "timestamp": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
                "node": string,
            },
        },
        "VmboxCreate": {
            "allOf": [component_ref("vmboxes")],
            "properties": {"id": {
                "type": "string", "pattern": "^[0-9A-Za-z][0-9A-Za-z_\\-]{0,127}$",
                "description": "Optional chosen box id (docs/storage.md 1.5)"}},
        },
        "Vmbox": {
            "description": "A box's public fields plus its id (docs/api.md 9.3)",
            "allOf": [component_ref("vmboxes")],
            "required": ["id"],
            "properties": {
                "id": string,
                "_read_only": {"type": "object",
                               "properties": {"deleted": {"type": "boolean"}}},
            },
        },
        "VmboxListRow": {
            "type": "object",
            "description": "A row of the box list (docs/api.md 9.1)",
            "required": ["id", "messages", "flags"],
            "properties": {
                "id": string,
                "name": string,
                "mailbox": string,
                "owner_id": string,
                "messages": {"type": "integer", "minimum": 0},
                "flags": {"type": "array", "items": {}},
                "folders": {
                    "type": "object",
                    "required": ["new", "saved"],
                    "properties": {"new": {"type": "integer", "minimum": 0},
                                   "saved": {"type": "integer", "minimum": 0}},
                },
            },
        },
        "MessageSummary": {
            "type": "object",
            "description": "A message list row: the view's summary (docs/api.md 9.8)",
            "required": ["media_id", "folder", "timestamp"],
            "properties": {
                **message_fields,
                "transcribed": {"anyOf": [{"type": "boolean"}, {"type": "string"}]},
            },
        },
        "AccountMessageRow": {
            "type": "object",
            "description": "`{\"<box id>\": <message summary>}` (docs/api.md 9.7)",
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": component_ref("MessageSummary"),
        },
        "MessageMetadata": {
            "type": "object",
            "description": "A message's metadata (docs/api.md 9.9, 9.13)",
            "required": ["media_id", "folder"],
            "properties": {
                **message_fields,
                "from_user": string,
                "from_realm": string,
                "to_user": string,
                "to_realm": string,
                "transcription": {"type": "object"},
            },
        },
        "NotificationAttempt": {
            "type": "object",
            "description": "One delivery attempt of a message's notification (docs/api.md 9.24)",
            "required": ["channel", "recipient", "result", "code", "text", "attempt",
                         "timestamp"],
            "properties": {
                "channel": {"type": "string", "enum": ["email", "webhook"]},
                "recipient": {"type": "string", "nullable": True,
                              "description": "The email address, or the webhook's id"},
                "result": {"type": "string", "enum": ["success", "failure", "pending"]},
                "code": {"type": "integer", "nullable": True,
                         "description": "SMTP reply or HTTP status; null without an answer"},
                "text": {"type": "string", "nullable": True,
                         "description": "The server's answer, or the error"},
                "attempt": {"type": "integer", "minimum": 1},
                "timestamp": {"type": "integer", "nullable": True,
                              "description": "Gregorian seconds"},
            },
        },
        "BulkResult": {
            "type": "object",
            "description": "Bulk result; empty lists are omitted (docs/api.md 10)",
            "additionalProperties": False,
            "properties": {
                "succeeded": {"type": "array", "minItems": 1, "items": string},
                "failed": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "minProperties": 1, "maxProperties": 1,
                    "additionalProperties": string}},
            },
        },
        "AuthReply": {
            "type": "object",
            "description": "Who the new token acts for (docs/api.md 6.3, 6.4)",
            "required": ["account_id"],
            "properties": {
                "account_id": string,
                "owner_id": string,
                "account_name": string,
                "language": string,
                "is_reseller": {"type": "boolean"},
                "reseller_id": string,
                "apps": {"type": "array", "items": {}},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "additionalProperties": False,
            "properties": {"status": {"type": "string", "enum": ["ok"]}},
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "failed", "checks"],
            "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "enum": ["ok", "error"]},
                "failed": {"type": "array", "items": {
                    "type": "string", "enum": ["couchdb", "design_documents", "draining"]}},
                "checks": {
                    "type": "object",
                    "required": ["couchdb", "design_documents", "draining"],
                    "additionalProperties": False,
                    "properties": {
                        "couchdb": {"type": "string",
                                    "enum": ["up", "unreachable", "unauthorized", "error"]},
                        "design_documents": {"type": "string",
                                             "enum": ["installed", "missing", "unknown"]},
                        "draining": {"type": "boolean"},
                    },
                },
            },
        },
        "MessageIds": {
            "type": "array", "items": string,
            "description": "Message ids; legacy ids are resolved (docs/decisions.md P-25)",
        },
        "BulkChange": {
            "type": "object",
            "required": ["messages"],
            "properties": {
                "messages": {"allOf": [component_ref("MessageIds")], "minItems": 1},
                "folder": {"type": "string", "enum": ["new", "saved", "deleted"]},
                "source_id": component_ref("SourceId"),
            },
        },
        "BulkDelete": {
            "type": "object",
            "properties": {
                "messages": component_ref("MessageIds"),
                "folder": {"type": "string", "enum": ["new", "saved", "deleted"]},
            },
        },
        "MessageChange": {
            "type": "object",
            "properties": {
                "folder": {"type": "string", "enum": ["new", "saved", "deleted"]},
                "source_id": component_ref("SourceId"),
            },
        },
        "SourceId": {
            "description":
                "A box id to move to, or a list of box ids to copy to (docs/api.md 9.10)",
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
            ],
        },
        "ZipRequest": {
            "type": "object",
            "required": ["messages"],
            "properties": {"messages": {"allOf": [component_ref("MessageIds")],
                                        "minItems": 1},
                           "format": {"type": "string", "enum": ["wav", "mp3", "ogg", "m4a"],
                                      "description": "Every entry in this format "
                                                     "(docs/audio.md)"}},
        },
        "ApiAuthRequest": {
            "type": "object",
            "required": ["api_key"],
            "properties": {"api_key": string},
        },
        "UserAuthRequest": {
            "type": "object",
            "required": ["credentials"],
            "properties": {
                "credentials": {
                    "type": "string", "pattern": "^([0-9a-fA-F]{32}|[0-9a-fA-F]{40})$",
                    "description": "md5 or sha1 of `<username>:<password>`"},
                "method": {"type": "string", "enum": ["md5", "sha"], "default": "md5"},
                "account_name": string,
                "account_realm": string,
                "realm": string,
                "phone_number": string,
            },
        },
    }


def _webhook_schemas(request: JsonObject) -> JsonObject:
    """Answers of the webhooks API (docs/webhooks.md), around the platform's request schema."""
    string = {"type": "string"}
    patch = {k: v for k, v in request.items() if k != "required"}
    patch["description"] = "Any subset of the webhook fields; `null` removes a field"
    patch["properties"] = {**patch.get("properties", {}), "rotate_signing_secret": {
        "type": "boolean", "description": "true replaces the signing secret"}}
    return {
        "WebhookPatch": patch,
        "Webhook": {
            "description": "A webhook's public fields plus its id",
            "allOf": [component_ref("webhooks")],
            "required": ["id"],
            "properties": {
                "id": string,
                "signing_secret": {
                    "type": "string", "pattern": "^whsec_[A-Za-z0-9+/]+={0,2}$",
                    "description": "To the hook's own account only"},
                "disable_reason": {"type": "string",
                                   "description": "Why the hook was disabled, when it was"},
                "_read_only": {"type": "object",
                               "properties": {"deleted": {"type": "boolean"}}},
            },
        },
        "WebhookListRow": {
            "type": "object",
            "description": "A row of the webhook list: the platform's summary",
            "required": ["id", "enabled"],
            "properties": {"id": string, "hook": string, "name": string, "uri": string,
                           "group": {}, "enabled": {"type": "boolean"},
                           "disable_reason": string},
        },
        "AvailableHook": {
            "type": "object",
            "description": "A hook a webhook may subscribe to, and its modifiers",
            "required": ["id", "name", "description", "modifiers"],
            "properties": {"id": string, "name": string, "description": string,
                           "modifiers": {"type": "object"}},
        },
        "WebhookAttempt": {
            "type": "object",
            "description": "One delivery attempt: the stored attempt's public fields",
            "required": ["hook_id", "result", "timestamp"],
            "properties": {
                "hook_id": string,
                "result": {"type": "string", "enum": ["success", "failure"]},
                "reason": string,
                "response_code": string,
                "response_body": string,
                "client_error": string,
                "retries_left": {"type": "integer"},
                "timestamp": {"type": "integer", "description": "Gregorian seconds"},
                "event_id": string,
                "attempt": {"type": "integer", "minimum": 1},
            },
        },
        "WebhooksReEnable": {
            "type": "object",
            "required": ["re-enable"],
            "properties": {"re-enable": {"type": "boolean", "enum": [True]}},
        },
    }


# -- responses ------------------------------------------------------------------------------------

_ERROR_STATUSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Validation error: body, envelope or fields (docs/api.md 5.3)"),
    401: ("Unauthorized", "Missing, invalid or expired token, or failed login (6.2)"),
    403: ("Forbidden", "The token may not act on this account (6.5)"),
    404: ("NotFound", "Unknown or malformed account, box or message; unknown route; bad page "
                      "size (`faulty_request`)"),
    405: ("MethodNotAllowed", "A tunnelled `verb` the path does not allow (3.4)"),
    406: ("NotAcceptable", "A download format that cannot be produced, or audio that cannot "
                           "be decoded (docs/audio.md)"),
    409: ("Conflict", "An existing id, or an update that kept conflicting"),
    413: ("PayloadTooLarge", "Body over the size limit, or bad base64 (3.2)"),
    415: ("UnsupportedMediaType",
          "Content-Type not accepted by this endpoint (docs/decisions.md P-17)"),
    416: ("RangeNotSatisfiable",
          "Range starts at or past the end of the audio (docs/decisions.md P-17)"),
    429: ("TooManyRequests", "Too many failed logins; retry after `Retry-After` seconds"),
    500: ("ServerError", "Audio kept in an external store (docs/decisions.md P-29)"),
    503: ("ServiceUnavailable", "CouchDB unreachable or failing (docs/decisions.md P-16)"),
}

_REQUEST_ID_HEADER = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}


def _error_responses() -> JsonObject:
    responses: JsonObject = {}
    for status, (name, description) in _ERROR_STATUSES.items():
        headers: JsonObject = dict(_REQUEST_ID_HEADER)
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            headers["Allow"] = {"schema": {"type": "string"}, "description": "Allowed methods"}
        if status == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE:
            headers["Content-Range"] = {"schema": {"type": "string", "pattern": r"^bytes \*/\d+$"}}
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            headers["Retry-After"] = {"schema": {"type": "integer", "minimum": 1}}
        schema = {"allOf": [{"$ref": _ERROR_REF},
                            {"properties": {"error": {"type": "string", "enum": [str(status)]}}}]}
        responses[name] = {"description": description, "headers": headers,
                           "content": {_JSON: {"schema": schema}}}
    return responses


def _success(description: str, data: JsonObject | None, headers: Iterable[str] = ()) -> JsonObject:
    schema: JsonObject = {"$ref": _SUCCESS_REF}
    if data is not None:
        schema = {"allOf": [schema, {"required": ["data"], "properties": {"data": data}}]}
    all_headers: JsonObject = dict(_REQUEST_ID_HEADER)
    for name in headers:
        all_headers[name] = {"$ref": f"#/components/headers/{name}"}
    return {"description": description, "headers": all_headers,
            "content": {_JSON: {"schema": schema}}}


def _list_of(name: str) -> JsonObject:
    return {"type": "array", "items": component_ref(name)}


def _headers_components() -> JsonObject:
    return {
        "X-Request-ID": {"description": "The request id (docs/storage.md 1.6)",
                         "schema": {"type": "string"}},
        "ETag": {"description": "Quoted `_rev`, or the quoted list revision",
                 "schema": {"type": "string"}},
        "Location": {"description": "Absolute path of the created resource, no host",
                     "schema": {"type": "string"}},
        "Warning": {"description": "`214 Transformation applied: …` when "
                                   "notify_email_addresses is a non-empty list "
                                   "(docs/decisions.md P-28)",
                    "schema": {"type": "string"}},
        "Content-Disposition": {"description": "`attachment; filename=\"…\"` "
                                               "(docs/decisions.md D-10, P-14)",
                                "schema": {"type": "string"}},
        "Content-Range": {"description": "`bytes first-last/length` when a Range was sent",
                          "schema": {"type": "string"}},
        "Accept-Ranges": {"description": "`none` on an answer transcoded as it streams "
                                         "(docs/audio.md)",
                          "schema": {"type": "string", "enum": ["bytes", "none"]}},
    }


# -- parameters ---------------------------------------------------------------------------------

def _query(name: str, schema: JsonObject, description: str) -> JsonObject:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_PATH_PARAMETERS: dict[str, JsonObject] = {
    "account_id": {"name": "account_id", "in": "path", "required": True,
                   "description": "32 lowercase hex; malformed or unknown ids answer 404",
                   "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}},
    "box_id": {"name": "box_id", "in": "path", "required": True,
               "description": "A voicemail box id (`messages` here is the account-wide list)",
               "schema": {"type": "string", "minLength": 1, "not": {"enum": ["messages"]}}},
    "webhook_id": {"name": "webhook_id", "in": "path", "required": True,
                   "description": "A webhook id (`attempts` here is the account's delivery log)",
                   "schema": {"type": "string", "minLength": 1, "not": {"enum": ["attempts"]}}},
    "message_id": {"name": "message_id", "in": "path", "required": True,
                   "description": "`YYYYMM-<hex>`, or a legacy media id "
                                  "(docs/decisions.md P-25); `raw` here is the ZIP endpoint",
                   "schema": {"type": "string", "minLength": 1, "not": {"enum": ["raw"]}}},
}

_BOOLEAN = {"type": "boolean"}
_GREG = {"type": "integer", "minimum": 1, "description": "Gregorian seconds"}
_FOLDER = {"type": "string", "enum": ["new", "saved", "deleted"]}


def _filter_parameters() -> list[JsonObject]:
    text = {"type": "string"}
    return [
        _query("has_key", text, "Keep rows whose document has this (dotted) key (8.5)"),
        _query("key_missing", text, "Keep rows whose document lacks this key"),
        _query("has_value", text, "Keep rows whose value at this key is not empty"),
        _query("value_missing", text, "Keep rows whose value at this key is empty"),
        _query("missing_value", text, "Alias of value_missing (docs/decisions.md P-8)"),
        _query("modified_from", _GREG, "Keep rows with pvt_modified ≥ this"),
        _query("modified_to", _GREG, "Keep rows with pvt_modified ≤ this"),
    ]


def _list_parameters(messages: bool) -> list[JsonObject]:
    params = [
        _query("paginate", _BOOLEAN, "Anything but true turns paging off (8.1)"),
        _query("page_size", {"type": "integer", "minimum": 1},
               "Rows per page; not an integer or < 1 answers 404 faulty_request"),
        _query("start_key", {"type": "string"}, "A next_start_key from a previous page (8.2)"),
        _query("ascending", _BOOLEAN, "Order (8.3); descending wins a conflict"),
        _query("descending", _BOOLEAN, "Order (8.3)"),
    ]
    if messages:
        params += [
            _query("created_from", _GREG, "Window start on the message time (8.4)"),
            _query("created_to", _GREG, "Window end on the message time (8.4)"),
        ]
    else:
        params += [
            _query("created_from", _GREG, "Keep rows with pvt_created ≥ this (8.5)"),
            _query("created_to", _GREG, "Keep rows with pvt_created ≤ this (8.5)"),
        ]
    return params + _filter_parameters()


# -- request bodies ----------------------------------------------------------------------------

def _envelope(data: JsonObject) -> JsonObject:
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"data": data},
        "description": "The request envelope (docs/api.md 3.1); other top-level keys are envelope "
                       "values such as auth_token or verb",
    }


_BINARY = {"type": "string", "format": "binary"}
_AUDIO_TYPES = ("audio/mpeg", "audio/wav", "audio/ogg", "application/octet-stream")


def _json_body(data: JsonObject, required: bool = True) -> JsonObject:
    return {"required": required, "content": {_JSON: {"schema": _envelope(data)}}}


def _upload_body(data: JsonObject | None) -> JsonObject:
    """Upload endpoints: a raw audio body, base64, or multipart (JSON envelope part + audio)."""
    content: JsonObject = {}
    if data is not None:
        content[_JSON] = {"schema": _envelope(data)}
    multipart_properties: JsonObject = {"file": _BINARY}
    encoding: JsonObject = {"file": {"contentType": ", ".join(_AUDIO_TYPES)}}
    if data is not None:
        multipart_properties = {"envelope": _envelope(data), **multipart_properties}
        encoding["envelope"] = {"contentType": _JSON}
    content["multipart/form-data"] = {
        "schema": {"type": "object", "properties": multipart_properties},
        "encoding": encoding,
    }
    for mime in _AUDIO_TYPES:
        content[mime] = {"schema": _BINARY}
    content["application/base64"] = {"schema": {
        "type": "string", "description": "base64, or a `data:<type>;base64,` URL"}}
    return {"required": data is None, "content": content}


# -- the operation table ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Operation:
    """What the route table cannot tell: words, the payload, parameters, endpoint statuses."""

    summary: str
    section: str
    success: JsonObject  # status code → response object
    body: JsonObject | None = None
    parameters: tuple[JsonObject, ...] = ()
    statuses: tuple[int, ...] = ()  # endpoint-specific error statuses (404, 409, 416…)


def _box_success(status: int, description: str) -> JsonObject:
    headers = ["ETag", "Warning"] + (["Location"] if status == HTTPStatus.CREATED else [])
    return {str(status): _success(description, component_ref("Vmbox"), headers)}


def _message_success(status: int, description: str) -> JsonObject:
    headers = ["Location"] if status == HTTPStatus.CREATED else []
    return {str(status): _success(description, component_ref("MessageMetadata"), headers)}


def _audio_response(description: str) -> JsonObject:
    headers = {**_REQUEST_ID_HEADER,
               **{name: {"$ref": f"#/components/headers/{name}"}
                  for name in ("Content-Disposition", "Content-Range", "Accept-Ranges")}}
    return {"description": description, "headers": headers,
            # The stored Content-Type is served verbatim, whatever the upload declared.
            "content": {mime: {"schema": _BINARY}
                        for mime in ("audio/*", "application/octet-stream", "*/*")}}


def _operations() -> dict[tuple[str, str], Operation]:
    bulk = component_ref("BulkResult")
    auth_reply = {"allOf": [{"$ref": _SUCCESS_REF},
                            {"required": ["auth_token", "data"],
                             "properties": {"data": component_ref("AuthReply")}}]}
    auth_success = {"description": "A new token (top-level auth_token)",
                    "headers": dict(_REQUEST_ID_HEADER),
                    "content": {_JSON: {"schema": auth_reply}}}
    range_header = {"name": "Range", "in": "header", "required": False,
                    "schema": {"type": "string"},
                    "description": "`bytes=S-`, `bytes=S-E`; see the table in docs/api.md 9.16"}
    audio_format = _query(
        "format", {"type": "string", "enum": ["wav", "mp3", "ogg", "m4a"]},
        "The audio in this format, transcoded as it streams when stored otherwise; without it "
        "an `Accept` naming audio types chooses (q-values; the stored type wins ties). "
        "docs/audio.md")
    idempotency_key = {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": "A create retried with the same key for the same box within 24 hours "
                       "returns the first message and stores nothing (docs/integrity.md)"}
    return {
        ("/v2/api_auth", "PUT"): Operation(
            "Log in with an account API key", "6.4", {"201": auth_success},
            _json_body(component_ref("ApiAuthRequest")), statuses=(429,)),
        (USER_AUTH_PATH, "PUT"): Operation(
            "Log in with user credentials", "6.3", {"201": auth_success},
            _json_body(component_ref("UserAuthRequest")), statuses=(429,)),
        (_EVENTS, "GET"): Operation(
            "The account's voicemail events, live (Server-Sent Events)", "docs/events.md 6",
            {"200": {"description": "`text/event-stream`: frames `id:` (event id), `event:` "
                                    "(voicemail_new, voicemail_saved, voicemail_deleted, "
                                    "voicemail_full), `data:` (the notification payload as "
                                    "JSON); comment lines keep it alive",
                     "headers": dict(_REQUEST_ID_HEADER),
                     "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
            parameters=(
                _query("include_subaccounts", _BOOLEAN,
                       "Also the events of descendant accounts the token may see"),
                _query("last_event_id", {"type": "string"},
                       "Resume after this event (like the Last-Event-ID header)"),
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "schema": {"type": "string"},
                 "description": "Resume after this event: the stored events since then come "
                                "first (kept PISTON_VM_EVENTS_KEEP_H hours)"})),
        (_BOXES, "GET"): Operation(
            "List voicemail boxes", "9.1",
            {"200": _success("Boxes in name order", _list_of("VmboxListRow"), ["ETag"])},
            parameters=tuple(_list_parameters(messages=False))),
        (_BOXES, "PUT"): Operation(
            "Create a voicemail box", "9.2", _box_success(201, "The created box"),
            _json_body(component_ref("VmboxCreate")), statuses=(409,)),
        (_BOXES + "/messages", "GET"): Operation(
            "List every message of the account", "9.7",
            {"200": _success("Messages, newest first", _list_of("AccountMessageRow"),
                             ["ETag"])},
            parameters=tuple(_list_parameters(messages=True)), statuses=(409,)),
        (_BOX, "GET"): Operation(
            "Fetch a voicemail box", "9.3", _box_success(200, "The box"), statuses=(404,)),
        (_BOX, "POST"): Operation(
            "Replace a voicemail box", "9.4", _box_success(200, "The saved box"),
            _json_body(component_ref("vmboxes")), statuses=(404, 409)),
        (_BOX, "PATCH"): Operation(
            "Merge into a voicemail box", "9.5", _box_success(200, "The saved box"),
            _json_body(component_ref("VmboxPatch")), statuses=(404, 409)),
        (_BOX, "DELETE"): Operation(
            "Delete a voicemail box and its messages (soft)", "9.6",
            _box_success(200, "The deleted box, with `_read_only.deleted`"), statuses=(404, 409)),
        (_MESSAGES, "GET"): Operation(
            "List a box's messages", "9.8",
            {"200": _success("Messages, newest first", _list_of("MessageSummary"), ["ETag"])},
            parameters=tuple(_list_parameters(messages=True)), statuses=(409,)),
        (_MESSAGES, "PUT"): Operation(
            "Create a message, with or without audio", "9.9",
            _message_success(201, "The new message's metadata"),
            _upload_body(component_ref("vmbox_messages")), statuses=(404, 409),
            parameters=(idempotency_key,)),
        (_MESSAGES, "POST"): Operation(
            "Change, move or copy several messages", "9.10",
            {"200": _success("Bulk result", bulk)}, _json_body(component_ref("BulkChange")),
            parameters=(_query("folder", _FOLDER, "Target folder when data.folder is absent"),
                        *_filter_parameters()),
            statuses=(404, 409)),
        (_MESSAGES, "DELETE"): Operation(
            "Delete several messages (soft)", "9.11",
            {"200": _success("Bulk result", bulk)},
            _json_body(component_ref("BulkDelete"), required=False),
            parameters=(_query("folder", _FOLDER, "Delete the messages of this folder"),
                        *_filter_parameters()),
            statuses=(409,)),
        (_MESSAGES + "/raw", "POST"): Operation(
            "Download several messages' audio as one ZIP", "9.12",
            {"200": {"description": "A streamed ZIP, stored entries",
                     "headers": {**_REQUEST_ID_HEADER, "Content-Disposition": {
                         "$ref": "#/components/headers/Content-Disposition"}},
                     "content": {"application/zip": {"schema": _BINARY}}}},
            _json_body(component_ref("ZipRequest")), parameters=(audio_format,),
            statuses=(404, 406, 409, 500)),
        (_MESSAGE, "GET"): Operation(
            "Fetch a message's metadata", "9.13",
            _message_success(200, "The message metadata"), statuses=(404, 409)),
        (_MESSAGE, "POST"): Operation(
            "Change, move or copy one message", "9.14",
            {"200": _success("Metadata (folder change, move) or bulk result (copy)",
                             {"anyOf": [component_ref("MessageMetadata"), bulk]})},
            _json_body(component_ref("MessageChange"), required=False), statuses=(404, 409)),
        (_MESSAGE, "DELETE"): Operation(
            "Delete a message (soft)", "9.15", _message_success(200, "The deleted metadata"),
            statuses=(404, 409)),
        (_MESSAGE + "/raw", "GET"): Operation(
            "Download a message's audio", "9.16",
            {"200": _audio_response("The whole audio, with its stored Content-Type, or "
                                    "transcoded (chunked, `Accept-Ranges: none`)"),
             "206": _audio_response("Part of the stored audio")},
            parameters=(range_header, audio_format), statuses=(404, 406, 409, 416, 500)),
        (_MESSAGE + "/raw", "PUT"): Operation(
            "Upload or replace a message's audio", "9.17",
            _message_success(201, "The message metadata"), _upload_body(None),
            statuses=(404, 409)),
        (_MESSAGE + "/notifications", "GET"): Operation(
            "A message's notification deliveries (email and webhook), newest first", "9.24",
            {"200": _success("Every attempt", _list_of("NotificationAttempt"))},
            statuses=(404, 409)),
        (HEALTHZ_PATH, "GET"): Operation(
            "Liveness: the process answers", "9.21",
            {"200": {"description": "Always, while the process runs",
                     "content": {_JSON: {"schema": component_ref("Health")}}}}),
        (READYZ_PATH, "GET"): Operation(
            "Readiness for load balancers", "9.22",
            {"200": {"description": "CouchDB answers with our credentials, design documents "
                                    "installed, not draining",
                     "content": {_JSON: {"schema": component_ref("Readiness")}}},
             "503": {"description": "Not ready: `failed` names the checks that failed",
                     "content": {_JSON: {"schema": component_ref("Readiness")}}}}),
        (METRICS_PATH, "GET"): Operation(
            "Prometheus metrics (for the scraper; keep it off public listeners)", "9.23",
            {"200": {"description": "The Prometheus text exposition format 0.0.4",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}}),
        (OPENAPI_PATH, "GET"): Operation(
            "This document", "issue 5",
            {"200": {"description": "The OpenAPI document",
                     "headers": dict(_REQUEST_ID_HEADER),
                     "content": {_JSON: {"schema": {"type": "object",
                                                    "required": ["openapi", "paths"]}}}}}),
        **_webhook_operations(),
    }


_HOOKS = "/v2/accounts/{account_id}/webhooks"
_HOOK = _HOOKS + "/{webhook_id}"
_WEBHOOKS_DOC = "docs/webhooks.md, \"The webhooks API\""


def _hook_success(status: int, description: str) -> JsonObject:
    headers = ["ETag"] + (["Location"] if status == HTTPStatus.CREATED else [])
    return {str(status): _success(description, component_ref("Webhook"), headers)}


def _attempt_parameters() -> list[JsonObject]:
    """The message lists' parameters, the window bounding the attempt's time instead."""
    params = _list_parameters(messages=True)
    for param in params:
        if param["name"] in ("created_from", "created_to"):
            bound = "start" if param["name"] == "created_from" else "end"
            param["description"] = f"Window {bound} on the attempt's time (8.4)"
    return params


def _webhook_operations() -> dict[tuple[str, str], Operation]:
    """The webhooks API (docs/webhooks.md)."""
    attempts = {"200": _success("Attempts, newest first", _list_of("WebhookAttempt"), ["ETag"])}
    return {
        ("/v2/webhooks", "GET"): Operation(
            "List the hooks a webhook may subscribe to", _WEBHOOKS_DOC,
            {"200": _success("The available hooks", _list_of("AvailableHook"), ["ETag"])}),
        (_HOOKS, "GET"): Operation(
            "List the account's webhooks", _WEBHOOKS_DOC,
            {"200": _success("Summaries in id order", _list_of("WebhookListRow"), ["ETag"])},
            parameters=tuple(_list_parameters(messages=False))),
        (_HOOKS, "PUT"): Operation(
            "Create a webhook", _WEBHOOKS_DOC, _hook_success(201, "The new webhook"),
            _json_body(component_ref("webhooks"))),
        (_HOOKS, "PATCH"): Operation(
            "Re-enable the account's auto-disabled webhooks", _WEBHOOKS_DOC,
            {"200": _success("The platform's answer", {"type": "string",
                                                       "enum": ["hooks updated"]})},
            _json_body(component_ref("WebhooksReEnable")), statuses=(409,)),
        (_HOOKS + "/attempts", "GET"): Operation(
            "List the account's delivery attempts", _WEBHOOKS_DOC, attempts,
            parameters=tuple(_attempt_parameters())),
        (_HOOK, "GET"): Operation(
            "Fetch a webhook", _WEBHOOKS_DOC, _hook_success(200, "The webhook"),
            statuses=(404,)),
        (_HOOK, "POST"): Operation(
            "Replace a webhook", _WEBHOOKS_DOC, _hook_success(200, "The saved webhook"),
            _json_body(component_ref("webhooks")), statuses=(404, 409)),
        (_HOOK, "PATCH"): Operation(
            "Merge into a webhook, or rotate its signing secret", _WEBHOOKS_DOC,
            _hook_success(200, "The saved webhook"),
            _json_body(component_ref("WebhookPatch")), statuses=(404, 409)),
        (_HOOK, "DELETE"): Operation(
            "Delete a webhook (soft)", _WEBHOOKS_DOC,
            _hook_success(200, "The deleted webhook, with `_read_only.deleted`"),
            statuses=(404, 409)),
        (_HOOK + "/attempts", "GET"): Operation(
            "List a webhook's delivery attempts", _WEBHOOKS_DOC, attempts,
            parameters=tuple(_attempt_parameters())),
    }


# -- assembling the document --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Route:
    path: str
    methods: tuple[str, ...]
    body: BodyKind
    authenticated: bool
    account_scoped: bool


def _routes(routes: Sequence[Endpoint]) -> list[_Route]:
    documented = [
        _Route(openapi_path(e.path), tuple(e.allowed), e.body, e.authenticated, e.account_scoped)
        for e in routes
    ]
    paths = {route.path for route in documented}
    # The probes and /metrics are added by app.py outside the table; user_auth is specified
    # even before it is routed (docs/api.md 6.3).
    for path in PROBE_PATHS:
        if path not in paths:
            documented.append(_Route(path, ("GET",), BodyKind.JSON, False, False))
    if USER_AUTH_PATH not in paths:
        documented.append(_Route(USER_AUTH_PATH, ("PUT",), BodyKind.JSON, False, False))
    return documented


def _statuses(route: _Route, method: str, operation: Operation) -> list[int]:
    # Every route is behind the body-parsing pipeline, and any method may carry a body (3.1).
    statuses = {400, 413, *operation.statuses}
    if route.path not in (*PROBE_PATHS, OPENAPI_PATH):
        # readyz documents its own 503 body; the others never need CouchDB.
        statuses.add(503)
    if route.account_scoped:
        statuses |= {401, 403, 404}
    elif route.authenticated:
        statuses.add(401)
    if route.path in ("/v2/api_auth", USER_AUTH_PATH):
        statuses.add(401)
    if method in ("PUT", "POST", "PATCH"):
        statuses.add(415)
    if method == "POST":
        statuses.add(405)  # a tunnelled verb the path does not allow (docs/api.md 3.4)
    return sorted(statuses)


def _operation_object(route: _Route, method: str, operation: Operation) -> JsonObject:
    responses: JsonObject = dict(operation.success)
    for status in _statuses(route, method, operation):
        name = _ERROR_STATUSES[status][0]
        responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
    path_names = _PARAM_RE.findall(route.path)
    result: JsonObject = {
        "summary": operation.summary,
        "description": f"docs/api.md {operation.section}." if operation.section[0].isdigit()
        else f"See {operation.section}.",
        "operationId": _operation_id(route.path, method),
        "parameters": [_PATH_PARAMETERS[name] for name in path_names] + list(operation.parameters),
    }
    if not result["parameters"]:
        del result["parameters"]
    if operation.body is not None:
        result["requestBody"] = operation.body
    if not route.authenticated:
        result["security"] = []
    result["responses"] = dict(sorted(responses.items()))
    return result


def _operation_id(path: str, method: str) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", path) if w and w != "v2"]
    return method.lower() + "".join(w[:1].upper() + w[1:] for w in words)


_DESCRIPTION = """\
The voicemail module of the Piston REST API, served by piston_vm (`docs/api.md` in its repository).

* Every JSON answer, errors included, is `Content-Type: application/json` exactly; errors carry the
  HTTP status as the **string** `error` (docs/decisions.md D-19).
* Request bodies are envelopes `{"data": …}`. Besides JSON, every PUT/POST/PATCH accepts
  `application/x-www-form-urlencoded` (JSON first, then `key=value` pairs) and multipart with a
  JSON part; upload endpoints also take raw audio and base64 (docs/api.md 3.2). Box fields given as
  strings are coerced to the schema's integer and boolean types.
* Request values (`auth_token`, `verb`, `paginate`, `page_size`, `start_key`, `folder`, …) are read
  from `data`, then the query string, then the envelope (3.3). `verb` on a POST replaces the
  method (3.4).
* HEAD is accepted wherever GET is. OPTIONS answers the CORS preflight on every path. `/v1/…`
  answers 410 and unknown `/v2` paths 404 `not_found`. A trailing slash is the same path.
* List filters `filter_<path>=v` and `filter_not_<path>=v` (dotted paths) are accepted on every
  list and on the bulk message operations (8.5).
"""


def build_openapi(schemas_dir: Path, routes: Sequence[Endpoint]) -> JsonObject:
    """The whole API as an OpenAPI 3.0.3 document; raises when a route has no documentation."""
    drafts = load_json_schemas(schemas_dir)
    components: JsonObject = {
        name: to_openapi_schema(schema, drafts.keys()) for name, schema in drafts.items()
    }
    if "vmboxes" in components:
        mailbox = components["vmboxes"].get("properties", {}).get("mailbox")
        if isinstance(mailbox, dict):
            # A module rule the schema file does not carry: an integer string (docs/decisions.md
            # D-18).
            mailbox["pattern"] = MAILBOX_PATTERN
        components["VmboxPatch"] = _without_required(components["vmboxes"])
    components.update(_own_schemas())
    if "webhooks" in components:
        components.update(_webhook_schemas(components["webhooks"]))
    operations = _operations()
    paths: JsonObject = {}
    for route in _routes(routes):
        item: JsonObject = {}
        for method in route.methods:
            operation = operations.get((route.path, method))
            if operation is None:
                raise LookupError(f"{method} {route.path} is routed but not documented")
            item[method.lower()] = _operation_object(route, method, operation)
        paths[route.path] = item
    return {
        "openapi": "3.0.3",
        "info": {"title": "piston_vm: Piston voicemail API", "version": __version__,
                 "description": _DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "responses": _error_responses(),
            "headers": _headers_components(),
            "securitySchemes": {
                "AuthToken": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
                "AuthTokenQuery": {"type": "apiKey", "in": "query", "name": "auth_token"},
                "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
        "security": [{"AuthToken": []}, {"AuthTokenQuery": []}, {"Bearer": []}],
    }


def render(document: Mapping[str, Any]) -> str:
    """The kept file's exact text."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# -- serving --------------------------------------------------------------------------------------

_served: dict[Path, bytes] = {}


def _unique_endpoints(table: Mapping[str, Endpoint]) -> list[Endpoint]:
    seen: dict[str, Endpoint] = {}
    for endpoint in table.values():
        seen.setdefault(endpoint.path, endpoint)
    return list(seen.values())


async def openapi_document(request: web.Request) -> web.StreamResponse:
    """`GET /v2/openapi.json`: the kept file, read once; built from the app when it is missing."""
    schemas_dir = request.app[SETTINGS].schemas_dir
    body = _served.get(schemas_dir)
    if body is None:
        kept = schemas_dir / OPENAPI_FILE
        if kept.is_file():
            body = await asyncio.to_thread(kept.read_bytes)
        else:
            table = request.app[ENDPOINTS]
            document = build_openapi(schemas_dir, _unique_endpoints(table))
            body = render(document).encode()
        _served[schemas_dir] = body
    # Exactly application/json, like every JSON answer of the API (docs/decisions.md D-19).
    return web.Response(body=body, headers={"Content-Type": _JSON})
