"""The query of one page of a view: where it starts (a cursor or the range's first key), where
it ends, its order and size (docs/api.md 8)."""

from __future__ import annotations

from typing import Any

from piston_vm.core.listing import Cursor

_NO_KEY = object()


def page_params(
    cursor: Cursor | None,
    limit: int,
    descending: bool,
    include_docs: bool,
    first_key: Any = _NO_KEY,
    last_key: Any = _NO_KEY,
) -> dict[str, Any]:
    """View parameters from `cursor` (else `first_key`, else the view's start) to `last_key`
    (else the view's end), at most `limit` rows (0: all)."""
    params: dict[str, Any] = {"descending": descending, "include_docs": include_docs}
    if cursor is not None:
        params["startkey"] = cursor.key
        if cursor.doc_id is not None:
            params["startkey_docid"] = cursor.doc_id
    elif first_key is not _NO_KEY:
        params["startkey"] = first_key
    if last_key is not _NO_KEY:
        params["endkey"] = last_key
    if limit:
        params["limit"] = limit
    return params
