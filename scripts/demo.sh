#!/usr/bin/env bash
# The main job: installs the dependencies, builds, starts engramd on the demo model (the tiny
# preset with DeepSeek-V3's tokenizer, CPU backend: configs/cpu-demo.yaml) on a free
# loopback port, sends a first request over gRPC (the engram CLI) and one over the
# OpenAI-compatible HTTP API (curl to /v1/chat/completions: DeepSeek-V3's chat template), prints
# the replies, then stops the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh

cfg=$(mktemp --suffix=.yaml)
log=$(mktemp)
# The demo config with an ephemeral port, so a running daemon on 50051 does not collide.
sed "s|^  listen: 127.0.0.1:50051|  listen: 127.0.0.1:0|; s|^  listen: 127.0.0.1:8000|  listen: 127.0.0.1:0|; s|\.\./tests/|$PWD/tests/|" \
  configs/cpu-demo.yaml > "$cfg"
./build/engramd --config "$cfg" > "$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$cfg" "$log"' EXIT
for _ in $(seq 1 300); do
  grep -q "engramd: ready" "$log" && break
  kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
addr=$(sed -n 's/^engramd .*: listening on \(.*\)$/\1/p' "$log")
echo "engramd is serving the demo model on $addr"
./build/engram generate --server "$addr" --prompt "The Engram memory of a language model" \
  --max-tokens 32 --temperature 0.8 --seed 7
http=$(sed -n 's/^engramd: http listening on \([^ ]*\).*$/\1/p' "$log")
echo
echo "the same model over the OpenAI-compatible HTTP API on $http:"
body='{"messages": [{"role": "user", "content": "What is an Engram table?"}], "max_tokens": 16, "temperature": 0.8, "seed": 7}'
echo "+ curl -s http://$http/v1/chat/completions -d '$body'"
curl -s "http://$http/v1/chat/completions" -H 'Content-Type: application/json' -d "$body"
echo
./build/engram stats --server "$addr"
