#!/usr/bin/env bash
# On the GPU machine (after scripts/gpu-bundle.sh build-gpu engramd engram gpu_test here):
# the whole-model GPU tests, then dense-8b timings in one run: PyTorch (tools/bench/
# torch_engram.py), engram bench forward, and engramd served through engram bench serve.
# Logs go to $OUT when set (the device tool's folder), else /tmp.
set -uo pipefail
cd "$(dirname "$0")/.."
logs=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

echo "=== gpu_test (whole model: CPU == GPU, decode == prefill, greedy equal)"
.bundle/run.sh gpu_test --gtest_color=no --gtest_filter='Presets/GpuEngine*' 2>&1 |
  grep -E '^\[  (info|PASSED|FAILED) |tests ran'

echo "=== PyTorch eager, same shapes"
python3 tools/bench/torch_engram.py --preset dense-8b --table-gb 8 --batches 1,16,64 \
  --prompt-len 512 --decode-steps 16 --repeats 3 2>&1 | tee "$logs/torch.json"

echo "=== engram bench forward (CUDA backend, tables in HBM)"
.bundle/run.sh engram bench forward --model 'synth:dense-8b' --backend cuda --batches 1,16,64 \
  --prompt-len 512 --decode-steps 16 --repeats 3 --kv-tokens 65536 --max-seqs 64 2>&1 |
  grep -v '^\[' | tee "$logs/forward.txt"

echo "=== engramd served (engram bench serve)"
cfg=$(mktemp --suffix=.yaml)
cat > "$cfg" <<YAML
model: "synth:dense-8b"
backend: {kind: cuda}
server: {listen: "127.0.0.1:0", drain_grace_s: 5}
limits: {max_running_seqs: 64, max_batch_tokens: 4096, prefill_chunk_tokens: 1024,
         max_waiting: 256, kv_tokens: 65536}
YAML
.bundle/run.sh engramd --config "$cfg" > "$logs/engramd.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q "engramd: ready" "$logs/engramd.log" && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.2
done
addr=$(sed -n 's/^engramd .*: listening on \(.*\)$/\1/p' "$logs/engramd.log")
for c in 1 16 64; do
  n=$((c < 4 ? 4 : c * 2))
  .bundle/run.sh engram bench serve --server "$addr" --concurrency $c --requests $n \
    --prompt-len 256 --max-tokens 64 2>&1 | tee -a "$logs/serve.txt"
done
kill -TERM $pid; wait $pid
echo "engramd exit $?"
