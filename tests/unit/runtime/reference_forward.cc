#include "reference_forward.h"

#include <cmath>
#include <numbers>

namespace engram::testing {
namespace {

using Vec = std::vector<double>;

// OCP E4M3 ("fn") and E8M0 from their definitions (DESIGN.md), independent of the codecs the
// engine uses: sign, 4 exponent bits (bias 7), 3 mantissa bits; S.1111.111 is NaN.
double E4M3(uint8_t v) {
  const int e = (v >> 3) & 15, m = v & 7;
  if (e == 15 && m == 7) return NAN;
  const double mag = e == 0 ? m * std::pow(2.0, -9) : (1.0 + m / 8.0) * std::pow(2.0, e - 7);
  return (v & 0x80) ? -mag : mag;
}
double E8M0(uint8_t v) { return v == 0xff ? NAN : std::pow(2.0, static_cast<int>(v) - 127); }

Vec ToDouble(const Tensor& t) {
  if (t.dtype == DType::kF8E4M3) {
    Vec out(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < out.size(); ++i) out[i] = E4M3(t.ptr<uint8_t>()[i]);
    return out;
  }
  std::vector<float> f(static_cast<size_t>(t.numel()));
  ConvertToF32(t.dtype, t.data, f.data(), f.size());
  return Vec(f.begin(), f.end());
}

// An FP8 table's rows times their per-32 scales; other tables as they are.
Vec TableToDouble(const Tensor& table, const Tensor& scale) {
  Vec v = ToDouble(table);
  if (table.dtype != DType::kF8E4M3) return v;
  for (size_t i = 0; i < v.size(); ++i) v[i] *= E8M0(scale.ptr<uint8_t>()[i / 32]);
  return v;
}

// V4.1's wkv [O, I]: FP8 times its 32x32 tile scales [ceil(O/32), ceil(I/32)], or as it is.
Vec WkvToDouble(const Tensor& wkv, const Tensor& scale) {
  Vec v = ToDouble(wkv);
  if (wkv.dtype != DType::kF8E4M3) return v;
  const size_t O = static_cast<size_t>(wkv.dim(0)), I = static_cast<size_t>(wkv.dim(1));
  const size_t tiles = (I + 31) / 32;
  for (size_t o = 0; o < O; ++o) {
    for (size_t i = 0; i < I; ++i)
      v[o * I + i] *= E8M0(scale.ptr<uint8_t>()[o / 32 * tiles + i / 32]);
  }
  return v;
}

// A backbone Linear weight [O, I]: a quantized one (config.quantization: F8_E4M3 or I8 codes)
// times its weight_scale_inv [ceil(O / block_n), ceil(I / block_k)], dequantized here from the
// definitions; a float one as it is.
Vec LinearToDouble(const ModelConfig& c, const Tensor& w, const Tensor& scale_inv) {
  Vec v = ToDouble(w);
  if (scale_inv.empty()) return v;
  const size_t O = static_cast<size_t>(w.dim(0)), I = static_cast<size_t>(w.dim(1));
  const size_t bn = static_cast<size_t>(c.quantization->block_n);
  const size_t bk = static_cast<size_t>(c.quantization->block_k);
  const size_t cols = static_cast<size_t>(scale_inv.dim(1));
  std::vector<float> s(static_cast<size_t>(scale_inv.numel()));
  ConvertToF32(scale_inv.dtype, scale_inv.data, s.data(), s.size());
  for (size_t o = 0; o < O; ++o) {
    for (size_t i = 0; i < I; ++i) v[o * I + i] *= s[o / bn * cols + i / bk];
  }
  return v;
}

Vec MatVec(const Vec& W, const Vec* b, const Vec& x, size_t N);

double SignSqrtSigmoid(double g) {
  g = (g > 0 ? 1.0 : (g < 0 ? -1.0 : 0.0)) * std::sqrt(std::max(std::abs(g), 1e-6));
  return 1.0 / (1.0 + std::exp(-g));
}

// DeepSeek-V4.1's module (DESIGN.md), per token: e = the dequantized rows; kv = wkv e;
// key = kv[0:H], value = kv[H:2H]; w = q_weight[0] * k_weight[0];
// d = sum(h w key) rsqrt(mean(h^2) + 1e-20) rsqrt(mean(key^2) + 1e-20) / sqrt(H);
// h += sigmoid(sign(d) sqrt(max(|d|, 1e-6))) value.
void V41Module(const EngramWeights& E, const std::vector<Vec>& rows_e, std::vector<Vec>& x) {
  const size_t H = x.empty() ? 0 : x[0].size();
  const Vec wkv = WkvToDouble(E.wkv, E.wkv_scale);
  const Vec q = ToDouble(E.q_weight), k = ToDouble(E.k_weight);
  for (size_t t = 0; t < x.size(); ++t) {
    const Vec kv = MatVec(wkv, nullptr, rows_e[t], 2 * H);
    double dot = 0, hh = 0, kk = 0;
    for (size_t i = 0; i < H; ++i) {
      dot += x[t][i] * q[i] * k[i] * kv[i];
      hh += x[t][i] * x[t][i];
      kk += kv[i] * kv[i];
    }
    const double d = dot / std::sqrt(hh / H + 1e-20) / std::sqrt(kk / H + 1e-20) /
                     std::sqrt(static_cast<double>(H));
    const double gate = SignSqrtSigmoid(d);
    for (size_t i = 0; i < H; ++i) x[t][i] += gate * kv[H + i];
  }
}

// y[n] = sum_k W[n, k] x[k] (+ b[n]) for W [N, K].
Vec MatVec(const Vec& W, const Vec* b, const Vec& x, size_t N) {
  const size_t K = x.size();
  Vec y(N);
  for (size_t n = 0; n < N; ++n) {
    double acc = b ? (*b)[n] : 0.0;
    for (size_t k = 0; k < K; ++k) acc += W[n * K + k] * x[k];
    y[n] = acc;
  }
  return y;
}

Vec RmsNorm(const Vec& x, const Vec& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double r = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * w[i];
  return y;
}

double Silu(double v) { return v / (1.0 + std::exp(-v)); }

Vec InvFreq(const ModelConfig& c) {
  const size_t half = static_cast<size_t>(c.head_dim / 2);
  Vec inv(half);
  for (size_t i = 0; i < half; ++i) {
    inv[i] = 1.0 /
             std::pow(c.rope_theta, 2.0 * static_cast<double>(i) / static_cast<double>(c.head_dim));
  }
  if (!c.rope_scaling) return inv;
  const RopeScaling& s = *c.rope_scaling;
  for (double& f : inv) {
    if (s.rope_type == "linear") {
      f /= s.factor;
    } else if (s.rope_type == "llama3") {
      const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
      const double wavelen = 2 * std::numbers::pi / f;
      if (wavelen > old_ctx / s.low_freq_factor) {
        f /= s.factor;
      } else if (wavelen >= old_ctx / s.high_freq_factor) {
        const double smooth =
            (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
  }
  return inv;
}

void Rope(double* head, size_t hd, int pos, const Vec& inv) {
  const size_t half = hd / 2;
  for (size_t i = 0; i < half; ++i) {
    const double a = pos * inv[i];
    const double x1 = head[i], x2 = head[i + half];
    head[i] = x1 * std::cos(a) - x2 * std::sin(a);
    head[i + half] = x2 * std::cos(a) + x1 * std::sin(a);
  }
}

}  // namespace

std::vector<double> ReferenceForward(const ModelConfig& c, const HostWeights& w,
                                     const NgramHasher* hasher, const std::vector<int32_t>& ids) {
  const size_t T = ids.size(), H = static_cast<size_t>(c.hidden_size);
  const size_t nq = static_cast<size_t>(c.num_attention_heads);
  const size_t nkv = static_cast<size_t>(c.num_key_value_heads);
  const size_t hd = static_cast<size_t>(c.head_dim), I = static_cast<size_t>(c.intermediate_size);
  const size_t V = static_cast<size_t>(c.vocab_size);
  const Vec inv = InvFreq(c);
  const Vec embed = ToDouble(w.embed);
  std::vector<Vec> x(T);
  for (size_t t = 0; t < T; ++t) {
    x[t].assign(embed.begin() + static_cast<ptrdiff_t>(ids[t] * H),
                embed.begin() + static_cast<ptrdiff_t>((ids[t] + 1) * H));
  }
  int engram_index = 0;
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    if (L.engram) {
      const EngramConfig& ec = *c.engram;
      const EngramWeights& E = *L.engram;
      const size_t heads = static_cast<size_t>(ec.num_heads());
      const size_t dh = static_cast<size_t>(ec.head_dim());
      std::vector<int64_t> raw(ids.begin(), ids.end());
      std::vector<int64_t> rows(T * heads);
      hasher->Hash(engram_index, {}, raw, /*add_offsets=*/true, rows.data());
      const Vec table = TableToDouble(E.table, E.table_scale);
      std::vector<Vec> es(T);
      for (size_t t = 0; t < T; ++t) {
        Vec& e = es[t];
        e.resize(heads * dh);
        for (size_t h = 0; h < heads; ++h) {
          for (size_t d = 0; d < dh; ++d) {
            e[h * dh + d] = table[static_cast<size_t>(rows[t * heads + h]) * dh + d];
          }
        }
      }
      if (ec.v41()) {
        V41Module(E, es, x);
      } else {
        const Vec kw = LinearToDouble(c, E.key_w, E.key_s), kb = ToDouble(E.key_b),
                  vw = LinearToDouble(c, E.value_w, E.value_s), vb = ToDouble(E.value_b),
                  n1 = ToDouble(E.norm_key), n2 = ToDouble(E.norm_query);
        std::vector<Vec> val(T), xn(T);
        for (size_t t = 0; t < T; ++t) {
          const Vec& e = es[t];
          Vec k = MatVec(kw, &kb, e, H), v = MatVec(vw, &vb, e, H);
          Vec nk = RmsNorm(k, n1, ec.norm_eps), nqv = RmsNorm(x[t], n2, ec.norm_eps);
          double g = 0;
          for (size_t i = 0; i < H; ++i) g += nk[i] * nqv[i];
          g /= std::sqrt(static_cast<double>(H));
          const double a = SignSqrtSigmoid(g);
          for (double& vv : v) vv *= a;
          val[t] = v;
        }
        if (ec.short_conv) {
          const Vec cw = ToDouble(E.conv_w), cn = ToDouble(E.conv_norm);
          const size_t K = static_cast<size_t>(ec.kernel_size);
          const size_t N = static_cast<size_t>(ec.max_ngram_size);
          for (size_t t = 0; t < T; ++t) xn[t] = RmsNorm(val[t], cn, ec.conv_norm_eps);
          for (size_t t = 0; t < T; ++t) {
            for (size_t ch = 0; ch < H; ++ch) {
              double y = 0;
              for (size_t i = 0; i < K; ++i) {
                const int64_t q = static_cast<int64_t>(t) - static_cast<int64_t>((K - 1 - i) * N);
                if (q >= 0) y += cw[ch * K + i] * xn[static_cast<size_t>(q)][ch];
              }
              x[t][ch] += val[t][ch] + Silu(y);
            }
          }
        } else {
          for (size_t t = 0; t < T; ++t) {
            for (size_t ch = 0; ch < H; ++ch) x[t][ch] += val[t][ch];
          }
        }
      }  // paper module
      ++engram_index;
    }
    const Vec in_norm = ToDouble(L.input_norm), wq = LinearToDouble(c, L.q_w, L.q_s),
              wk = LinearToDouble(c, L.k_w, L.k_s), wv = LinearToDouble(c, L.v_w, L.v_s),
              wo = LinearToDouble(c, L.o_w, L.o_s);
    Vec bq, bk, bv;
    if (c.attention_bias) {
      bq = ToDouble(L.q_b);
      bk = ToDouble(L.k_b);
      bv = ToDouble(L.v_b);
    }
    std::vector<Vec> q(T), k(T), v(T);
    for (size_t t = 0; t < T; ++t) {
      Vec hn = RmsNorm(x[t], in_norm, c.rms_norm_eps);
      q[t] = MatVec(wq, c.attention_bias ? &bq : nullptr, hn, nq * hd);
      k[t] = MatVec(wk, c.attention_bias ? &bk : nullptr, hn, nkv * hd);
      v[t] = MatVec(wv, c.attention_bias ? &bv : nullptr, hn, nkv * hd);
      for (size_t h = 0; h < nq; ++h) Rope(&q[t][h * hd], hd, static_cast<int>(t), inv);
      for (size_t h = 0; h < nkv; ++h) Rope(&k[t][h * hd], hd, static_cast<int>(t), inv);
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    for (size_t t = 0; t < T; ++t) {
      Vec attn(nq * hd, 0.0);
      for (size_t h = 0; h < nq; ++h) {
        const size_t kh = h / (nq / nkv);
        Vec s(t + 1);
        double mx = -1e300;
        for (size_t j = 0; j <= t; ++j) {
          double d = 0;
          for (size_t i = 0; i < hd; ++i) d += q[t][h * hd + i] * k[j][kh * hd + i];
          s[j] = d * scale;
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (double& sj : s) z += (sj = std::exp(sj - mx));
        for (size_t j = 0; j <= t; ++j) {
          for (size_t i = 0; i < hd; ++i) attn[h * hd + i] += s[j] / z * v[j][kh * hd + i];
        }
      }
      Vec o = MatVec(wo, nullptr, attn, H);
      for (size_t i = 0; i < H; ++i) x[t][i] += o[i];
    }
    const Vec post = ToDouble(L.post_norm), wg = LinearToDouble(c, L.gate_w, L.gate_s),
              wu = LinearToDouble(c, L.up_w, L.up_s), wd = LinearToDouble(c, L.down_w, L.down_s);
    for (size_t t = 0; t < T; ++t) {
      Vec hn = RmsNorm(x[t], post, c.rms_norm_eps);
      Vec g = MatVec(wg, nullptr, hn, I), u = MatVec(wu, nullptr, hn, I);
      for (size_t i = 0; i < I; ++i) g[i] = Silu(g[i]) * u[i];
      Vec d = MatVec(wd, nullptr, g, H);
      for (size_t i = 0; i < H; ++i) x[t][i] += d[i];
    }
  }
  const Vec fn = ToDouble(w.final_norm), head = LinearToDouble(c, w.lm_head, w.lm_head_s);
  std::vector<double> logits;
  logits.reserve(T * V);
  for (size_t t = 0; t < T; ++t) {
    Vec y = MatVec(head, nullptr, RmsNorm(x[t], fn, c.rms_norm_eps), V);
    logits.insert(logits.end(), y.begin(), y.end());
  }
  return logits;
}

double RelativeError(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    const double d = (i < a.size() ? a[i] : 0.0) - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  if (a.size() != b.size()) return INFINITY;
  return std::sqrt(num / den);
}

}  // namespace engram::testing
