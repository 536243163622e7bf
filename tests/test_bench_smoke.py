"""`python -m bench.run --smoke` end to end, so the benchmark (issue 6) cannot rot.

It runs the real benchmark with tiny sizes as a subprocess (its own bundled CouchDB and
`piston-vm serve` processes), writes into a temporary directory, and checks that every figure
is there and sane. It does not judge the figures against the targets: that is the full run's job.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from bench.run import SMOKE

REPO_ROOT = Path(__file__).resolve().parent.parent
SMOKE_TIMEOUT_S = 240
OPERATIONS = {"box_fetch", "box_list", "message_fetch", "message_list", "raw_audio"}
CONCURRENCIES = {1, 16}
MEMORY_OPERATIONS = {"upload", "download", "zip"}


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and (
        math.isfinite(value) and value > 0)


def assert_latency(figures: dict[str, Any]) -> None:
    assert positive(figures["p50_ms"]), figures
    assert positive(figures["p99_ms"]), figures
    assert figures["p99_ms"] >= figures["p50_ms"], figures
    assert positive(figures["rps"]), figures
    assert figures["requests"] >= figures["rounds"] >= 1, figures
    low, high = figures["p50_spread_ms"]
    assert 0 < low <= figures["p50_ms"] <= high, figures


def run_smoke(out: Path) -> dict[str, Any]:
    env = dict(os.environ)
    # Follow the test suite onto another CouchDB when it is pointed at one.
    external = env.get("PISTON_VM_TEST_COUCHDB_URL")
    if external:
        env["PISTON_VM_BENCH_COUCHDB_URL"] = external
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=SMOKE_TIMEOUT_S, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "### 1. Overhead" in done.stdout  # the table is printed at the end
    result: dict[str, Any] = json.loads((out / "latest.json").read_text())
    return result


def test_smoke_run_reports_every_metric(tmp_path: Path) -> None:
    result = run_smoke(tmp_path)

    meta = result["meta"]
    assert meta["mode"] == "smoke"
    assert positive(meta["duration_s"])

    overhead = result["overhead"]
    assert {(r["operation"], r["concurrency"]) for r in overhead} == {
        (op, c) for op in OPERATIONS for c in CONCURRENCIES}
    for row in overhead:
        assert_latency(row["service"])
        assert_latency(row["couchdb"])
        assert positive(row["ratio_p50"]), row
        assert all(positive(v) for v in row["ratio_p50_spread"]), row

    scaling = result["scaling"]
    sizes = [p["messages"] for p in scaling["points"]]
    assert len(sizes) >= 2
    assert sizes == sorted(sizes)
    assert sizes[0] < sizes[-1]
    for point in scaling["points"]:
        assert positive(point["seed_s"]), point
        assert positive(point["index"]["total_s"]), point
        assert point["modbs"] >= 1
        for key in ("message_list", "box_list"):
            assert_latency(point[key]["service"])
            assert_latency(point[key]["couchdb"])
    for key in ("message_list", "box_list"):
        assert positive(scaling["growth"][key]["service"])
        assert positive(scaling["growth"][key]["couchdb"])

    operations = result["memory"]["operations"]
    assert set(operations) == MEMORY_OPERATIONS
    for row in operations.values():
        assert positive(row["baseline_mib"]), row
        assert row["peak_mib"] >= row["baseline_mib"] * 0.5, row
        assert math.isfinite(row["growth_mib"]), row
        assert positive(row["bytes"]), row
        assert positive(row["seconds"]), row
        assert row["samples"] >= 1, row
    assert operations["download"]["bytes"] == SMOKE.upload_bytes
    assert operations["upload"]["bytes"] > SMOKE.upload_bytes  # audio plus multipart framing
    assert operations["zip"]["bytes"] > SMOKE.zip_count * SMOKE.zip_bytes  # plus ZIP framing

    write = result["write"]
    assert positive(write["service"]["median"])
    assert positive(write["couchdb"]["median"])
    assert positive(write["ratio"])

    startup = result["startup"]
    assert positive(startup["median_s"])
    assert all(positive(s) for s in startup["rounds_s"])

    observability = result["observability"]
    assert observability["operation"] == "box_fetch"
    assert_latency(observability["on"])
    assert_latency(observability["off"])
    assert positive(observability["ratio_p50"])
    assert observability["metrics_series"] > 0

    audio = result["audio"]
    for key in ("wav_to_mp3", "mp3_to_wav"):
        assert positive(audio[key]["audio_s_per_cpu_s"]["median"]), audio[key]
        assert positive(audio[key]["ttfb_ms"]["median"]), audio[key]
        assert positive(audio[key]["output_bytes"]), audio[key]
    assert positive(audio["stored_ttfb_ms"]["median"])
    assert math.isfinite(audio["create"]["added_ms"])
    assert positive(audio["memory"]["baseline_mib"])
    assert math.isfinite(audio["memory"]["growth_mib"])
    assert audio["memory"]["bytes"] >= SMOKE.audio.big_bytes * 0.99

    targets = result["targets"]
    assert len(targets) == len(overhead) + 2 + len(MEMORY_OPERATIONS) + 3 + 1
    for target in targets:
        assert isinstance(target["met"], bool), target
        assert math.isfinite(target["value"]), target

    table = (tmp_path / "latest.md").read_text()
    for heading in ("1. Overhead", "2. Scaling", "3. Memory", "4. Write throughput",
                    "5. Startup", "6. Cost of the access log and metrics", "7. Audio formats"):
        assert heading in table
    if find_spec("matplotlib") is not None:
        assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
