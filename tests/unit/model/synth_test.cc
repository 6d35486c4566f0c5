#include "model/synth.h"
#include "model/model_files.h"

#include <gtest/gtest.h>

#include <fmt/format.h>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "../../support/temp_dir.h"
#include "model/engram_geometry.h"
#include "model/weights.h"

namespace engram {
namespace {

using json = nlohmann::json;
using testutil::ReadFile;
using testutil::TempDir;
using testutil::WriteFile;

SynthOptions Options(const std::string& preset, uint64_t seed = 0, DType dtype = DType::kBF16) {
  SynthOptions o;
  o.preset = preset;
  o.seed = seed;
  o.dtype = dtype;
  o.progress = false;
  return o;
}

std::vector<float> ToF32(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  ConvertToF32(t.dtype, t.data, out.data(), out.size());
  return out;
}

TEST(Synth, TinyPresetExactValues) {
  auto c = SynthConfig(Options("tiny"));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->intermediate_size, 160);
  EXPECT_EQ(c->num_hidden_layers, 3);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->rope_scaling.has_value());
  EXPECT_EQ(c->bos_token_id, 0);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{1}));
  const EngramConfig& e = *c->engram;
  EXPECT_EQ(e.engram_vocab_size, (std::vector<int64_t>{1000, 1000}));
  EXPECT_EQ(e.max_ngram_size, 3);
  EXPECT_EQ(e.n_embed_per_ngram, 32);
  EXPECT_EQ(e.n_head_per_ngram, 4);
  EXPECT_EQ(e.layer_ids, (std::vector<int>{1}));
  EXPECT_EQ(e.pad_id, 2);
  EXPECT_EQ(e.seed, 0);
  EXPECT_EQ(e.kernel_size, 4);
}

TEST(Synth, OtherPresets) {
  auto q = SynthConfig(Options("tiny-qwen2"));
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ(q->model_type, "qwen2");
  EXPECT_TRUE(q->attention_bias);
  EXPECT_TRUE(q->tie_word_embeddings);
  EXPECT_EQ(q->num_hidden_layers, 2);
  ASSERT_TRUE(q->rope_scaling.has_value());
  EXPECT_EQ(q->rope_scaling->rope_type, "llama3");
  EXPECT_EQ(q->rope_scaling->factor, 8);
  EXPECT_EQ(q->rope_scaling->original_max_position_embeddings, 64);
  EXPECT_EQ(q->engram->layer_ids, (std::vector<int>{0, 1}));
  EXPECT_EQ(q->engram->max_ngram_size, 4);
  EXPECT_EQ(q->engram->engram_vocab_size, (std::vector<int64_t>{700, 800, 900}));

  auto s = SynthConfig(Options("small"));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->vocab_size, 32000);
  EXPECT_EQ(s->hidden_size, 1024);
  EXPECT_EQ(s->num_hidden_layers, 8);
  EXPECT_EQ(s->engram->layer_ids, (std::vector<int>{1, 5}));
  EXPECT_EQ(s->engram->engram_vocab_size, (std::vector<int64_t>{540000, 540000}));

  // Defaults of the dense presets: 4 GB and 8 GB of bf16 tables.
  for (auto [preset, gb] : {std::pair{"dense-4b", 4.0}, std::pair{"dense-8b", 8.0}}) {
    auto d = SynthConfig(Options(preset));
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(d->vocab_size, 128256);
    EXPECT_EQ(d->head_dim, 128);
    EXPECT_EQ(d->engram->layer_ids, (std::vector<int>{1, 15}));
    auto g = ComputeEngramGeometry(*d->engram);
    ASSERT_TRUE(g.ok());
    double bytes = 0;
    for (const auto& layer : *g) bytes += layer.total_rows * 64.0 * 2;
    EXPECT_NEAR(bytes / 1e9, gb, gb * 0.01) << preset;
  }
  auto d8 = SynthConfig(Options("dense-8b"));
  EXPECT_EQ(d8->hidden_size, 4096);
  EXPECT_EQ(d8->intermediate_size, 14336);
  EXPECT_FALSE(d8->tie_word_embeddings);
  auto d4 = SynthConfig(Options("dense-4b"));
  EXPECT_TRUE(d4->tie_word_embeddings);
  EXPECT_EQ(d4->rope_scaling->factor, 32);
}

TEST(Synth, TableGbOverride) {
  SynthOptions o = Options("tiny");
  o.table_gb = 0.01;
  auto c = SynthConfig(o);
  ASSERT_TRUE(c.ok());
  auto g = ComputeEngramGeometry(*c->engram);
  ASSERT_TRUE(g.ok());
  double bytes = 0;
  for (const auto& layer : *g) bytes += layer.total_rows * 8.0 * 2;
  EXPECT_NEAR(bytes, 1e7, 1e5);
}

TEST(Synth, UnknownPresetListsPresets) {
  auto c = SynthConfig(Options("huge"));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            "unknown synth preset \"huge\" (expected one of: tiny, tiny-qwen2, small, dense-4b, "
            "dense-8b, tiny-v41, small-v41, dense-8b-v41)");
  EXPECT_FALSE(ParseSynthDType("fp8").ok());  // the backbone: issue 12
  EXPECT_EQ(*ParseSynthTableDType("fp8"), DType::kF8E4M3);
  EXPECT_EQ(*ParseSynthTableDType("bf16"), DType::kBF16);
  EXPECT_FALSE(ParseSynthTableDType("int8").ok());
  EXPECT_EQ(*ParseSynthDType("F32"), DType::kF32);
}

TEST(Synth, WritesModelDirectory) {
  TempDir dir;
  ASSERT_TRUE(WriteSynthModel(Options("tiny", 3), dir.path()).ok());
  for (const char* f : {"config.json", "model.safetensors", "model-engram-tables.safetensors",
                        "model.safetensors.index.json"}) {
    EXPECT_TRUE(std::filesystem::exists(dir / f)) << f;
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "tokenizer.json"));
  const std::string config = ReadFile(dir / "config.json");
  EXPECT_NE(config.find("\n  \"hidden_size\": 64"), std::string::npos);  // pretty
  json index = json::parse(ReadFile(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"]["model.layers.1.engram.multi_head_embedding.embedding.weight"],
            "model-engram-tables.safetensors");
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], "model.safetensors");
  auto store = TensorStore::OpenDirectory(dir.path());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(store->Names().size(), index["weight_map"].size());
  uint64_t total = 0;
  for (const auto& name : store->Names()) total += store->Info(name)->nbytes;
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
}

TEST(Synth, SameSeedGivesIdenticalFiles) {
  TempDir a, b;
  SynthOptions o = Options("tiny-qwen2", 11);
  ASSERT_TRUE(WriteSynthModel(o, a.path()).ok());
  o.threads = 1;  // thread count must not matter
  ASSERT_TRUE(WriteSynthModel(o, b.path()).ok());
  for (const char* f : {"config.json", "model.safetensors", "model-engram-tables.safetensors",
                        "model.safetensors.index.json"}) {
    EXPECT_EQ(ReadFile(a / f), ReadFile(b / f)) << f;
  }
}

TEST(Synth, DifferentSeedGivesDifferentWeights) {
  auto a = SynthesizeInMemory(Options("tiny", 1));
  auto b = SynthesizeInMemory(Options("tiny", 2));
  ASSERT_TRUE(a.ok() && b.ok());
  for (const std::string& name : a->store.Names()) {
    Tensor ta = *a->store.Get(name), tb = *b->store.Get(name);
    EXPECT_NE(std::memcmp(ta.data, tb.data, ta.nbytes()), 0) << name;
  }
}

// Writes `o` to a directory and synthesizes it in memory with another thread count: every
// tensor agrees byte for byte. Returns the directory's store (kept open by `dir`).
std::optional<TensorStore> ExpectInMemoryEqualsFiles(SynthOptions o, const TempDir& dir) {
  EXPECT_TRUE(WriteSynthModel(o, dir.path()).ok());
  o.threads = 3;
  auto mem = SynthesizeInMemory(o);
  EXPECT_TRUE(mem.ok()) << mem.status().ToString();
  auto files = TensorStore::OpenDirectory(dir.path());
  EXPECT_TRUE(files.ok()) << files.status().ToString();
  if (!mem.ok() || !files.ok()) return std::nullopt;
  EXPECT_EQ(mem->store.Names(), files->Names());
  for (const std::string& name : files->Names()) {
    Tensor f = *files->Get(name), m = *mem->store.Get(name);
    EXPECT_EQ(f.dtype, m.dtype) << name;
    EXPECT_EQ(f.shape, m.shape) << name;
    if (f.nbytes() == m.nbytes()) {
      EXPECT_EQ(std::memcmp(f.data, m.data, f.nbytes()), 0) << name;
    }
  }
  return std::move(files).value();
}

void ExpectInMemoryEqualsFiles(DType dtype) {
  TempDir dir;
  auto files = ExpectInMemoryEqualsFiles(Options("tiny", 5, dtype), dir);
  ASSERT_TRUE(files);
  for (const std::string& name : files->Names()) EXPECT_EQ(files->Info(name)->dtype, dtype);
}

// The V4.1 preset with FP8 tables and wkv: files and memory agree byte for byte (the
// quantization windows do not change the values), the seed decides them, and the scales follow
// the data: they vary from block to block and bring each block's largest value into E4M3.
TEST(Synth, V41Fp8InMemoryEqualsFilesAndScalesFollowTheData) {
  TempDir dir;
  auto files = ExpectInMemoryEqualsFiles(Options("tiny-v41", 5, DType::kF32), dir);
  ASSERT_TRUE(files);
  const std::string table = "model.layers.1.engram.embed.weight";
  const Tensor codes = *files->Get(table);
  const Tensor scales = *files->Get("model.layers.1.engram.embed.scale");
  EXPECT_EQ(codes.dtype, DType::kF8E4M3);
  EXPECT_EQ(files->Get("model.layers.1.engram.wkv.weight")->dtype, DType::kF8E4M3);
  EXPECT_EQ(files->Get("model.layers.1.engram.wkv.scale")->dtype, DType::kF8E8M0);
  EXPECT_EQ(files->Get("model.layers.1.engram.q_weight")->dtype, DType::kF32);
  std::set<uint8_t> distinct;
  int64_t near_max = 0;
  for (int64_t b = 0; b < scales.numel(); ++b) {
    distinct.insert(scales.ptr<uint8_t>()[b]);
    uint8_t top = 0;
    for (int64_t i = 0; i < 32; ++i)
      top = std::max<uint8_t>(top, codes.ptr<uint8_t>()[b * 32 + i] & 0x7f);
    EXPECT_LE(top, 0x7e) << "block " << b;  // never NaN
    near_max += top >= 0x76 ? 1 : 0;        // the largest value lands in the top binade
  }
  EXPECT_GE(distinct.size(), 2u);
  EXPECT_EQ(near_max, scales.numel());
  auto other = SynthesizeInMemory(Options("tiny-v41", 6, DType::kF32));
  ASSERT_TRUE(other.ok());
  EXPECT_NE(std::memcmp(other->store.Get(table)->data, codes.data, codes.nbytes()), 0);
}

TEST(Synth, InMemoryEqualsFilesBF16) { ExpectInMemoryEqualsFiles(DType::kBF16); }
TEST(Synth, InMemoryEqualsFilesF32) { ExpectInMemoryEqualsFiles(DType::kF32); }

TEST(Synth, DistributionsFollowTheScalingRules) {
  auto m = SynthesizeInMemory(Options("tiny", 0, DType::kF32));
  ASSERT_TRUE(m.ok());
  auto stats = [&](const std::string& name) {
    std::vector<float> v = ToF32(*m->store.Get(name));
    double s = 0, s2 = 0;
    for (float x : v) {
      EXPECT_TRUE(std::isfinite(x));
      s += x;
      s2 += double{x} * x;
    }
    const double mean = s / v.size();
    return std::pair{mean, std::sqrt(s2 / v.size() - mean * mean)};
  };
  auto [em, es] = stats("model.embed_tokens.weight");
  EXPECT_NEAR(em, 0, 0.02);
  EXPECT_NEAR(es, 1.0, 0.02);
  auto [qm, qs] = stats("model.layers.0.self_attn.q_proj.weight");
  EXPECT_NEAR(qs, 1 / 8.0, 0.01);
  auto [om, os] = stats("model.layers.0.mlp.down_proj.weight");
  EXPECT_NEAR(os, 1 / std::sqrt(160.0 * 6), 0.003);
  auto [nm, ns] = stats("model.norm.weight");
  EXPECT_NEAR(nm, 1.0, 0.05);
  auto [tm, ts] = stats("model.layers.1.engram.multi_head_embedding.embedding.weight");
  EXPECT_NEAR(ts, 1.0, 0.02);
}

TEST(Synth, TokenizerSetsVocabAndIsCopied) {
  TempDir dir;
  json vocab = json::object();
  for (int i = 0; i < 600; ++i) vocab[fmt::format("t{}", i)] = i;
  json tok = {{"model", {{"type", "BPE"}, {"vocab", vocab}}},
              {"added_tokens",
               {{{"id", 700}, {"content", "<|begin_of_text|>"}, {"special", true}},
                {{"id", 701}, {"content", "<|end_of_text|>"}, {"special", true}}}}};
  WriteFile(dir / "in_tokenizer.json", tok.dump());
  // Its tokenizer_config.json (chat template, special tokens) travels with it.
  const std::string tcfg =
      R"({"bos_token": "<|begin_of_text|>", "chat_template": "{{ bos_token }}{{ messages[0].content }}"})";
  WriteFile(dir / "tokenizer_config.json", tcfg);
  SynthOptions o = Options("tiny");
  o.tokenizer_path = dir / "in_tokenizer.json";
  auto c = SynthConfig(o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->vocab_size, 702);
  EXPECT_EQ(c->bos_token_id, 700);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{701}));
  const std::string out = dir / "model";
  ASSERT_TRUE(WriteSynthModel(o, out).ok());
  EXPECT_EQ(ReadFile(out + "/tokenizer.json"), tok.dump());
  EXPECT_EQ(ReadFile(out + "/tokenizer_config.json"), tcfg);
  auto store = TensorStore::OpenDirectory(out);
  ASSERT_TRUE(store.ok());
  EXPECT_EQ(store->Info("model.embed_tokens.weight")->shape, (std::vector<int64_t>{702, 64}));

  o.tokenizer_path = dir / "missing.json";
  EXPECT_EQ(SynthConfig(o).status().code(), StatusCode::kNotFound);
}

// ---- A plain float reference forward (RoPE left out: it preserves norms) to check that the
// synthetic scaling keeps activations sane through every layer and logits unsaturated.

std::vector<float> MatVec(const std::vector<float>& w, const std::vector<float>& x, size_t out,
                          const std::vector<float>* bias = nullptr) {
  const size_t in = x.size();
  std::vector<float> y(out);
  for (size_t o = 0; o < out; ++o) {
    double s = bias ? (*bias)[o] : 0.0;
    for (size_t i = 0; i < in; ++i) s += double{w[o * in + i]} * x[i];
    y[o] = static_cast<float>(s);
  }
  return y;
}

std::vector<float> RmsNorm(const std::vector<float>& x, const std::vector<float>& w, double eps) {
  double s = 0;
  for (float v : x) s += double{v} * v;
  const double r = 1.0 / std::sqrt(s / x.size() + eps);
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = static_cast<float>(x[i] * r * w[i]);
  return y;
}

double Rms(const std::vector<float>& x) {
  double s = 0;
  for (float v : x) s += double{v} * v;
  return std::sqrt(s / x.size());
}

float Silu(float x) { return x / (1.f + std::exp(-x)); }

struct ForwardStats {
  std::vector<double> residual_rms;  // after each layer (max over tokens)
  double logit_std = 0;              // mean over tokens
  double max_softmax = 0;            // max over tokens
};

ForwardStats ReferenceForward(const SynthModel& m, int T) {
  const ModelConfig& c = m.config;
  auto w = LoadHostWeights(c, m.store);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  auto f = [](const Tensor& t) { return ToF32(t); };
  const size_t H = c.hidden_size, hd = c.head_dim, nq = c.num_attention_heads,
               nkv = c.num_key_value_heads, I = c.intermediate_size;
  std::vector<std::vector<float>> h(T);
  const std::vector<float> embed = f(w->embed);
  for (int t = 0; t < T; ++t) {
    const size_t id = (t * 37 + 5) % c.vocab_size;
    h[t].assign(embed.begin() + id * H, embed.begin() + (id + 1) * H);
  }
  ForwardStats st;
  for (size_t l = 0; l < w->layers.size(); ++l) {
    const LayerWeights& L = w->layers[l];
    if (L.engram) {
      const EngramConfig& ec = *c.engram;
      const EngramWeights& E = *L.engram;
      const std::vector<float> table = f(E.table), vw = f(E.value_w), vb = f(E.value_b),
                               kw = f(E.key_w), kb = f(E.key_b), n1 = f(E.norm_key),
                               n2 = f(E.norm_query), cw = f(E.conv_w), cn = f(E.conv_norm);
      const size_t Dh = ec.head_dim(), nh = ec.num_heads(), rows = E.table.dim(0);
      std::vector<std::vector<float>> V(T), Vn(T);
      for (int t = 0; t < T; ++t) {
        std::vector<float> e;
        for (size_t hh = 0; hh < nh; ++hh) {
          const size_t row = (t * 7919 + hh * 104729 + l) % rows;
          e.insert(e.end(), table.begin() + row * Dh, table.begin() + (row + 1) * Dh);
        }
        auto k = RmsNorm(MatVec(kw, e, H, &kb), n1, ec.norm_eps);
        auto q = RmsNorm(h[t], n2, ec.norm_eps);
        double g = 0;
        for (size_t i = 0; i < H; ++i) g += double{k[i]} * q[i];
        g /= std::sqrt(double(H));
        g = (g < 0 ? -1 : 1) * std::sqrt(std::max(std::abs(g), 1e-6));
        const double a = 1 / (1 + std::exp(-g));
        V[t] = MatVec(vw, e, H, &vb);
        for (float& v : V[t]) v = static_cast<float>(v * a);
        Vn[t] = RmsNorm(V[t], cn, ec.conv_norm_eps);
      }
      const int K = ec.kernel_size, N = ec.max_ngram_size;
      for (int t = 0; t < T; ++t) {
        for (size_t ch = 0; ch < H; ++ch) {
          double s = 0;
          for (int k = 0; k < K; ++k) {
            const int src = t - (K - 1 - k) * N;
            if (src >= 0) s += cw[ch * K + k] * Vn[src][ch];
          }
          h[t][ch] += V[t][ch] + Silu(static_cast<float>(s));
        }
      }
    }
    const std::vector<float> qw = f(L.q_w), kw = f(L.k_w), vw = f(L.v_w), ow = f(L.o_w),
                             in_n = f(L.input_norm), post_n = f(L.post_norm), gw = f(L.gate_w),
                             uw = f(L.up_w), dw = f(L.down_w);
    std::vector<float> qb, kb, vb;
    if (c.attention_bias) qb = f(L.q_b), kb = f(L.k_b), vb = f(L.v_b);
    std::vector<std::vector<float>> q(T), k(T), v(T);
    for (int t = 0; t < T; ++t) {
      auto x = RmsNorm(h[t], in_n, c.rms_norm_eps);
      q[t] = MatVec(qw, x, nq * hd, qb.empty() ? nullptr : &qb);
      k[t] = MatVec(kw, x, nkv * hd, kb.empty() ? nullptr : &kb);
      v[t] = MatVec(vw, x, nkv * hd, vb.empty() ? nullptr : &vb);
    }
    double max_rms = 0;
    for (int t = 0; t < T; ++t) {
      std::vector<float> att(nq * hd, 0.f);
      for (size_t head = 0; head < nq; ++head) {
        const size_t kvh = head / (nq / nkv);
        std::vector<double> s(t + 1);
        double mx = -1e30, z = 0;
        for (int u = 0; u <= t; ++u) {
          double d = 0;
          for (size_t i = 0; i < hd; ++i) d += double{q[t][head * hd + i]} * k[u][kvh * hd + i];
          s[u] = d / std::sqrt(double(hd));
          mx = std::max(mx, s[u]);
        }
        for (int u = 0; u <= t; ++u) z += (s[u] = std::exp(s[u] - mx));
        for (int u = 0; u <= t; ++u) {
          for (size_t i = 0; i < hd; ++i) att[head * hd + i] += s[u] / z * v[u][kvh * hd + i];
        }
      }
      auto o = MatVec(ow, att, H);
      for (size_t i = 0; i < H; ++i) h[t][i] += o[i];
      auto x = RmsNorm(h[t], post_n, c.rms_norm_eps);
      auto g = MatVec(gw, x, I), up = MatVec(uw, x, I);
      for (size_t i = 0; i < I; ++i) g[i] = Silu(g[i]) * up[i];
      auto d = MatVec(dw, g, H);
      for (size_t i = 0; i < H; ++i) h[t][i] += d[i];
      max_rms = std::max(max_rms, Rms(h[t]));
    }
    st.residual_rms.push_back(max_rms);
  }
  const std::vector<float> fn = f(w->final_norm), head = f(w->lm_head);
  for (int t = 0; t < T; ++t) {
    auto logits = MatVec(head, RmsNorm(h[t], fn, c.rms_norm_eps), c.vocab_size);
    double mean = 0, mx = -1e30, z = 0;
    for (float x : logits) mean += x, mx = std::max(mx, double{x});
    mean /= logits.size();
    double var = 0;
    for (float x : logits) var += (x - mean) * (x - mean), z += std::exp(x - mx);
    st.logit_std += std::sqrt(var / logits.size()) / T;
    st.max_softmax = std::max(st.max_softmax, 1 / z);
  }
  return st;
}

void ExpectSaneForward(const SynthOptions& o, int T) {
  auto m = SynthesizeInMemory(o);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ForwardStats st = ReferenceForward(*m, T);
  for (size_t l = 0; l < st.residual_rms.size(); ++l) {
    EXPECT_TRUE(std::isfinite(st.residual_rms[l])) << o.preset << " layer " << l;
    EXPECT_GT(st.residual_rms[l], 0.05) << o.preset << " layer " << l;
    EXPECT_LT(st.residual_rms[l], 10.0) << o.preset << " layer " << l;
  }
  EXPECT_GT(st.logit_std, 0.3) << o.preset;
  EXPECT_LT(st.logit_std, 3.0) << o.preset;
  EXPECT_LT(st.max_softmax, 0.5) << o.preset;  // not saturated
}

TEST(Synth, ActivationsStaySaneTiny) { ExpectSaneForward(Options("tiny"), 16); }
TEST(Synth, ActivationsStaySaneTinyQwen2) { ExpectSaneForward(Options("tiny-qwen2"), 16); }
TEST(Synth, ActivationsStaySaneSmall) {
  SynthOptions o = Options("small");
  o.table_gb = 0.01;  // the backbone is what matters here
  ExpectSaneForward(o, 4);
}

}  // namespace
}  // namespace engram
