#!/usr/bin/env bash
# Installs every build and test dependency of engramd from Debian bookworm packages.
# Idempotent: packages already present are skipped by apt; safe to run repeatedly.
# CUDA is not installed here: the build detects /usr/local/cuda (ENGRAM_CUDA=AUTO).
set -euo pipefail

PKGS=(
  # toolchain
  build-essential cmake ninja-build pkg-config git clang-format
  # design-card dependencies
  libhwloc-dev libnuma-dev liburing-dev libspdlog-dev libfmt-dev
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  # our choices: config, JSON, Unicode (tokenizer/compression), tests, benchmarks, BLAS
  libyaml-cpp-dev nlohmann-json3-dev libicu-dev libpcre2-dev
  libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev
  prometheus-cpp-dev
  # integration tests: Debian's Python with grpcio
  python3 python3-grpcio python3-grpc-tools python3-numpy
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages already installed"
  exit 0
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
