"""Synthetic results files for the report tests: made-up numbers in the shape of the data contracts (test fixtures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from latprof.results import SCHEMA_VERSION

XSS = "<script>alert(1)</script>"

GUIDELINES = {
    "g1": ("G1: equal channel width minimizes memory access cost", ["1:1", "1:2", "1:6", "1:12"]),
    "g2": ("G2: excessive group convolution increases memory access cost", ["g=1", "g=2", "g=4", "g=8"]),
    "g3": ("G3: network fragmentation reduces the degree of parallelism",
           ["1-fragment", "2-fragment-series", "4-fragment-series", "2-fragment-parallel", "4-fragment-parallel"]),
    "g4": ("G4: element-wise operations are non-negligible", ["relu+shortcut", "relu", "shortcut", "none"]),
}


def environment(hardware_id: str) -> dict[str, Any]:
    return {
        "record": "environment", "schema_version": SCHEMA_VERSION, "hardware_id": hardware_id,
        "hardware": {"cpu_model": "Fixture CPU 3000", "machine": "x86_64", "cpu_physical_cores": 4, "cpu_logical_cores": 8,
                     "cpu_freq_mhz": {"current": 3000.0, "min": 800.0, "max": 4000.0}, "memory_gib": 16, "gpus": []},
        "software": {"os": "Linux-fixture", "python": "3.11.7", "torch": "2.13.0+cpu", "onnxruntime": "1.31.1"},
        "threads": {"torch_intra_op": 4, "torch_inter_op": 1, "cpu_affinity": [0, 1, 2, 3]},
        "state": {"cpu_governor": "performance", "load_avg_1m": 0.1},
        "warnings": ["fixture warning: turbo state unknown"],
    }


def result(**fields: Any) -> dict[str, Any]:
    row = {"record": "result", "schema_version": SCHEMA_VERSION, "experiment": "", "variant": "", "scale": None,
           "status": "ok", "error": "", "hardware_id": "fixturehw0001", "timestamp": "2026-01-01T00:00:00+00:00",
           "threads": 4, "batch": 1, "settings": {"device": "cpu", "intra_op_threads": 4, "pinned_cores": None}}
    row.update(fields)
    if row["status"] == "ok" and "latency_median_ms" in row:
        m = row["latency_median_ms"]
        row.update({"latency_mean_ms": m * 1.01, "latency_p10_ms": m * 0.97, "latency_p90_ms": m * 1.04,
                    "latency_iqr_ms": m * 0.03, "latency_ci_low_ms": m * 0.98, "latency_ci_high_ms": m * 1.02,
                    "cv": 0.02, "n_samples": 30, "samples_ms": [m] * 5})
    return row


def counts(mult_adds: float, mem_access: float) -> dict[str, Any]:
    return {"mult_adds": int(mult_adds), "mem_access": int(mem_access), "mem_bytes": int(4 * mem_access),
            "elementwise_ops": int(mem_access / 3), "params": int(mult_adds / 3136),
            "arithmetic_intensity": 2 * mult_adds / (4 * mem_access)}


# Verdict per (guideline, backend, scale) where it is not the default (g3 inconclusive, the others holds): one
# "does not hold" and one "no effect" cell, so the matrix shows every decided verdict.
VERDICT_OVERRIDES = {("g2", "torch-cpu", 2): "does not hold", ("g4", "ort-mobile", 2): "no effect"}

# Process conditions of the new measurement engine, on torch-cpu rows only (ort-mobile rows stand for an older file
# that lacks the columns). Defaults are quiet; these rows cross a threshold, or sit exactly on one (not flagged).
QUIET = {"minor_faults_per_call": 0.01, "major_faults_per_call": 0.0, "voluntary_ctx_switches_per_call": 0.3,
         "involuntary_ctx_switches_per_call": 0.001, "cpu_util": 1.9}
CONDITIONS = {
    ("g1", 1, "1:12"): {"minor_faults_per_call": 0.4, "major_faults_per_call": 0.2},  # 0.6 > 0.5: allocator-bound
    ("g2", 2, "g=4"): {"minor_faults_per_call": 0.5, "major_faults_per_call": 0.0},  # 0.5, not above: quiet
    ("g3", 1, "1-fragment"): {"involuntary_ctx_switches_per_call": 0.2},  # contention
    ("g4", 2, "relu"): {"involuntary_ctx_switches_per_call": 0.05},  # on the threshold: quiet
    ("g4", 1, "none"): {"minor_faults_per_call": 3.0, "involuntary_ctx_switches_per_call": 0.1},  # both flags
}
ALLOCATOR_BOUND_ROWS = {("g1", 1, "1:12"), ("g4", 1, "none")}
CONTENTION_ROWS = {("g3", 1, "1-fragment"), ("g4", 1, "none")}


def guideline_rows(backend: str, settings: dict[str, Any]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    rows = []
    for gid, (title, variants) in GUIDELINES.items():
        for scale in (1, 2):
            base_lat = 2.0 * scale
            verdict = VERDICT_OVERRIDES.get((gid, backend, scale), "holds" if gid != "g3" else "inconclusive")
            for i, v in enumerate(variants):
                mac = 1e6 * scale * (1 + 0.3 * i)
                lat = base_lat * (1 + 0.1 * i + rng.normal(0, 0.01))
                speed = base_lat / lat
                outcome = "" if i == 0 else {"holds": "confirms", "no effect": "no effect", "does not hold": "contradicts"}.get(verdict, "unclear")
                row = result(
                    experiment=gid, guideline_title=title, workload=f"{gid}_block", variant=v, baseline_variant=variants[0],
                    backend=backend, scale=scale, channels="arm", input_shape="1x32x56x56", settings=settings,
                    latency_median_ms=lat, **counts(5e7 * scale * scale, mac),
                    speed_vs_baseline=speed, speed_vs_baseline_ci_low=speed * 0.98, speed_vs_baseline_ci_high=speed * 1.02,
                    paper_speed_vs_baseline=1 - 0.08 * i, mac_predicted_speed_vs_baseline=1 / (1 + 0.3 * i),
                    variant_outcome=outcome, verdict=verdict)
                if backend == "torch-cpu":
                    row.update(allocator="steady", processes=2, process_spread=1.01,
                               **{**QUIET, **CONDITIONS.get((gid, scale, v), {})})
                rows.append(row)
    return rows


def allocator_rows() -> list[dict[str, Any]]:
    """One workload measured under three allocators in the same file (the allocator-effect table)."""
    return [result(workload="alloc_probe", backend="torch-cpu", input_shape="1x3x64x64", allocator=a, processes=1,
                   latency_median_ms=ms, **QUIET)
            for a, ms in (("system", 4.0), ("jemalloc", 3.0), ("tcmalloc", 3.2))]


def profile_rows() -> list[dict[str, Any]]:
    rows = []
    for i, name in enumerate(["mobilenet_v2", "shufflenet_v2_x1_0", "resnet18", XSS, "squeezenet"]):
        mult_adds, mem = 1e8 * (i + 1) ** 1.5, 5e6 * (i + 2)
        rows.append(result(workload=name, backend="torch-cpu", input_shape="1x3x224x224",
                           latency_median_ms=3 + mem / 1e6, **counts(mult_adds, mem)))
    rows.append(result(workload="user_model_without_counts", backend="torch-cpu", input_shape="1x3x64x64", latency_median_ms=1.5))
    rows.append(result(workload="broken_model", backend="ort-cpu", status="error",
                       error=f"export failed for {XSS}", input_shape="1x3x224x224"))
    blocks = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    for j, b in enumerate(blocks):
        rows.append(result(experiment="blocks:resnet18", workload="resnet18", variant=b, block_index=j, backend="torch-cpu",
                           input_shape="1x64x56x56", latency_median_ms=1 + j * 0.5, **counts(2e8, 1e6 * (j + 1))))
    rows.append(result(experiment="blocks:resnet18", workload="resnet18", variant="network", block_index=-1, backend="torch-cpu",
                       input_shape="1x3x224x224", latency_median_ms=12.0, **counts(1.8e9, 2.1e7)))
    return rows


def per_op_record() -> dict[str, Any]:
    ms = {"Conv": 6.0, "Elemwise": 1.5, "Data": 1.0, "Shuffle": 0.5, "Other": 1.0}
    total = sum(ms.values())
    return {"record": "per_op", "schema_version": SCHEMA_VERSION, "workload": "shufflenet_v2_x1_0", "backend": "ort-cpu",
            "threads": 4, "batch": 1, "input_shape": "1x3x224x224", "hardware_id": "fixturehw0001",
            "categories_ms": ms, "categories_percent": {k: 100 * v / total for k, v in ms.items()}, "depthwise_ms": 0.8,
            "ops": [{"name": "Conv_0", "op_type": "Conv", "category": "Conv", "time_ms": 2.0, "calls": 1},
                    {"name": "Transpose_3", "op_type": "Transpose", "category": "Shuffle", "time_ms": 0.5, "calls": 1}],
            "profiled_total_ms": total, "end_to_end_median_ms": total * 1.05,
            "reconciliation": "profiled operators cover 95% of the end-to-end median"}


def peaks_record(backend: str, threads: int) -> dict[str, Any]:
    return {"record": "peaks", "schema_version": SCHEMA_VERSION, "backend": backend, "threads": threads,
            "hardware_id": "fixturehw0001", "peak_gflops": 150.0, "peak_gbytes_per_s": 20.0, "method": "fixture"}


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def full_fixture(tmp_path: Path) -> Path:
    """One results file with every kind of record the report reads."""
    records = [environment("fixturehw0001")]
    records += guideline_rows("torch-cpu", {"device": "cpu", "intra_op_threads": 4, "pinned_cores": None})
    records += guideline_rows("ort-mobile", {"intra_op_threads": 1, "inter_op_threads": 1, "pinned_cores": [0],
                                             "graph_optimization_level": "ORT_ENABLE_ALL", "onnx_exporter": "dynamo"})
    for r in records:
        if r.get("backend") == "ort-mobile":
            r["threads"] = 1
    records += profile_rows()
    records += allocator_rows()
    records += [per_op_record(), peaks_record("torch-cpu", 4), peaks_record("ort-mobile", 1)]
    return write_jsonl(tmp_path / "results.jsonl", records)


_BUILT: dict[str, Path] = {}


def built_full_report(factory: Any) -> Path:
    """The full fixture's report.html (with summary.csv beside it), built once per test session and shared by the
    report test modules; ``factory`` is pytest's ``tmp_path_factory``."""
    if "html" not in _BUILT:
        from latprof.report import build_report

        d = factory.mktemp("full_report")
        out = d / "out" / "report.html"
        build_report([full_fixture(d)], out, csv_path=d / "out" / "summary.csv", title=f"Fixture {XSS}")
        _BUILT["html"] = out
    return _BUILT["html"]
