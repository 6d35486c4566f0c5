#!/usr/bin/env bash
# Builds the libFuzzer targets (build-fuzz: clang, ENGRAM_FUZZ=ON, CUDA off, ASan+UBSan) and runs
# each for N seconds over its seed corpus. Fails (exit 1) on any crash, leak, timeout (an input
# slower than 10 s) or OOM (over 2048 MB), printing the saved input and the report; prints a
# summary line per target (executions, exec/s, cov, ft from libFuzzer's final stats). See
# docs/fuzzing.md.
#
#   bash scripts/fuzz.sh [--seconds N] [--build-dir DIR] [--no-build] [target...] [-- libFuzzer flags]
#
# Targets: safetensors model_config tokenizer server_config checksums hash_vectors http (with or
# without the fuzz_ prefix); default: all. Flags after -- go to every libFuzzer run (e.g.
# -fork=2 -ignore_crashes=1 to keep exploring past a known crash). The corpus each run grows is
# kept in DIR/fuzz-corpus/<target>; logs in DIR/fuzz-logs/<date>-<pid>/; crash, leak, timeout and
# OOM inputs in DIR/fuzz-artifacts/<target>.
# Environment: JOBS (build parallelism, default: all cores), NICE (nice level of the build, 0).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=30
build_dir=build-fuzz
build=1
targets=()
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    --build-dir) build_dir="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("${1#fuzz_}"); shift ;;
  esac
done
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -lt 1 ]]; then
  echo "fuzz.sh: --seconds wants a positive integer, got '$seconds'" >&2
  exit 2
fi

all=(safetensors model_config tokenizer server_config checksums hash_vectors http chat_template)
[[ ${#targets[@]} -eq 0 ]] && targets=("${all[@]}")

# Longest input per target: the largest seed fits (a truncated seed is a wasted seed) and
# mutations stay fast.
max_len() {
  case "$1" in
    safetensors) echo 1048576 ;;  # the tiny synth model's backbone file
    tokenizer) echo 262144 ;;     # DeepSeek-V3 cut to 1500 ids
    hash_vectors) echo 65536 ;;   # tests/data/demo_default_config.json
    *) echo 16384 ;;
  esac
}

if [[ $build -eq 1 ]]; then
  if ! command -v clang++ >/dev/null; then
    echo "fuzz.sh: clang++ not found (scripts/setup.sh installs clang)" >&2
    exit 1
  fi
  start=$(date +%s)
  nice -n "${NICE:-0}" cmake -S . -B "$build_dir" -G Ninja -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENGRAM_FUZZ=ON \
    -DENGRAM_CUDA=OFF -DENGRAM_BUILD_TESTS=OFF -DENGRAM_BUILD_BENCH=OFF >/dev/null
  nice -n "${NICE:-0}" cmake --build "$build_dir" --target fuzz -j "${JOBS:-$(nproc)}"
  echo "fuzz.sh: build took $(( $(date +%s) - start )) s"
fi

bin="$build_dir/tests/fuzz"
# One log folder per run, so runs at the same time (or one after another) keep their logs.
logs="$build_dir/fuzz-logs/$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$logs"
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

summary=()
failed=0
for t in "${targets[@]}"; do
  exe="$bin/fuzz_$t"
  if [[ ! -x "$exe" ]]; then
    echo "fuzz.sh: no target fuzz_$t (built: $(ls "$bin" | grep '^fuzz_' | grep -v seeds | tr '\n' ' '))" >&2
    summary+=("$(printf '%-14s %-5s %s' "$t" FAIL "not built")")
    failed=1
    continue
  fi
  corpus="$build_dir/fuzz-corpus/$t"
  artifacts="$build_dir/fuzz-artifacts/$t"
  seeds="$bin/seeds/$t"
  log="$logs/$t.log"
  mkdir -p "$corpus" "$artifacts" "$seeds"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")"
        -print_final_stats=1 -artifact_prefix="$artifacts/")
  [[ -f "$root/tests/fuzz/dict/$t.dict" ]] && args+=(-dict="$root/tests/fuzz/dict/$t.dict")
  echo "fuzz.sh: fuzz_$t for ${seconds} s (log: $log)"
  rc=0
  touch "$log.start"
  # The outer timeout only guards against a fuzzer that cannot stop itself.
  # The reproducers of past findings (tests/fuzz/findings/<target>) are replayed as seeds.
  dirs=("$corpus" "$seeds")
  [[ -d "$root/tests/fuzz/findings/$t" ]] && dirs+=("$root/tests/fuzz/findings/$t")
  timeout -s KILL $((seconds + 300)) "$exe" "${args[@]}" "${extra[@]}" "${dirs[@]}" >"$log" 2>&1 ||
    rc=$?
  # libFuzzer's last status line and final stats: "#N DONE cov: C ft: F corp: K/SIZE exec/s: R"
  # (one process), or "#N: cov: C ft: F corp: K exec/s R oom/timeout/crash: O/T/C" (-fork=J).
  status_line=$(grep -aE '^#[0-9]+(:|[[:space:]]+(DONE|INITED|NEW|REDUCE|pulse|RELOAD)).* cov: ' \
    "$log" | tail -1 || true)
  field() { sed -n "s/.*$1[: ] *\([0-9][0-9a-zA-Z/]*\).*/\1/p" <<<"$status_line"; }
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  cov=$(field cov)
  ft=$(field ft)
  corp=$(field corp)
  [[ -z "$execs" ]] && execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$status_line")
  [[ -z "$rate" && -n "$execs" ]] && rate=$((execs / seconds))
  if [[ -z "$rss" ]]; then rss=$(field rss); rss=${rss%Mb}; fi
  found=$(find "$artifacts" -type f -newer "$log.start" | wc -l)
  result=PASS
  if [[ $rc -ne 0 ]] || grep -aqE '^==[0-9]+== ?ERROR|^SUMMARY: |ERROR: libFuzzer' "$log"; then
    result=FAIL
    failed=1
    echo "---- fuzz_$t FAILED (exit $rc); the report:" >&2
    # From the first sanitizer, libFuzzer or property error to the saved input.
    awk '/^==[0-9]+== ?ERROR|fuzz property failed|runtime error:/ {p=1}
         p && !/NEW_FUNC/ {print}
         p && /Test unit written to/ {exit}' "$log" | head -n 80 >&2
    [[ $rc -eq 137 ]] && echo "(killed by the outer timeout; tail of the log:)" >&2 && tail -n 30 "$log" >&2
    echo "---- inputs saved by this run (reproduce: $exe FILE):" >&2
    find "$artifacts" -type f -newer "$log.start" | sed 's/^/    /' >&2
  fi
  summary+=("$(printf '%-14s %-5s execs %-10s exec/s %-7s cov %-6s ft %-7s corpus %-12s rss %-5s MB  inputs saved %s' \
    "$t" "$result" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}" \
    "$found")")
done

echo
echo "fuzz.sh summary (${seconds} s per target; logs in $logs):"
printf '  %s\n' "${summary[@]}"
exit $failed
