"""Listing machinery for every list endpoint: paging, cursors, order, filters (docs/api.md 8)."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from piston_vm.core import errors
from piston_vm.core.call import Call

JsonObject = dict[str, Any]

# Rows fetched per CouchDB request while a filtered page is being filled.
SCAN_BATCH_ROWS = 200
_MISSING = object()

# Bounds on what a client's `start_key` may send to CouchDB as a view key (docs/api.md 8.2):
# our own cursors are a few hundred characters and two levels deep.
MAX_START_KEY_CHARS = 4096
MAX_KEY_DEPTH = 16


class CursorRejected(ValueError):
    """A start key CouchDB could not take as a view key (non-finite number, absurd nesting)."""


@dataclass(frozen=True, slots=True)
class Paging:
    paginate: bool
    page_size: int
    start_key: str | None
    cursor: Cursor | None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: the view key, the document id, and (messages) the MODB month."""

    key: Any
    doc_id: str | None = None
    month: str | None = None

    def encode(self) -> str:
        payload: JsonObject = {"k": self.key}
        if self.doc_id is not None:
            payload["d"] = self.doc_id
        if self.month is not None:
            payload["m"] = self.month
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Our own cursor, or (docs/decisions.md P-6) any other value used as a raw view
        start key. Raises CursorRejected for a key no CouchDB could parse."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            payload = json.loads(raw)
        except (binascii.Error, ValueError):
            payload = None
        except RecursionError:
            raise CursorRejected("nested too deeply") from None
        if isinstance(payload, dict) and "k" in payload:
            doc_id = payload.get("d")
            month = payload.get("m")
            return cls(
                _view_key(payload["k"]),
                doc_id if isinstance(doc_id, str) else None,
                month if isinstance(month, str) else None,
            )
        try:
            key = json.loads(text)
        except RecursionError:
            raise CursorRejected("nested too deeply") from None
        except ValueError:
            return cls(text)
        return cls(_view_key(key))


def _view_key(value: Any, depth: int = 0) -> Any:
    """`value` if CouchDB can take it as a view key: JSON has no NaN or Infinity (Python's
    json reads them, and "1e999" as infinity), and CouchDB's parser limits nesting."""
    if depth >= MAX_KEY_DEPTH:
        raise CursorRejected("nested too deeply")
    if isinstance(value, float) and not math.isfinite(value):
        raise CursorRejected("not a finite number")
    if isinstance(value, list):
        for item in value:
            _view_key(item, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            _view_key(item, depth + 1)
    return value


MAX_PAGE_SIZE = 10_000


def paging(call: Call, default_page_size: int) -> Paging:
    paginate_value = call.value("paginate")
    paginate = paginate_value is None or paginate_value is True or paginate_value == "true"
    if not paginate:
        return Paging(False, 0, None, None)
    page_size = default_page_size
    raw_size = call.value("page_size")
    if raw_size is not None:
        try:
            page_size = int(raw_size)
        except (TypeError, ValueError):
            raise errors.faulty_request("invalid page size") from None
        if isinstance(raw_size, bool):
            raise errors.faulty_request("invalid page size")
        if page_size < 1:
            raise errors.faulty_request("page size must be at least 1")
        # CouchDB refuses a `limit` past 64 bits, and a page past this only costs memory: the
        # client hears which bound it crossed rather than an outage (docs/api.md 8.2).
        if page_size > MAX_PAGE_SIZE:
            raise errors.validation_error("page_size", "maximum", {
                "message": f"Value must be at most {MAX_PAGE_SIZE}", "target": MAX_PAGE_SIZE,
                "value": str(raw_size)})
    raw_start = call.value("start_key")
    start_key = None if raw_start is None else str(raw_start)
    return Paging(True, page_size, start_key, start_cursor(start_key))


def start_cursor(start_key: str | None) -> Cursor | None:
    """The cursor a client's `start_key` names; a 400 naming the field for one CouchDB could
    not take (docs/api.md 8.2)."""
    if not start_key:
        return None
    if len(start_key) > MAX_START_KEY_CHARS:
        raise errors.validation_error("start_key", "maxLength", {
            "message": f"String must not be more than {MAX_START_KEY_CHARS} characters",
            "target": MAX_START_KEY_CHARS})
    try:
        return Cursor.decode(start_key)
    except CursorRejected as exc:
        raise errors.validation_error("start_key", "invalid", {
            "message": f"start_key is not a usable key: {exc}", "value": start_key}) from None


def descending(query: Mapping[str, str], default: bool) -> bool:
    """`descending=true`/`ascending=false` → descending; the reverse → ascending (docs/decisions.md
    P-7)."""
    wants_desc = query.get("descending") == "true" or query.get("ascending") == "false"
    wants_asc = query.get("ascending") == "true" or query.get("descending") == "false"
    if wants_desc:
        return True
    if wants_asc:
        return False
    return default


# -- filters -------------------------------------------------------------------------------

Filter = Callable[[JsonObject], bool]


def _lookup(doc: Any, path: str) -> Any:
    current = doc
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _as_text(value: Any) -> str | None:
    if value is _MISSING or value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return None  # objects and arrays never match


def _equals(doc: JsonObject, path: str, wanted: str) -> bool:
    text = _as_text(_lookup(doc, path))
    if text is None:
        return False
    if text == wanted:
        return True
    try:
        decoded = json.loads(wanted)
    except ValueError:
        return False
    if isinstance(decoded, list):
        return any(_as_text(item) == text for item in decoded)
    return _as_text(decoded) == text if not isinstance(decoded, dict) else False


def _is_empty(value: Any) -> bool:
    return value is _MISSING or value is None or value in ("", [], {})


def _number(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _field_filter(path: str, wanted: str, negate: bool) -> Filter:
    return lambda doc: _equals(doc, path, wanted) != negate


def _key_filter(path: str, rule: str) -> Filter:
    checks: dict[str, Callable[[Any], bool]] = {
        "has_key": lambda value: value is not _MISSING,
        "key_missing": lambda value: value is _MISSING,
        "has_value": lambda value: not _is_empty(value),
        "value_missing": _is_empty,
        "missing_value": _is_empty,
    }
    check = checks[rule]
    return lambda doc: check(_lookup(doc, path))


def _bound_filter(field: str, bound: int, lower: bool) -> Filter:
    return lambda doc: (_ge if lower else _le)(doc.get(field), bound)


_KEY_RULES = ("has_key", "key_missing", "has_value", "value_missing", "missing_value")


def build_filters(
    query: Mapping[str, str], prefix: str = "", created_filters: bool = True
) -> list[Filter]:
    """Filters from the query string; `prefix` ("metadata.") rewrites paths for message lists."""
    filters: list[Filter] = []
    for name, value in query.items():
        if name.startswith("filter_not_"):
            filters.append(_field_filter(prefix + name[len("filter_not_") :], value, True))
        elif name.startswith("filter_"):
            filters.append(_field_filter(prefix + name[len("filter_") :], value, False))
        elif name in _KEY_RULES:
            filters.append(_key_filter(prefix + value, name))
        elif name in ("modified_from", "modified_to") or (
            created_filters and name in ("created_from", "created_to")
        ):
            bound = _number(value)
            if bound is not None:
                field = "pvt_modified" if name.startswith("modified") else "pvt_created"
                filters.append(_bound_filter(field, bound, name.endswith("_from")))
    return filters


def _ge(value: Any, bound: int) -> bool:
    return isinstance(value, int | float) and value >= bound


def _le(value: Any, bound: int) -> bool:
    return isinstance(value, int | float) and value <= bound


def passes(doc: JsonObject, filters: list[Filter]) -> bool:
    return all(check(doc) for check in filters)


# -- scanning ------------------------------------------------------------------------------

Row = JsonObject
FetchRows = Callable[[Cursor | None, int], Awaitable[list[Row]]]


def _before(row: Row, cursor: Cursor, desc: bool, inclusive: bool) -> bool:
    """True for rows a page starting at `cursor` must not show again.

    CouchDB honours `startkey_docid`, but the bundled server ignores it and starts at the first
    row with an equal key; dropping those rows here gives the same pages on both engines.
    """
    if cursor.doc_id is None or row.get("key") != cursor.key:
        return False
    row_id = str(row.get("id"))
    if row_id == cursor.doc_id:
        return inclusive
    return row_id > cursor.doc_id if desc else row_id < cursor.doc_id


async def fill_page(
    fetch: FetchRows,
    cursor: Cursor | None,
    wanted: int | None,
    accept: Callable[[Row], bool] | None,
    desc: bool,
) -> list[Row]:
    """Collect up to `wanted` accepted rows (all when None), fetching in batches from `cursor`.

    `fetch(cursor, limit)` returns raw rows in view order from the cursor's key on (limit 0 = no
    limit). A batch that filters short does not end the scan: it continues after the last row.
    """
    collected: list[Row] = []
    inclusive = False
    widen = 1
    while True:
        need = None if wanted is None else wanted - len(collected)
        if need is not None and need <= 0:
            return collected
        limit = 0 if need is None else max(need, SCAN_BATCH_ROWS if accept else need)
        if cursor is not None and cursor.doc_id is not None and limit:
            limit = (limit + 1) * widen  # room for the cursor row itself
        rows = await fetch(cursor, limit)
        fresh = [r for r in rows if cursor is None or not _before(r, cursor, desc, inclusive)]
        for row in fresh:
            if accept is None or accept(row):
                collected.append(row)
                if wanted is not None and len(collected) >= wanted:
                    return collected
        if limit == 0 or len(rows) < limit:
            return collected
        if not fresh:
            # Only rows before the cursor came back (an engine without startkey_docid and many
            # equal keys): ask for a wider batch from the same place instead of looping.
            widen *= 2
            continue
        widen = 1
        last = rows[-1]
        cursor = Cursor(last["key"], str(last.get("id")))
        inclusive = True
