"""Pure statistics of the benchmark: percentiles, per-round figures, medians across rounds."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

JsonObject = dict[str, Any]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sample."""
    if not values:
        raise ValueError("percentile of an empty sample")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class Round:
    """One bounded burst of requests: every latency, and the wall time of the whole burst."""

    latencies_s: tuple[float, ...]
    wall_s: float

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_s, 50) * 1000.0

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_s, 99) * 1000.0

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.wall_s if self.wall_s > 0 else 0.0


def summarize(rounds: Sequence[Round]) -> JsonObject:
    """Medians across rounds (each round's own p50/p99/rate), with the spread of the p50s."""
    p50s = [r.p50_ms for r in rounds]
    return {
        "p50_ms": statistics.median(p50s),
        "p99_ms": statistics.median(r.p99_ms for r in rounds),
        "rps": statistics.median(r.rps for r in rounds),
        "p50_ms_rounds": [round(v, 3) for v in p50s],
        "p50_spread_ms": [min(p50s), max(p50s)],
        "requests": sum(len(r.latencies_s) for r in rounds),
        "rounds": len(rounds),
    }


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Round-by-round ratios of two series measured side by side."""
    return [n / d for n, d in zip(numerators, denominators, strict=True) if d > 0]


def ratio_summary(service: JsonObject, couch: JsonObject) -> JsonObject:
    """service/CouchDB p50: ratio of the medians, plus the spread of the per-round ratios."""
    per_round = paired_ratios(service["p50_ms_rounds"], couch["p50_ms_rounds"])
    return {
        "ratio_p50": service["p50_ms"] / couch["p50_ms"],
        "ratio_p50_spread": [min(per_round), max(per_round)] if per_round else None,
    }


def rate_summary(rates: Sequence[float]) -> JsonObject:
    return {
        "median": statistics.median(rates),
        "spread": [min(rates), max(rates)],
        "rounds": [round(r, 3) for r in rates],
    }
