"""Box counts of one MODB, reused while the MODB has not changed (docs/storage.md 7.3).

Counting reads only stored reductions, but a box list still asks every month of the window,
and the month the window starts in needs one range query per box. Most months of a window
are quiet, so their counts are kept here with the MODB's `update_seq`: a read asks CouchDB
for the current `update_seq` of every month in one `_dbs_info` request and reuses the counts
of each month whose sequence is unchanged. The sequence is read before counting, so counts
are never older than the sequence they are filed under: a later write changes the sequence
and the month is counted again.

The month the window starts in is counted from a moving cutoff (now − retention). Its counts
stay exact while no message lies between the cutoff they were made for and today's, and no
message lies between the end they were made for and today's end; `stable_start` and
`stable_end` are the first message times past each bound, read when the counts were made.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

# Per box: messages in new, saved and deleted.
FolderSums = tuple[int, int, int]
NO_MESSAGES: FolderSums = (0, 0, 0)


@dataclass(slots=True)
class MonthCounts:
    """The counts of one MODB at `seq`: every box's (`complete`), or those asked so far."""

    seq: str
    # (start, end) the messages' times were bounded by; None: the whole month was counted.
    bounds: tuple[int, int] | None
    boxes: dict[str, FolderSums]
    complete: bool
    stable_start: float = math.inf
    stable_end: float = math.inf
    made_at: float = field(default_factory=time.monotonic)

    def holds_for(self, bounds: tuple[int, int] | None) -> bool:
        """Whether these counts are the counts for `bounds` at the same `seq`."""
        if self.bounds is None or bounds is None:
            return self.bounds is bounds
        (made_start, made_end), (start, end) = self.bounds, bounds
        return made_start <= start <= self.stable_start and made_end <= end < self.stable_end

    def has(self, box_ids: list[str]) -> bool:
        return self.complete or all(box_id in self.boxes for box_id in box_ids)

    def of(self, box_id: str) -> FolderSums:
        return self.boxes.get(box_id, NO_MESSAGES)


class CountCache:
    """MonthCounts by MODB name, least recently used dropped first; per process.

    `max_age_s` bounds how long an entry is trusted even at an unchanged sequence: on a
    CouchDB cluster the sequence and the counts may come from different copies of a shard, so
    a copy that lagged when the counts were read could otherwise hide a message until the
    next write to that month. On a single node the sequence alone decides.
    """

    def __init__(self, max_age_s: float, max_modbs: int) -> None:
        self.max_age_s = max_age_s
        self.max_modbs = max_modbs
        self._months: OrderedDict[str, MonthCounts] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0 and self.max_modbs > 0

    def get(self, db: str, seq: str, bounds: tuple[int, int] | None) -> MonthCounts | None:
        entry = self._months.get(db)
        if entry is None:
            return None
        if entry.seq != seq or time.monotonic() - entry.made_at > self.max_age_s:
            del self._months[db]
            return None
        if not entry.holds_for(bounds):
            return None
        self._months.move_to_end(db)
        return entry

    def put(self, db: str, entry: MonthCounts) -> None:
        if not self.enabled:
            return
        self._months[db] = entry
        self._months.move_to_end(db)
        while len(self._months) > self.max_modbs:
            self._months.popitem(last=False)

    def forget(self, db: str) -> None:
        self._months.pop(db, None)
