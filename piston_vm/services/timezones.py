"""A box's time zone: box, owner, account chain, system default (docs/storage.md 2.2)."""

from __future__ import annotations

from datetime import datetime, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from piston_vm.core import gregorian
from piston_vm.storage.accounts import Account
from piston_vm.storage.stores import Stores

JsonObject = dict[str, Any]

# Account chains are short; the bound only stops a cyclic pvt_tree from looping.
MAX_ACCOUNT_HOPS = 16


def _usable(value: Any) -> str | None:
    return value if isinstance(value, str) and value and value != "inherit" else None


@lru_cache(maxsize=512)
def zone(name: str) -> tzinfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


async def box_timezone(
    stores: Stores, account: Account, box: JsonObject, default: str
) -> str:
    """The first usable zone name; it may still be unknown to zoneinfo (callers fall back)."""
    if (name := _usable(box.get("timezone"))) is not None:
        return name
    owner_id = box.get("owner_id")
    if isinstance(owner_id, str) and owner_id:
        owner = await stores.couch.get_doc(account.db.unencoded, owner_id)
        if owner is not None and (name := _usable(owner.get("timezone"))) is not None:
            return name
    current: Account | None = account
    for _ in range(MAX_ACCOUNT_HOPS):
        if current is None:
            break
        if (name := _usable(current.doc.get("timezone"))) is not None:
            return name
        parent_id = current.tree[-1] if current.tree else None
        current = await stores.accounts.get(parent_id) if parent_id else None
    return default


def local_time(gregorian_s: int, zone_name: str) -> tuple[datetime, bool]:
    """(wall-clock time, whether the zone was known); unknown zones give UTC."""
    moment = gregorian.to_datetime(gregorian_s)
    tz = zone(zone_name)
    return (moment.astimezone(tz), True) if tz is not None else (moment, False)
