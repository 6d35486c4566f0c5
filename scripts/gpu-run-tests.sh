#!/usr/bin/env bash
# On the GPU machine: runs the bundled gpu_test (scripts/gpu-bundle.sh made .bundle/ here),
# then its disabled timing test, then gpu_test under compute-sanitizer (memcheck) when it is
# installed, and prints a summary last. Logs go to $OUT (the run tool's folder) when set, else /tmp.
#   run tool: command "scripts/gpu-run-tests.sh", carry [".bundle"]
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
logs=${OUT:-/tmp}
cd "$repo"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
echo "cublas: $(ls /usr/local/cuda/lib64/libcublasLt.so.* 2>/dev/null | head -1)"

start=$(date +%s.%N)
.bundle/run.sh gpu_test --gtest_color=no 2>&1 | tee "$logs/gpu_test.log"
rc=${PIPESTATUS[0]}
end=$(date +%s.%N)

.bundle/run.sh gpu_test --gtest_color=no --gtest_also_run_disabled_tests \
  --gtest_filter='*Timings*' >"$logs/timings.log" 2>&1
timing_rc=$?

san_rc="not run"
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [ -n "$sanitizer" ]; then
  timeout 150 .bundle/run.sh "$sanitizer" --tool memcheck --error-exitcode 9 gpu_test \
    --gtest_color=no >"$logs/memcheck.log" 2>&1
  san_rc=$?
fi

echo
echo "================ summary ================"
grep -E '^\[  error   \]|^\[  info    \]' "$logs/gpu_test.log"
grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]' "$logs/gpu_test.log"
awk -v rc="$rc" -v s="$start" -v e="$end" 'BEGIN { printf "gpu_test exit %s, wall %.1f s\n", rc, e - s }'
grep -E '^\[  timing  \]' "$logs/timings.log"
echo "timings exit $timing_rc"
echo "memcheck exit $san_rc; its summary:"
grep -E 'ERROR SUMMARY|^\[  (PASSED|FAILED) ' "$logs/memcheck.log" 2>/dev/null | tail -3
grep -m5 -E '^========= (Invalid|Program hit|.*out of bounds)' "$logs/memcheck.log" 2>/dev/null
exit "$rc"
