#!/usr/bin/env bash
# Installs the dependencies, builds with warnings as errors, and runs every test with ctest.
# Tests that need a GPU skip (with the reason) on machines without one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh -DENGRAM_WERROR=ON
ctest --test-dir build --output-on-failure -j2 --timeout 600
