#!/usr/bin/env bash
# Installs the dependencies, builds with warnings as errors, and runs every test with ctest.
# Tests that need a GPU skip (with the reason) on machines without one.
#
#   bash scripts/test.sh                      the default run (Release, ./build)
#   bash scripts/test.sh --sanitize=address   ASan + UBSan build in ./build-asan, every test
#   bash scripts/test.sh --sanitize=thread    TSan build in ./build-tsan, the threaded suites:
#                                             runtime (engine loop, metrics server), prefetch
#                                             (copy engine), tiering (io_uring, copy threads).
#                                             Not integration: Debian's gRPC is not built
#                                             with TSan, which then reports races inside it
#                                             (docs/testing.md)
# Sanitizer builds are Debug-optimized (-O1), CUDA off; any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
sanitize=""
for arg in "$@"; do
  case "$arg" in
    --sanitize=address | --sanitize=thread) sanitize="${arg#--sanitize=}" ;;
    *)
      echo "usage: scripts/test.sh [--sanitize=address|thread]" >&2
      exit 2
      ;;
  esac
done
bash scripts/setup.sh
if [ -z "$sanitize" ]; then
  bash scripts/build.sh -DENGRAM_WERROR=ON
  ctest --test-dir build --output-on-failure -j2 --timeout 600
  exit 0
fi

if [ "$sanitize" = address ]; then
  dir=build-asan
  flags="address,undefined"
  labels=""
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
else
  dir=build-tsan
  flags="thread"
  labels="runtime|prefetch|tiering"
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:report_signal_unsafe=0"
fi
cmake -G Ninja -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DENGRAM_CUDA=OFF -DENGRAM_SANITIZE="$flags"
cmake --build "$dir"
start=$(date +%s)
if [ -n "$labels" ]; then
  ctest --test-dir "$dir" --output-on-failure -j2 --timeout 900 -L "$labels"
else
  ctest --test-dir "$dir" --output-on-failure -j2 --timeout 900
fi
echo "test.sh: --sanitize=$sanitize tests took $(($(date +%s) - start)) s"
