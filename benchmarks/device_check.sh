#!/usr/bin/env bash
# The GPU session's one script: the CUDA kernel tests, then the CUDA benchmarks, then (time
# permitting) compute-sanitizer over a subset of the tests, with a library prebuilt where nvcc is.
#
# Here (a machine with nvcc; the GPU image may have none):
#   make device-lib            # builds (make install) and copies the library to .device/
# then, from the session, with the device tool:
#   run(command="bash benchmarks/device_check.sh", carry=[".device"], timeout_s=480)
# Results come back under $OUT: tests.log, bench.md, bench.json, sanitizer.log (and the same on
# stdout). Needs on the GPU machine only python3 with torch (CUDA), numpy and pytest; onnx and
# onnxruntime (CPU) add the tests that compare with the CPU kernel and the bad-input cases.
# About 6 minutes: tests ~2.5, benchmarks ~1.5, sanitizer whatever is left of BUDGET_S.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bucketrt-device}
mkdir -p "$OUT"
BUDGET_S=${BUDGET_S:-360}
START=$SECONDS
export BUCKETRT_LIBRARY=${BUCKETRT_LIBRARY:-$PWD/.device/libbucketrt_ort.so}
# The test-only CUDA harness: bucketrt.ops.cuda finds it beside the op library.
export BUCKETRT_CUDA_HARNESS=${BUCKETRT_CUDA_HARNESS:-$(dirname "$BUCKETRT_LIBRARY")/libbucketrt_cuda_harness.so}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
for library in "$BUCKETRT_LIBRARY" "$BUCKETRT_CUDA_HARNESS"; do
  if [ ! -f "$library" ]; then
    echo "device_check: no library at $library (run 'make device-lib' and carry .device)" >&2
    exit 2
  fi
done

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/machine.txt"
$PY -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'numpy', numpy.__version__)" 2>&1 | tee -a "$OUT/machine.txt"
$PY -c "import onnxruntime, onnx; print('onnxruntime', onnxruntime.__version__, 'onnx', onnx.__version__)" 2>&1 | tee -a "$OUT/machine.txt"

echo "== tests ($(( SECONDS - START )) s)"
timeout 280 $PY -m pytest -q -p no:cacheprovider tests/test_kernels_cuda.py tests/test_cuda_build.py 2>&1 | tee "$OUT/tests.log"
TESTS=${PIPESTATUS[0]}

echo "== benchmarks ($(( SECONDS - START )) s)"
timeout 200 $PY benchmarks/cuda_kernels.py --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.md"
BENCH=${PIPESTATUS[0]}

LEFT=$(( BUDGET_S - (SECONDS - START) ))
SANITIZER=skipped
if command -v compute-sanitizer >/dev/null && [ "$LEFT" -gt 60 ]; then
  echo "== compute-sanitizer memcheck + racecheck on a subset (${LEFT} s left)"
  SUBSET="(lsh_cumulation_matches_reference and float32 and not 3-33-100) or (hadamard_any_diagonal and float16) or gaussian_integer_data_exact or out_of_range or capacity"
  SUBSET="$SUBSET or (argmax_hash_matches_reference and float32 and (1-3-50 or 2-1-33)) or (bucket_sum_matches_reference and float16 and 4-10-5) or top1_dispatch_ties or (bucket_sum_bad_ids and negative)"
  SUBSET="$SUBSET or (chunk_attention_layouts and float32 and not 1024) or (expert_ffn_layouts and float16) or never_fault"
  timeout $(( LEFT * 2 / 3 )) compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
    $PY -m pytest -q -p no:cacheprovider -x tests/test_kernels_cuda.py -k "$SUBSET" 2>&1 | tail -40 | tee "$OUT/sanitizer.log"
  SANITIZER=memcheck:${PIPESTATUS[0]}
  LEFT=$(( BUDGET_S - (SECONDS - START) ))
  if [ "$LEFT" -gt 30 ]; then
    timeout "$LEFT" compute-sanitizer --tool racecheck --error-exitcode 9 --print-limit 20 \
      $PY -m pytest -q -p no:cacheprovider -x tests/test_kernels_cuda.py -k "gaussian_integer_data_exact and float32 or (hadamard_any_diagonal and float32 and (2-9-2 or 1-20-4)) or (argmax_hash_matches_reference and float32 and 1-3-50) or top1_dispatch_ties or (chunk_attention_layouts and float32 and (100-130 or 2147483647)) or (expert_ffn_layouts and float32 and tile-edges)" \
      2>&1 | tail -20 | tee -a "$OUT/sanitizer.log"
    SANITIZER="$SANITIZER racecheck:${PIPESTATUS[0]}"
  fi
fi

echo "== done in $(( SECONDS - START )) s: tests exit $TESTS, benchmarks exit $BENCH, sanitizer $SANITIZER"
[ "$TESTS" -eq 0 ] && [ "$BENCH" -eq 0 ]
