#!/usr/bin/env bash
# The GPU session's one script: the CUDA kernel tests, then the CUDA benchmarks, then (time
# permitting) compute-sanitizer over a subset of the tests, with a library prebuilt where nvcc is.
#
# Here (a machine with nvcc; the GPU image may have none):
#   make device-lib            # builds (make install) and copies the library to .device/
# then, from the session, with the device tool:
#   run(command="bash benchmarks/device_check.sh", carry=[".device"], timeout_s=480)
# Results come back under $OUT: summary.txt (one line per stage: verdict, seconds, figures; the
# file to quote in a note), tests.log, bench.md, bench.json, sanitizer.log (and the same on
# stdout). Needs on the GPU machine only python3 with torch (CUDA), numpy and pytest; onnx and
# onnxruntime (CPU) add the tests that compare with the CPU kernel and the bad-input cases;
# onnxruntime-gpu adds those of the ORT CUDA EP (next-run data errors, the opt-in, CUDA graphs).
# At most BUDGET_S (420 s: 7 minutes, inside 8 of GPU time with the machine's start) whatever
# hangs: every stage has its own timeout, cut to what is left: tests 200 s, benchmarks 120 s,
# compute-sanitizer whatever is left. A device compute-sanitizer cannot run on (some virtualised
# GPUs: "Device not supported") is found by a probe of a few seconds, and that stage skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bucketrt-device}
mkdir -p "$OUT"
BUDGET_S=${BUDGET_S:-420}
START=$SECONDS
export BUCKETRT_LIBRARY=${BUCKETRT_LIBRARY:-$PWD/.device/libbucketrt_ort.so}
# The test-only CUDA harness: bucketrt.library.cuda finds it beside the op library.
export BUCKETRT_CUDA_HARNESS=${BUCKETRT_CUDA_HARNESS:-$(dirname "$BUCKETRT_LIBRARY")/libbucketrt_cuda_harness.so}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
for library in "$BUCKETRT_LIBRARY" "$BUCKETRT_CUDA_HARNESS"; do
  if [ ! -f "$library" ]; then
    echo "device_check: no library at $library (run 'make device-lib' and carry .device)" >&2
    exit 2
  fi
done

SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
# Seconds a stage may take: its own limit, cut to what is left of the budget (at least 1).
limit() {
  local left=$(( BUDGET_S - (SECONDS - START) ))
  [ "$left" -lt "$1" ] && echo $(( left > 1 ? left : 1 )) || echo "$1"
}
# One summary line: stage, verdict, seconds since the stage began, figures.
summary() { printf '%-16s %-28s %4d s  %s\n' "$1" "$2" "$(( SECONDS - $3 ))" "${4:-}" | tee -a "$SUMMARY"; }
# "exit N", or "timed out after N s" for timeout's 124/137.
verdict() { case "$1" in 0) echo "ok";; 124|137) echo "timed out ($2 s)";; *) echo "exit $1";; esac; }

echo "== machine"
T0=$SECONDS
timeout -k 5 "$(limit 30)" nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee "$OUT/machine.txt"
timeout -k 5 "$(limit 60)" $PY -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'numpy', numpy.__version__)" 2>&1 | tee -a "$OUT/machine.txt"
# The providers say whether the ORT CUDA EP tests (onnxruntime-gpu: CUDAExecutionProvider) run or skip.
timeout -k 5 "$(limit 30)" $PY -c "import onnxruntime, onnx; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers(), 'onnx', onnx.__version__)" 2>&1 | tee -a "$OUT/machine.txt"
summary machine "ok" "$T0" "$(head -1 "$OUT/machine.txt")"

echo "== tests ($(( SECONDS - START )) s)"
T0=$SECONDS
STAGE=$(limit 200)
timeout -k 10 "$STAGE" $PY -m pytest -q -p no:cacheprovider tests/test_kernels_cuda.py tests/test_cuda_build.py 2>&1 | tee "$OUT/tests.log"
TESTS=${PIPESTATUS[0]}
# pytest's last line: "N passed, M failed, ... in S s".
summary tests "$(verdict "$TESTS" "$STAGE")" "$T0" "$(grep -E '(passed|failed|error)' "$OUT/tests.log" | tail -1)"

echo "== benchmarks ($(( SECONDS - START )) s)"
T0=$SECONDS
STAGE=$(limit 120)
timeout -k 10 "$STAGE" $PY benchmarks/cuda_kernels.py --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.md"
BENCH=${PIPESTATUS[0]}
# The goal's figure: SDPA / YOSO at N = 16384, per dtype (bench.md's YOSO table, last column).
RATIOS=$(awk -F'|' '$3 ~ /^ *16384 *$/ && NF >= 9 {gsub(/ /, "", $2); gsub(/ /, "", $8); printf "%s%s %s", sep, $2, $8; sep=", "}' "$OUT/bench.md")
# TopKExperts' prefill (2048 tokens): its GFLOP/s per model and dtype (bench.md's TopKExperts table).
TOPK=$(awk -F'|' '$4 ~ /^ *2048 *$/ && NF >= 12 {gsub(/ /, "", $2); gsub(/ /, "", $3); gsub(/ /, "", $8); gsub(/ /, "", $11); printf "%s%s %s %s GFLOP/s (torch/ours %s)", sep, $2, $3, $8, $11; sep=", "}' "$OUT/bench.md")
summary benchmarks "$(verdict "$BENCH" "$STAGE")" "$T0" "SDPA/YOSO at N=16384: ${RATIOS:-none}; TopKExperts at 2048 tokens: ${TOPK:-none}; bench.md, bench.json"

# compute-sanitizer first on a process that only creates a CUDA context and allocates (libcuda
# through ctypes: no torch import, seconds): where the device is not supported, it says so there.
T0=$SECONDS
SANITIZER=""  # set to why where the stage is skipped
PROBE="import ctypes; c = ctypes.CDLL('libcuda.so.1'); d = ctypes.c_int(); x = ctypes.c_void_p(); p = ctypes.c_uint64()
assert c.cuInit(0) == 0 and c.cuDeviceGet(ctypes.byref(d), 0) == 0
assert c.cuDevicePrimaryCtxRetain(ctypes.byref(x), d) == 0 and c.cuCtxSetCurrent(x) == 0
assert c.cuMemAlloc_v2(ctypes.byref(p), ctypes.c_size_t(1024)) == 0 and c.cuMemFree_v2(p) == 0
print('probe ok')"
if ! command -v compute-sanitizer >/dev/null; then
  SANITIZER="skipped: no compute-sanitizer"
elif [ $(( BUDGET_S - (SECONDS - START) )) -le 60 ]; then
  SANITIZER="skipped: $(( BUDGET_S - (SECONDS - START) )) s left"
else
  timeout -k 5 "$(limit 45)" compute-sanitizer --tool memcheck --error-exitcode 9 $PY -c "$PROBE" > "$OUT/sanitizer_probe.log" 2>&1
  PROBE_RC=$?
  if grep -qi "device not supported" "$OUT/sanitizer_probe.log"; then
    SANITIZER="skipped: compute-sanitizer: Device not supported"
  elif [ "$PROBE_RC" -ne 0 ] || ! grep -q "probe ok" "$OUT/sanitizer_probe.log"; then
    SANITIZER="skipped: the probe failed ($(verdict "$PROBE_RC" 45)): $(grep -v '^$' "$OUT/sanitizer_probe.log" | tail -1)"
  fi
fi
cat "$OUT/sanitizer_probe.log" 2>/dev/null
LEFT=$(( BUDGET_S - (SECONDS - START) ))
if [ -z "$SANITIZER" ] && [ "$LEFT" -le 60 ]; then
  SANITIZER="skipped: $LEFT s left after the probe"
fi
if [ -z "$SANITIZER" ]; then
  echo "== compute-sanitizer memcheck + racecheck on a subset (${LEFT} s left)"
  SUBSET="(lsh_cumulation_matches_reference and float32 and not 3-33-100) or (hadamard_any_diagonal and float16) or gaussian_integer_data_exact or out_of_range or capacity or asynchronous_data_reports"
  SUBSET="$SUBSET or (argmax_hash_matches_reference and float32 and (1-3-50 or 2-1-33)) or (bucket_sum_matches_reference and float16 and 4-10-5) or top1_dispatch_ties or (bucket_sum_bad_ids and negative)"
  SUBSET="$SUBSET or (chunk_attention_layouts and float32 and not 1024) or (expert_ffn_layouts and float16) or never_fault"
  SUBSET="$SUBSET or (topk_experts_layouts and float16 and not two-passes) or (topk_experts_matches_reference and float32 and 64-5)"
  timeout -k 5 $(( LEFT * 2 / 3 )) compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
    $PY -m pytest -q -p no:cacheprovider -x tests/test_kernels_cuda.py -k "$SUBSET" 2>&1 | tail -40 | tee "$OUT/sanitizer.log"
  SANITIZER="memcheck $(verdict "${PIPESTATUS[0]}" "$(( LEFT * 2 / 3 ))")"
  LEFT=$(( BUDGET_S - (SECONDS - START) ))
  if [ "$LEFT" -gt 30 ]; then
    timeout -k 5 "$LEFT" compute-sanitizer --tool racecheck --error-exitcode 9 --print-limit 20 \
      $PY -m pytest -q -p no:cacheprovider -x tests/test_kernels_cuda.py -k "gaussian_integer_data_exact and float32 or (hadamard_any_diagonal and float32 and (2-9-2 or 1-20-4)) or (argmax_hash_matches_reference and float32 and 1-3-50) or top1_dispatch_ties or (chunk_attention_layouts and float32 and (100-130 or 2147483647)) or (expert_ffn_layouts and float32 and tile-edges) or (topk_experts_layouts and float32 and tile-edges)" \
      2>&1 | tail -20 | tee -a "$OUT/sanitizer.log"
    SANITIZER="$SANITIZER, racecheck $(verdict "${PIPESTATUS[0]}" "$LEFT")"
  fi
fi
summary sanitizer "${SANITIZER%%:*}" "$T0" "$SANITIZER"

echo "== done in $(( SECONDS - START )) s: tests exit $TESTS, benchmarks exit $BENCH, sanitizer $SANITIZER"
summary total "$( [ "$TESTS" -eq 0 ] && [ "$BENCH" -eq 0 ] && echo ok || echo failed)" "$START" "budget $BUDGET_S s"
[ "$TESTS" -eq 0 ] && [ "$BENCH" -eq 0 ]
