"""The seed papers' claims on this machine: FLOPs-predicted, MAC-predicted and measured speed ratios (issue 14).

Runs ``latprof sweep --guideline claims`` once per backend, as a user would (fresh worker processes, the default
allocator), prints each run's wall time, then one Markdown table: per claim and backend the key variant against its
baseline — FLOPs-predicted, MAC-predicted, measured ratio with its 95% CI (variants interleaved in one unit, so the
ratio is measured side by side) — the verdict and the paper's figure. ``--from DIR...`` only prints the table of
earlier runs' folders.

Run: python benchmarks/bench_claims.py [--backend ort-mobile,torch-cpu] [--quick] [--out DIR]
     python benchmarks/bench_claims.py --from reports/claims-ort-mobile reports/claims-torch-cpu
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from latprof.report.claims import claims_frame, paper_text
from latprof.report.data import load
from latprof.report.overview import ratio_text
from latprof.report.sections import guideline_frame


def run(backend: str, quick: bool, out: Path) -> float:
    """One sweep of every claim on one backend; its wall time in seconds."""
    cmd = [sys.executable, "-m", "latprof.cli", "sweep", "--guideline", "claims", "--backend", backend, "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(cmd + (["--quick"] if quick else []), check=True)
    return time.perf_counter() - start


def markdown(folders: list[Path]) -> str:
    """The claims of every folder as one Markdown table, claims in spec order, backends side by side."""
    data = load([f / "results.jsonl" if f.is_dir() else f for f in folders])
    c = claims_frame(guideline_frame(data, claims=True))
    lines = ["| claim | backend | scale | key variant vs baseline | FLOPs-predicted | MAC-predicted | "
             "measured [95% CI] | verdict | paper |", "|---|---|---|---|---|---|---|---|---|"]
    for r in c.sort_values(["experiment", "backend", "scale"], kind="stable").to_dict("records"):
        lines.append(f"| {r['experiment']} | {r['backend']} | ×{r['scale']} | {r['key_variant']} vs {r['baseline_variant']}"
                     f"{' (curve)' if r['curve'] else ''} | {ratio_text(r['flops_predicted_speed_vs_baseline'], None, None)} | "
                     f"{ratio_text(r['mac_predicted_speed_vs_baseline'], None, None)} | "
                     f"{ratio_text(r['speed_vs_baseline'], r['speed_vs_baseline_ci_low'], r['speed_vs_baseline_ci_high'])} | "
                     f"{r['verdict']} | {paper_text(r)} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="ort-mobile,torch-cpu", help="comma-separated backends (one sweep each)")
    ap.add_argument("--quick", action="store_true", help="the quick protocol (scale x1, looser CI, time budget)")
    ap.add_argument("--out", type=Path, help="parent folder of the runs (default: a temporary folder)")
    ap.add_argument("--from", dest="folders", nargs="+", type=Path, help="only print the table of these run folders")
    args = ap.parse_args()
    folders = args.folders
    if not folders:
        parent = args.out or Path(tempfile.mkdtemp(prefix="bench-claims-"))
        folders = []
        for backend in args.backend.split(","):
            out = parent / f"claims-{backend}"
            wall = run(backend, args.quick, out)
            print(f"{backend}: latprof sweep --guideline claims{' --quick' if args.quick else ''} took {wall:.0f} s "
                  f"({out})", flush=True)
            folders.append(out)
    print(markdown(folders))
    return 0


if __name__ == "__main__":
    sys.exit(main())
