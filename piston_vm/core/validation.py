"""JSON Schema validation in the platform's shape: coercion, defaults, per-field error details.

Schemas are draft-04 files in schemas/, loaded once at startup. Errors are keyed by field path
(docs/api.md 5.3) with one entry per failed rule, so a client can show every problem at once.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError as SchemaError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

JsonObject = dict[str, Any]

# Validators whose failures have no dedicated message in the platform; they keep the name the
# original platform's validator gives them.
_RULE_NAMES = {"oneOf": "not_one_schema_valid", "anyOf": "not_any_schema_valid",
               "allOf": "not_all_schemas_valid", "not": "not_schema_valid",
               "format": "wrong_format"}


def field_path(parts: Iterable[Any]) -> str:
    """`notify.callback.attempts`, `notify_email_addresses.0`; a literal dot becomes %2E."""
    return ".".join(str(p).replace(".", "%2E") for p in parts)


def merge_errors(*groups: JsonObject) -> JsonObject:
    merged: JsonObject = {}
    for group in groups:
        for path, rules in group.items():
            merged.setdefault(path, {}).update(rules)
    return merged


class SchemaValidator:
    """Validates request data against one named schema; never raises for bad input."""

    def __init__(
        self, schemas_dir: Path, max_pin_length: int = 6, transcribe_default: bool = False
    ) -> None:
        schemas: dict[str, JsonObject] = {}
        for path in sorted(schemas_dir.glob("*.json")):
            schema = json.loads(path.read_text())
            if "draft-04" not in str(schema.get("$schema", "")):
                continue  # e.g. openapi.json, which documents the API rather than validates it
            schemas[schema.get("id", path.stem)] = schema
        vmbox = schemas.get("vmboxes")
        if vmbox is not None:
            # The PIN's maximum is a deployment setting, not a schema constant.
            vmbox["properties"]["pin"]["maxLength"] = max_pin_length
            vmbox["properties"]["transcribe"]["default"] = transcribe_default
        self.schemas = schemas
        registry: Registry[Any] = Registry().with_resources(
            (name, Resource.from_contents(s, default_specification=DRAFT4))
            for name, s in schemas.items()
        )
        self._validators = {
            name: Draft4Validator(
                s, registry=registry, format_checker=Draft4Validator.FORMAT_CHECKER
            )
            for name, s in schemas.items()
        }

    def validate(self, schema_name: str, data: JsonObject) -> tuple[JsonObject, JsonObject]:
        """Return (data with coercions and top-level defaults applied, errors by field path)."""
        schema = self.schemas[schema_name]
        cleaned = _coerce(copy.deepcopy(data), schema, self.schemas)
        for key, prop in schema.get("properties", {}).items():
            if key not in cleaned and "default" in prop:
                cleaned[key] = copy.deepcopy(prop["default"])
        errors: JsonObject = {}
        for error in self._validators[schema_name].iter_errors(cleaned):
            for path, rule, detail in _describe(error):
                errors.setdefault(path, {})[rule] = detail
        return cleaned, errors


def _resolve(schema: JsonObject, schemas: dict[str, JsonObject]) -> JsonObject:
    ref = schema.get("$ref")
    return schemas.get(ref, schema) if isinstance(ref, str) else schema


def _coerce(value: Any, schema: JsonObject, schemas: dict[str, JsonObject]) -> Any:
    """The original's non-strict typing: "10000" → 10000 and "true" → True; never the reverse."""
    schema = _resolve(schema, schemas)
    kind = schema.get("type")
    if isinstance(value, str) and kind in ("integer", "number", "boolean"):
        return _from_string(value, kind)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {
            k: _coerce(v, properties[k], schemas) if k in properties else v
            for k, v in value.items()
        }
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_coerce(v, schema["items"], schemas) for v in value]
    return value


def _from_string(value: str, kind: str) -> Any:
    text = value.strip()
    if kind == "boolean":
        return {"true": True, "false": False}.get(text, value)
    try:
        return int(text)
    except ValueError:
        if kind == "number":
            try:
                return float(text)
            except ValueError:
                return value
        return value


def _types(error: SchemaError) -> str:
    expected = error.validator_value
    return ", ".join(expected) if isinstance(expected, list) else str(expected)


def _describe(error: SchemaError) -> list[tuple[str, str, JsonObject]]:
    path = list(error.absolute_path)
    value = error.instance
    rule = str(error.validator)
    target: Any = error.validator_value
    if rule == "required":
        present = value if isinstance(value, dict) else {}
        return [
            (
                field_path([*path, name]),
                "required",
                {"message": "Field is required but missing", "value": name},
            )
            for name in target
            if name not in present
        ]
    where = field_path(path)
    detail: JsonObject
    if rule == "type":
        types = _types(error)
        detail = {"message": f"Value did not match type(s): {types}", "target": types,
                  "value": value}
    elif rule == "minLength":
        detail = {"message": f"String must be at least {target} characters", "target": target,
                  "cause": value, "value": value}
    elif rule == "maxLength":
        detail = {"message": f"String must not be more than {target} characters",
                  "target": target, "cause": value, "value": value}
    elif rule == "enum":
        detail = {"message": "Value not found in enumerated list of values", "target": target,
                  "value": value}
    elif rule == "minimum":
        detail = {"message": f"Value must be at least {target}", "target": target, "value": value}
    elif rule == "maximum":
        detail = {"message": f"Value must be at most {target}", "target": target, "value": value}
    elif rule == "minItems":
        detail = {"message": f"The list must have at least {target} items", "target": target,
                  "value": value}
    elif rule == "maxItems":
        detail = {"message": f"The list is more than {target} items", "target": target,
                  "value": value}
    elif rule == "uniqueItems":
        detail = {"message": "List of items is not unique", "value": value}
    elif rule == "pattern":
        detail = {"message": f"Failed to match pattern '{target}'", "target": target,
                  "value": value}
    elif rule == "format":
        detail = {"message": "Field is not in the correct format", "value": value,
                  "format": target}
    else:
        detail = {"message": "failed to validate", "value": value}
    return [(where, _RULE_NAMES.get(rule, rule), detail)]
