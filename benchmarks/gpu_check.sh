#!/usr/bin/env bash
# gpu_check.sh — exercise every CUDA path of latprof once and print the figures (about 7 minutes on one GPU).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (from the repository root, with latprof's venv active)
#
# Steps (each prints a header saying what it checks and how to read it):
#   1. latprof env                      the GPU fingerprint: matched by UUID, clocks, throttle reasons, power, MIG
#   2. profile --per-op --roofline      torch-cuda on ShuffleNet v2 / MobileNet v2 at batch 8: GPU per-op times
#                                       (device timestamps) beside the paper's Figure 2, and the roofline peaks
#   3. TF32 off vs on                   the same networks, TF32 set each way (and ort-cuda where onnxruntime-gpu is)
#   4. synchronised host vs CUDA events the latency (host wall clock, synchronised per call) beside the event time
#   5. profile --per-block              MobileNet v2 block by block on torch-cuda, sum of blocks vs the network
#   6. torch-compile-cuda quick sweep   G4 (element-wise ops) with inductor: does fusion erase the penalty?
#   7. G1-G4 on torch-cuda              the paper's GPU channels, batch 8, scales x1 x2 x4, beside its GTX 1080Ti column
# Every result folder stays under OUT_DIR (default reports/gpu-check-<date>-<time>), with its report.html.
# On a machine without a CUDA GPU it prints one line and exits 0.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
PY="${PYTHON:-python}"
if ! "$PY" -c "import latprof" 2>/dev/null; then
    echo "gpu_check: latprof is not importable with $PY; activate the venv (pip install -c constraints.txt -e .) first"
    exit 2
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible here (torch.cuda.is_available() is False); nothing to check"
    exit 0
fi

LATPROF=("$PY" -m latprof.cli)
OUT="${1:-reports/gpu-check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
SUMMARY=("$PY" benchmarks/gpu_check_summary.py)
ORT_CUDA=$("$PY" -c "import onnxruntime as o; print('ort-cuda' if 'CUDAExecutionProvider' in o.get_available_providers() else '')" 2>/dev/null)
T0=$SECONDS
FAILED=()

step() {  # step NAME COMMAND...: run, keep going on failure, remember it
    local name=$1; shift
    echo
    echo "== [$((SECONDS - T0)) s] $name"
    echo "   \$ ${*}"
    if ! "$@"; then
        FAILED+=("$name")
        echo "   (step '$name' exited non-zero; error rows, if any, are listed above)"
    fi
}

step "1. environment fingerprint (GPU matched by UUID; warnings at the end)" "${LATPROF[@]}" env

NETS=shufflenet_v2_x1_0,mobilenet_v2_x1_0
step "2. torch-cuda per-op breakdown and roofline peaks, batch 8, TF32 off" \
    "${LATPROF[@]}" profile --model "$NETS" --backend torch-cuda --per-op --roofline --max-time 5 --tf32 off \
    --out "$OUT/tf32-off"

BACKENDS=torch-cuda${ORT_CUDA:+,$ORT_CUDA}
step "3. TF32 on (same networks; $BACKENDS)" \
    "${LATPROF[@]}" profile --model "$NETS" --backend "$BACKENDS" --max-time 5 --tf32 on --out "$OUT/tf32-on"
if [ -n "$ORT_CUDA" ]; then
    step "3b. ort-cuda with TF32 off" \
        "${LATPROF[@]}" profile --model "$NETS" --backend ort-cuda --per-op --max-time 5 --tf32 off --out "$OUT/ort-tf32-off"
fi
echo
echo "== TF32 off vs on, and timing: synchronised host wall clock (the latency) vs CUDA events (device)"
"${SUMMARY[@]}" tf32 "$OUT/tf32-off" "$OUT/tf32-on" ${ORT_CUDA:+"$OUT/ort-tf32-off"}

step "5. per-block: MobileNet v2 on torch-cuda, block by block" \
    "${LATPROF[@]}" profile --model mobilenet_v2_x1_0 --backend torch-cuda --per-block --max-time 1.5 --out "$OUT/per-block"

step "6. torch-compile-cuda quick sweep of G4 (inductor fuses element-wise ops)" \
    "${LATPROF[@]}" sweep --guideline g4 --backend torch-compile-cuda --quick --budget 60 --no-roofline --out "$OUT/compile-g4"
"${SUMMARY[@]}" compile "$OUT/compile-g4"

step "7. G1-G4 on torch-cuda: paper's GPU channels, batch 8, scales x1 x2 x4" \
    "${LATPROF[@]}" sweep --guideline all --backend torch-cuda --channels gpu --scale 1,2,4 --max-time 5 \
    --no-roofline --out "$OUT/g1-g4"
echo
echo "== G1-G4 on this GPU beside the paper's GTX 1080Ti (speed of each variant relative to the baseline; > 1 is faster)"
"${SUMMARY[@]}" guidelines "$OUT/g1-g4"

echo
echo "== gpu_check done in $((SECONDS - T0)) s; results under $OUT (each folder has results.jsonl, results.csv, report.html)"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "== steps that exited non-zero: ${FAILED[*]}"
    exit 1
fi
