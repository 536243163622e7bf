"""Account database and MODB names in their three spellings (docs/storage.md 1.2–1.4); pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ACCOUNT_ID_RE = re.compile(r"^[0-9a-f]{32}$")
# A name in any of the three forms, with an optional -YYYYMM MODB suffix.
_ANY_FORM_RE = re.compile(
    r"^(?:account(?:/|%2[fF])([0-9a-f]{2})(?:/|%2[fF])([0-9a-f]{2})(?:/|%2[fF])([0-9a-f]{28})"
    r"|([0-9a-f]{32}))(?:-(\d{4})(\d{2}))?$"
)
MESSAGE_ID_RE = re.compile(r"^(\d{4})(\d{2})-(.+)$")
# Box ids are checked for shape before they reach a CouchDB path: no "_", "/", "%" or dots.
BOX_ID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_\-]{0,127}$")

Form = Literal["raw", "unencoded", "encoded"]


def is_account_id(value: str) -> bool:
    return ACCOUNT_ID_RE.fullmatch(value) is not None


def is_box_id(value: str) -> bool:
    return BOX_ID_RE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class DbName:
    """An account database, or one of its monthly databases when `month` is set."""

    account_id: str
    month: tuple[int, int] | None = None

    @classmethod
    def parse(cls, name: str) -> DbName:
        """Accept any spelling (raw, unencoded, encoded; %2f or %2F; with -YYYYMM)."""
        match = _ANY_FORM_RE.fullmatch(name)
        if match is None:
            raise ValueError(f"not an account database name: {name!r}")
        raw = match.group(4) or (match.group(1) + match.group(2) + match.group(3))
        if match.group(5) is None:
            return cls(raw)
        year, month = int(match.group(5)), int(match.group(6))
        if not 1 <= month <= 12:
            raise ValueError(f"month out of range in {name!r}")
        return cls(raw, (year, month))

    def form(self, form: Form) -> str:
        aid = self.account_id
        if form == "raw":
            base = aid
        else:
            sep = "/" if form == "unencoded" else "%2F"
            base = f"account{sep}{aid[0:2]}{sep}{aid[2:4]}{sep}{aid[4:]}"
        return base if self.month is None else f"{base}-{yyyymm(*self.month)}"

    @property
    def unencoded(self) -> str:
        """The real CouchDB database name, with literal slashes."""
        return self.form("unencoded")

    @property
    def encoded(self) -> str:
        """The spelling stored in pvt_account_db and att_dbname."""
        return self.form("encoded")

    def modb(self, year: int, month: int) -> DbName:
        return DbName(self.account_id, (year, month))

    @property
    def account(self) -> DbName:
        return DbName(self.account_id)


def account_db(account_id: str) -> DbName:
    if not is_account_id(account_id):
        raise ValueError(f"not an account id: {account_id!r}")
    return DbName(account_id)


def yyyymm(year: int, month: int) -> str:
    return f"{year:04d}{month:02d}"


def message_month(message_id: str) -> tuple[int, int] | None:
    """The (year, month) a current-format message id lives in, or None (legacy/invalid id)."""
    match = MESSAGE_ID_RE.fullmatch(message_id)
    if match is None:
        return None
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        return None
    return year, month


def previous_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def months_between(first: tuple[int, int], last: tuple[int, int]) -> list[tuple[int, int]]:
    """Every month from `first` to `last` inclusive, oldest first (empty when first > last)."""
    months: list[tuple[int, int]] = []
    current = first
    while current <= last:
        months.append(current)
        current = next_month(*current)
    return months
