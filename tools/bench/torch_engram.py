#!/usr/bin/env python3
"""A PyTorch implementation of the same Llama + Engram model engramd runs, for timing on the
same GPU (docs/perf.md). Eager PyTorch with BF16 weights, a preallocated KV cache, SDPA
attention and Engram layers (hash on the GPU, row gather from a table in HBM, key/value
projections, gate, dilated causal conv with per-sequence state). Random weights: only the
speed is compared, with the shapes of engramd's synth presets.

  python3 tools/bench/torch_engram.py --preset dense-8b --batches 1,16,64 --prompt-len 512

Prints one JSON object: prefill tok/s (batch 1) and decode tok/s per batch size, each the
median of --repeats timed runs after a warm-up, timed with CUDA events.
"""
import argparse
import json
import math
import statistics

import torch
import torch.nn.functional as F

PRESETS = {
    # hidden, intermediate, layers, heads, kv heads, head_dim, vocab, rope theta
    "small": dict(h=1024, i=2816, L=8, nq=16, nkv=4, hd=64, V=32000, theta=500000.0, engram=[1, 5]),
    "dense-4b": dict(h=3072, i=8192, L=28, nq=24, nkv=8, hd=128, V=128256, theta=500000.0,
                     engram=[1, 15]),
    "dense-8b": dict(h=4096, i=14336, L=32, nq=32, nkv=8, hd=128, V=128256, theta=500000.0,
                     engram=[1, 15]),
}
NGRAM, EMBED_PER_NGRAM, HEADS_PER_NGRAM, KERNEL = 3, 512, 8, 4


def rms(x, w, eps=1e-5):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)


class Model:
    def __init__(self, p, table_gb, max_batch, max_len, dev):
        g = torch.Generator(device=dev).manual_seed(0)

        def w(*shape, std):
            return (torch.randn(*shape, generator=g, device=dev, dtype=torch.float32) * std).to(
                torch.bfloat16)

        self.p, self.dev = p, dev
        h, i, L = p["h"], p["i"], p["L"]
        self.embed = w(p["V"], h, std=1.0)
        self.layers = []
        for _ in range(L):
            self.layers.append(dict(
                n1=torch.ones(h, device=dev, dtype=torch.bfloat16),
                qkv=w((p["nq"] + 2 * p["nkv"]) * p["hd"], h, std=h ** -0.5),
                o=w(h, p["nq"] * p["hd"], std=(2 * L * h) ** -0.5),
                n2=torch.ones(h, device=dev, dtype=torch.bfloat16),
                gu=w(2 * i, h, std=h ** -0.5),
                d=w(h, i, std=(2 * L * i) ** -0.5)))
        self.norm = torch.ones(h, device=dev, dtype=torch.bfloat16)
        self.head = w(p["V"], h, std=h ** -0.5)
        inv = 1.0 / (p["theta"] ** (torch.arange(0, p["hd"], 2, device=dev).float() / p["hd"]))
        pos = torch.arange(max_len, device=dev).float()
        ang = torch.outer(pos, inv)
        self.cos, self.sin = ang.cos(), ang.sin()
        # Engram: one table per layer, rows of Dh = 64 BF16, heads concatenated.
        self.dh = EMBED_PER_NGRAM // HEADS_PER_NGRAM
        heads = (NGRAM - 1) * HEADS_PER_NGRAM
        rows_per_layer = int(table_gb * 1e9 / (2 * self.dh * 2 * len(p["engram"])))
        per_head = rows_per_layer // heads
        self.engram = {}
        for l in p["engram"]:
            self.engram[l] = dict(
                table=w(per_head * heads, self.dh, std=1.0),
                offsets=torch.arange(heads, device=dev, dtype=torch.int64) * per_head,
                mod=torch.full((heads,), per_head - 1, device=dev, dtype=torch.int64),
                mult=torch.randint(0, 2 ** 40, (NGRAM,), generator=g, device=dev) * 2 + 1,
                k=w(h, heads * self.dh, std=(heads * self.dh) ** -0.5),
                kb=torch.zeros(h, device=dev, dtype=torch.bfloat16),
                v=w(h, heads * self.dh, std=(heads * self.dh) ** -0.5),
                vb=torch.zeros(h, device=dev, dtype=torch.bfloat16),
                nk=torch.ones(h, device=dev, dtype=torch.bfloat16),
                nq=torch.ones(h, device=dev, dtype=torch.bfloat16),
                cn=torch.ones(h, device=dev, dtype=torch.bfloat16),
                cw=w(h, KERNEL, std=KERNEL ** -0.5))
        self.k_cache = torch.zeros(L, max_batch, p["nkv"], max_len, p["hd"], device=dev,
                                   dtype=torch.bfloat16)
        self.v_cache = torch.zeros_like(self.k_cache)
        win = (KERNEL - 1) * NGRAM
        self.conv_state = {l: torch.zeros(max_batch, win, h, device=dev, dtype=torch.bfloat16)
                           for l in p["engram"]}
        self.tok_hist = torch.zeros(max_batch, NGRAM - 1, device=dev, dtype=torch.int64)

    def rope(self, x, pos):  # x [B, T, H, hd]
        c, s = self.cos[pos][:, :, None, :], self.sin[pos][:, :, None, :]
        x1, x2 = x[..., : x.shape[-1] // 2].float(), x[..., x.shape[-1] // 2:].float()
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1).to(x.dtype)

    def engram_layer(self, l, x, ids_ext, start):
        e = self.engram[l]
        B, T, _ = x.shape
        heads = e["offsets"].numel()
        idx = []
        for n in range(2, NGRAM + 1):  # hash: XOR of c[t-k] * m_k, mod table size
            mix = ids_ext[:, NGRAM - 1: NGRAM - 1 + T] * e["mult"][0]
            for k in range(1, n):
                mix = mix ^ (ids_ext[:, NGRAM - 1 - k: NGRAM - 1 - k + T] * e["mult"][k])
            idx.append(mix)
        hmix = torch.stack(idx, -1).repeat_interleave(HEADS_PER_NGRAM, -1)  # [B, T, heads]
        rows = torch.remainder(hmix, e["mod"]) + e["offsets"]
        emb = e["table"][rows].reshape(B, T, heads * self.dh)
        key = F.linear(emb, e["k"], e["kb"])
        val = F.linear(emb, e["v"], e["vb"])
        g = (rms(key, e["nk"]).float() * rms(x, e["nq"]).float()).sum(-1) / math.sqrt(x.shape[-1])
        g = g.sign() * g.abs().clamp_min(1e-6).sqrt()
        val = (val.float() * torch.sigmoid(g)[..., None]).to(x.dtype)
        xn = rms(val, e["cn"])
        hist = torch.cat([self.conv_state[l][:B], xn], 1)  # [B, win + T, h]
        win = (KERNEL - 1) * NGRAM
        y = torch.zeros_like(val, dtype=torch.float32)
        for i in range(KERNEL):  # dilated causal depthwise conv
            off = win - (KERNEL - 1 - i) * NGRAM
            y += hist[:, off: off + T].float() * e["cw"][:, i].float()
        self.conv_state[l][:B] = hist[:, -win:]
        return x + val + F.silu(y).to(x.dtype)

    @torch.inference_mode()
    def forward(self, ids, start):
        """ids [B, T] at positions start..start+T-1 of every sequence; returns last logits."""
        p = self.p
        B, T = ids.shape
        pos = torch.arange(start, start + T, device=self.dev).expand(B, T)
        ids_ext = torch.cat([self.tok_hist[:B], ids], 1)
        x = self.embed[ids]
        for l, Lw in enumerate(self.layers):
            if l in self.engram:
                x = self.engram_layer(l, x, ids_ext, start)
            qkv = F.linear(rms(x, Lw["n1"]), Lw["qkv"])
            q, k, v = qkv.split([p["nq"] * p["hd"], p["nkv"] * p["hd"], p["nkv"] * p["hd"]], -1)
            q = self.rope(q.view(B, T, p["nq"], p["hd"]), pos).transpose(1, 2)
            k = self.rope(k.view(B, T, p["nkv"], p["hd"]), pos).transpose(1, 2)
            v = v.view(B, T, p["nkv"], p["hd"]).transpose(1, 2)
            self.k_cache[l, :B, :, start:start + T] = k
            self.v_cache[l, :B, :, start:start + T] = v
            kk = self.k_cache[l, :B, :, : start + T]
            vv = self.v_cache[l, :B, :, : start + T]
            a = F.scaled_dot_product_attention(q, kk, vv, is_causal=(T > 1 and start == 0),
                                               enable_gqa=True)
            x = x + F.linear(a.transpose(1, 2).reshape(B, T, -1), Lw["o"])
            gu = F.linear(rms(x, Lw["n2"]), Lw["gu"])
            gate, up = gu.chunk(2, -1)
            x = x + F.linear(F.silu(gate) * up, Lw["d"])
        self.tok_hist[:B] = ids_ext[:, -(NGRAM - 1):]
        return F.linear(rms(x[:, -1], self.norm), self.head).float()


def timed(fn, repeats):
    times = []
    for r in range(repeats + 1):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        if r:
            times.append(s.elapsed_time(e) / 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="dense-8b", choices=PRESETS)
    ap.add_argument("--table-gb", type=float, default=8.0)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    p = PRESETS[a.preset]
    m = Model(p, a.table_gb, max(batches), a.prompt_len + a.decode_steps + 64, "cuda")
    g = torch.Generator(device="cuda").manual_seed(1)
    prompt = torch.randint(0, p["V"], (1, a.prompt_len), generator=g, device="cuda")
    out = {"preset": a.preset, "torch": torch.__version__, "gpu": torch.cuda.get_device_name()}
    out["prefill_tok_s"] = a.prompt_len / timed(lambda: m.forward(prompt, 0), a.repeats)
    out["decode_tok_s"] = {}
    for b in batches:
        ids = torch.randint(0, p["V"], (b, 32), generator=g, device="cuda")
        m.forward(ids, 0)  # a 32-token prompt per sequence, as engram bench forward uses
        tok = torch.randint(0, p["V"], (b, 1), generator=g, device="cuda")

        def steps():
            for s in range(a.decode_steps):
                m.forward(tok, 32 + s)
        out["decode_tok_s"][str(b)] = b * a.decode_steps / timed(steps, a.repeats)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
