"""The benchmark's outputs: targets checked, a Markdown table, and the scaling plot."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from bench.audio import TRANSCODE_MEMORY_TARGET_MIB

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

MIB = 1024 * 1024
LABELS = {
    "box_fetch": ("box fetch", "doc GET"),
    "box_list": ("box list (50, with counts)", "crossbar_listing view (no counts)"),
    "message_fetch": ("message metadata fetch", "doc GET"),
    "message_list": ("message list, first page (50)", "listing_by_mailbox view page"),
    "raw_audio": ("raw audio GET (1 MB)", "attachment GET"),
}
# Issue 6: service/CouchDB p50 ratio; the box list may spend as much again on its counts.
OVERHEAD_TARGETS = {"box_fetch": 1.5, "box_list": 2.0, "message_fetch": 1.5,
                    "message_list": 1.5, "raw_audio": 1.5}
SCALING_TARGET = 1.3
MEMORY_TARGET_MIB = 20.0
WRITE_TARGET = 0.8
STARTUP_TARGET_S = 3.0
# The access log and the metrics may cost a single read at most this much (on/off p50).
OBSERVABILITY_TARGET = 1.05
STARTUP_NAME = "startup to first 200 /readyz (s)"
AUDIO_MEMORY_NAME = "audio transcode of a large WAV (peak RSS growth, MiB)"
OBSERVABILITY_NAME = "access log + metrics on/off (box fetch p50, c=1)"


def targets(result: JsonObject) -> list[JsonObject]:
    """Every target of issue 6 with its measured value and whether it is met."""
    checks: list[JsonObject] = []

    def add(name: str, value: float, bound: float, at_most: bool, unit: str = "") -> None:
        met = value <= bound if at_most else value >= bound
        op = "<=" if at_most else ">="
        checks.append({"name": name, "value": value, "target": f"{op} {bound:g}{unit}",
                       "met": met})

    if "audio" in result:
        add(AUDIO_MEMORY_NAME, result["audio"]["memory"]["growth_mib"],
            TRANSCODE_MEMORY_TARGET_MIB, at_most=True, unit=" MiB")
    if "overhead" not in result:  # `--only audio`
        return checks

    for row in result["overhead"]:
        add(f"overhead {row['operation']} c={row['concurrency']} (service/CouchDB p50)",
            row["ratio_p50"], OVERHEAD_TARGETS[row["operation"]], at_most=True)
    scaling = result["scaling"]
    for key, label in (("message_list", "message list"), ("box_list", "box list with counts")):
        add(f"scaling {label} ({scaling['largest']:,} vs {scaling['smallest']:,} messages)",
            scaling["growth"][key]["service"], SCALING_TARGET, at_most=True)
    for key, row in result["memory"]["operations"].items():
        add(f"memory {key} (peak RSS growth, MiB)", row["growth_mib"], MEMORY_TARGET_MIB,
            at_most=True, unit=" MiB")
    add("write throughput (service/CouchDB msgs/s)", result["write"]["ratio"], WRITE_TARGET,
        at_most=False)
    add(OBSERVABILITY_NAME, result["observability"]["ratio_p50"], OBSERVABILITY_TARGET,
        at_most=True)
    add(STARTUP_NAME, result["startup"]["median_s"], STARTUP_TARGET_S, at_most=True, unit=" s")
    return checks


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _mark(met: bool) -> str:
    return "met" if met else "**missed**"


def markdown(result: JsonObject) -> str:
    meta = result["meta"]
    lines = [
        f"## piston_vm benchmark, {meta['finished_at']} ({meta['mode']})",
        "",
        f"CouchDB: {meta['couchdb']['description']}. Machine: {meta['cpus']} CPUs, "
        f"Python {meta['python']}, commit {meta['commit']}, load average "
        f"{meta['load_avg_1m']['start']:.1f} → {meta['load_avg_1m']['end']:.1f}. "
        f"Total {meta['duration_s']:.0f} s. "
        "Figures are medians of rounds after a warm-up; spreads are min–max across rounds.",
        "",
    ]
    met = {c["name"]: c["met"] for c in result["targets"]}
    if "overhead" not in result:  # `--only audio`
        return "\n".join(lines + _audio(result["audio"], met[AUDIO_MEMORY_NAME])) + "\n"
    lines += [
        f"### 1. Overhead ({result['overhead_dataset']['messages']:,} messages, "
        f"{result['overhead_dataset']['boxes']} boxes; latency p50 / p99 ms)",
        "",
        "| operation | c | service p50 / p99 | service req/s | CouchDB request | "
        "CouchDB p50 / p99 | CouchDB req/s | ratio p50 (round spread) | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["overhead"]:
        svc, couch = row["service"], row["couchdb"]
        label, couch_label = LABELS[row["operation"]]
        spread = row["ratio_p50_spread"] or [row["ratio_p50"]] * 2
        name = (f"overhead {row['operation']} c={row['concurrency']} (service/CouchDB p50)")
        lines.append(
            f"| {label} | {row['concurrency']} | {_ms(svc['p50_ms'])} / {_ms(svc['p99_ms'])} | "
            f"{svc['rps']:.0f} | {couch_label} | {_ms(couch['p50_ms'])} / "
            f"{_ms(couch['p99_ms'])} | {couch['rps']:.0f} | {row['ratio_p50']:.2f} "
            f"({spread[0]:.2f}–{spread[1]:.2f}) | ≤ {OVERHEAD_TARGETS[row['operation']]:g} "
            f"{_mark(met[name])} |")
    scaling = result["scaling"]
    lines += [
        "",
        "### 2. Scaling (first page at concurrency 1, p50 ms; index build timed separately)",
        "",
        "| messages in account | box 0 messages | MODBs | seeding s | index build s | "
        "message list: service / CouchDB | box list with counts: service / CouchDB listing |",
        "|---|---|---|---|---|---|---|",
    ]
    for point in scaling["points"]:
        ml, bl = point["message_list"], point["box_list"]
        lines.append(
            f"| {point['messages']:,} | {point['box0_messages']:,} | {point['modbs']} | "
            f"{point['seed_s']:.1f} | {point['index']['total_s']:.1f} | "
            f"{_ms(ml['service']['p50_ms'])} / {_ms(ml['couchdb']['p50_ms'])} | "
            f"{_ms(bl['service']['p50_ms'])} / {_ms(bl['couchdb']['p50_ms'])} |")
    growth = scaling["growth"]
    lines += [
        "",
        f"{scaling['largest']:,} vs {scaling['smallest']:,} messages (target ≤ "
        f"{SCALING_TARGET:g}× for the service): message list "
        f"{growth['message_list']['service']:.2f}× (CouchDB view "
        f"{growth['message_list']['couchdb']:.2f}×), box list with counts "
        f"{growth['box_list']['service']:.2f}× (CouchDB listing "
        f"{growth['box_list']['couchdb']:.2f}×).",
        "",
        f"### 3. Memory (peak RSS growth of the service process, sampled every 20 ms with "
        f"{result['memory']['sampler']})",
        "",
        "| operation | growth MiB | baseline → peak MiB | seconds | MB/s | target |",
        "|---|---|---|---|---|---|",
    ]
    for key, row in result["memory"]["operations"].items():
        name = f"memory {key} (peak RSS growth, MiB)"
        lines.append(
            f"| {row['label']} | {row['growth_mib']:.1f} | {row['baseline_mib']:.1f} → "
            f"{row['peak_mib']:.1f} | {row['seconds']:.2f} | {row['mb_per_s']:.0f} | "
            f"< {MEMORY_TARGET_MIB:g} {_mark(met[name])} |")
    write = result["write"]
    lines += [
        "",
        f"### 4. Write throughput (concurrency {write['concurrency']}, "
        f"{write['audio_bytes'] // 1000} KB audio, {write['per_round']} messages per round)",
        "",
        "| side | messages/s (round spread) |",
        "|---|---|",
        f"| service: multipart PUT …/messages | {write['service']['median']:.1f} "
        f"({write['service']['spread'][0]:.1f}–{write['service']['spread'][1]:.1f}) |",
        f"| CouchDB: doc PUT + attachment PUT | {write['couchdb']['median']:.1f} "
        f"({write['couchdb']['spread'][0]:.1f}–{write['couchdb']['spread'][1]:.1f}) |",
        "",
        f"Ratio {write['ratio']:.2f} (target ≥ {WRITE_TARGET:g}: "
        f"{_mark(met['write throughput (service/CouchDB msgs/s)'])}).",
        "",
        "### 5. Startup (`piston-vm serve` starting its bundled server, to the first 200 on "
        "/readyz)",
        "",
        f"Median {result['startup']['median_s']:.2f} s, rounds "
        f"{', '.join(f'{s:.2f}' for s in result['startup']['rounds_s'])} (target < "
        f"{STARTUP_TARGET_S:g} s: {_mark(met[STARTUP_NAME])}).",
        "",
        *_observability(result["observability"], met[OBSERVABILITY_NAME]),
        *(_audio(result["audio"], met[AUDIO_MEMORY_NAME]) if "audio" in result else []),
        f"### Targets: {sum(c['met'] for c in result['targets'])} of "
        f"{len(result['targets'])} met",
        "",
    ]
    lines += [f"- {c['name']}: {c['value']:.2f} (target {c['target']}): {_mark(c['met'])}"
              for c in result["targets"] if not c["met"]]
    return "\n".join(lines) + "\n"


def _observability(row: JsonObject, met: bool) -> list[str]:
    on, off = row["on"], row["off"]
    spread = row["ratio_p50_spread"] or [row["ratio_p50"]] * 2
    return [
        f"### 6. Cost of the access log and metrics ({row['operation'].replace('_', ' ')}, "
        f"concurrency {row['concurrency']}; two services side by side, rounds alternating)",
        "",
        "| service | p50 / p99 ms | req/s |",
        "|---|---|---|",
        f"| access log ({row['log_format']}) + metrics on | {_ms(on['p50_ms'])} / "
        f"{_ms(on['p99_ms'])} | {on['rps']:.0f} |",
        f"| both off (PISTON_VM_ACCESS_LOG=off, PISTON_VM_METRICS=off) | {_ms(off['p50_ms'])} / "
        f"{_ms(off['p99_ms'])} | {off['rps']:.0f} |",
        "",
        f"On/off p50 {row['ratio_p50']:.3f} (round spread {spread[0]:.3f}–{spread[1]:.3f}; "
        f"target ≤ {OBSERVABILITY_TARGET:g}: {_mark(met)}). The scrape after the run held "
        f"{row['metrics_series']} series.",
        "",
    ]


def _audio(row: JsonObject, met: bool) -> list[str]:
    lines = [
        f"### 7. Audio formats (docs/audio.md; a {row['message_s']:.0f} s message, "
        f"{row['rounds']} rounds; CPU is the service process's, user + system)",
        "",
        "| transcode | audio s per CPU s (spread) | × real time | first byte ms (spread) | "
        "output |",
        "|---|---|---|---|---|",
    ]
    for key in ("wav_to_mp3", "mp3_to_wav"):
        t = row[key]
        cpu, ttfb = t["audio_s_per_cpu_s"], t["ttfb_ms"]
        lines.append(
            f"| {t['label']} | {cpu['median']:.0f} ({cpu['spread'][0]:.0f}–{cpu['spread'][1]:.0f})"
            f" | {t['realtime_factor']['median']:.0f} | {_ms(ttfb['median'])} "
            f"({_ms(ttfb['spread'][0])}–{_ms(ttfb['spread'][1])}) | "
            f"{t['output_bytes'] / 1e6:.2f} MB |")
    stored, create, peak = row["stored_ttfb_ms"], row["create"], row["memory"]
    lines += [
        "",
        f"First byte of the stored bytes, for comparison: {_ms(stored['median'])} ms. "
        f"Looking at an upload (sniffing, measuring its duration) adds "
        f"{create['added_ms']:.1f} ms to the create of a {create['bytes'] / 1e6:.1f} MB MP3 "
        f"({_ms(create['audio_ms']['median'])} ms, against {_ms(create['not_audio_ms']['median'])}"
        " ms for as many bytes of no audio).",
        "",
        f"Peak RSS growth while it transcodes ({row['sampler']}, every 20 ms): {peak['label']}: "
        f"+{peak['growth_mib']:.1f} MiB ({peak['baseline_mib']:.1f} → {peak['peak_mib']:.1f} "
        f"MiB, {peak['seconds']:.1f} s; target < {TRANSCODE_MEMORY_TARGET_MIB:g} MiB: "
        f"{_mark(met)}).",
        "",
    ]
    return lines


def plot(result: JsonObject, path: Path) -> bool:
    """The scaling curves as a PNG; False (and a log line) when matplotlib is not installed."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        log.warning("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return False
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    points = result["scaling"]["points"]
    sizes = [p["messages"] for p in points]
    figure, axes = pyplot.subplots(1, 2, figsize=(11, 4.2))
    panels = (("message_list", "Box message list, first page", "listing_by_mailbox page"),
              ("box_list", "Box list with counts (50 boxes)", "crossbar_listing (no counts)"))
    for ax, (key, title, couch_label) in zip(axes, panels, strict=True):
        for side, label, style in (("service", "piston_vm", "o-"),
                                   ("couchdb", f"CouchDB: {couch_label}", "s--")):
            p50 = [p[key][side]["p50_ms"] for p in points]
            low = [p50[i] - p[key][side]["p50_spread_ms"][0] for i, p in enumerate(points)]
            high = [p[key][side]["p50_spread_ms"][1] - p50[i] for i, p in enumerate(points)]
            ax.errorbar(sizes, p50, yerr=[low, high], fmt=style, capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{s:,}" for s in sizes])
        ax.set_xlabel("messages in the account")
        ax.set_ylabel("p50 latency, ms")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    meta = result["meta"]
    figure.suptitle(f"piston_vm scaling, {meta['couchdb']['description']} ({meta['mode']})",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return True
