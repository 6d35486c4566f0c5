#!/usr/bin/env bash
# Configures and builds engramd into ./build (Release, Ninja). CUDA is built when nvcc is
# found (ENGRAM_CUDA=AUTO). Extra arguments go to cmake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -G Ninja -S . -B build -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build
