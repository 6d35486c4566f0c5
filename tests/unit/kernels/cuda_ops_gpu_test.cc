// CUDA backend ops against float64 references computed here, on fresh random data with odd
// sizes. Host C++ through backend.h only; every test skips when no CUDA backend can be made
// (not built, or no GPU visible).
//
// Tolerances (relative Frobenius error ‖out − ref‖ / ‖ref‖ unless noted):
//  - kF32Tol = 1e-5 for F32 kernels (reductions and transcendental functions in F32);
//  - kBf16GemmTol = 1e-2 for Linear with BF16 weights: x and W are rounded to BF16 (8-bit
//    mantissa, 2^-9 relative each), products accumulate in F32; measured ~3e-3;
//  - exact equality where the op only moves or widens values (gathers, copies, Add) or picks
//    one (ArgmaxRows, against the CPU backend).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../../support/gpu_error.h"
#include "common/dtype.h"
#include "common/fp8.h"
#include "kernels/backend.h"

namespace engram {
namespace {

constexpr double kF32Tol = 1e-5;
constexpr double kBf16GemmTol = 1e-2;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

using testutil::RelErr;

void Report(const std::string& what, double err, double tol) {
  testutil::ReportError(what, err, tol);
}

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double Silu(double x) { return x * Sigmoid(x); }

// One sequence's part of a step: tokens [start, start + n) of the sequence.
struct SeqChunk {
  int start = 0;
  int n = 0;
  std::vector<int32_t> blocks;  // the sequence's block table
  int32_t state_slot = 0;
};

BatchLayout MakeLayout(const std::vector<SeqChunk>& seqs, int block_size, int max_blocks) {
  BatchLayout l;
  l.block_size = block_size;
  l.max_blocks_per_seq = max_blocks;
  l.seq_token_start.push_back(0);
  for (size_t s = 0; s < seqs.size(); ++s) {
    const SeqChunk& c = seqs[s];
    for (int p = c.start; p < c.start + c.n; ++p) {
      l.token_ids.push_back(p % 7);
      l.positions.push_back(p);
      l.seq_of_token.push_back(static_cast<int32_t>(s));
      l.slot_mapping.push_back(c.blocks.at(p / block_size) * block_size + p % block_size);
    }
    l.seq_token_start.push_back(l.num_tokens());
    l.context_lens.push_back(c.start + c.n);
    l.state_slots.push_back(c.state_slot);
    for (int b = 0; b < max_blocks; ++b) {
      // Unused entries are -1: a kernel that reads one flags an error.
      l.block_tables.push_back(b < static_cast<int>(c.blocks.size()) ? c.blocks[b] : -1);
    }
    l.logit_rows.push_back(l.num_tokens() - 1);
  }
  return l;
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = CreateBackend({.kind = "cuda"});
    if (!r.ok()) GTEST_SKIP() << "CUDA backend unavailable: " << r.status().ToString();
    be_ = std::move(r).value();
    rng_.seed(static_cast<uint32_t>(
        std::hash<std::string>{}(::testing::UnitTest::GetInstance()->current_test_info()->name())));
  }

  std::vector<float> Random(size_t n, float lo = -1.f, float hi = 1.f) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng_);
    return v;
  }

  template <typename T>
  Tensor Upload(const std::vector<T>& v, DType dtype, std::vector<int64_t> shape) {
    auto r = be_->Alloc(dtype, std::move(shape));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    Tensor t = std::move(r).value();
    EXPECT_EQ(t.nbytes(), v.size() * sizeof(T));
    const Status st = be_->CopyFromHost(v.data(), t);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return t;
  }
  Tensor UploadF32(const std::vector<float>& v, std::vector<int64_t> shape) {
    return Upload(v, DType::kF32, std::move(shape));
  }
  // An F32 device tensor filled with NaN, so unwritten outputs show.
  Tensor Poisoned(std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return UploadF32(std::vector<float>(static_cast<size_t>(n), kNaN), std::move(shape));
  }
  std::vector<float> Download(const Tensor& t) {
    std::vector<float> v(static_cast<size_t>(t.numel()));
    const Status st = be_->CopyToHost(t, v.data());
    EXPECT_TRUE(st.ok()) << st.ToString();
    return v;
  }
  Tensor Prepare(std::vector<float>& host, std::vector<int64_t> shape, WeightUse use) {
    auto r = be_->PrepareWeight(HostView(host.data(), DType::kF32, std::move(shape)), use);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return std::move(r).value();
  }

  void RunPagedAttention(int nq, int nkv, int hd, const char* label);

  std::unique_ptr<Backend> be_;
  std::mt19937 rng_;
};

TEST_F(CudaOps, CopyRoundTripAndAllocZeros) {
  std::vector<float> a = Random(7 * 13);
  Tensor t = UploadF32(a, {7, 13});
  EXPECT_EQ(t.device, Device::kCuda);
  EXPECT_EQ(Download(t), a);
  auto z = be_->AllocZeros(DType::kF32, {5, 3});
  ASSERT_TRUE(z.ok()) << z.status().ToString();
  EXPECT_EQ(Download(*z), std::vector<float>(15, 0.f));
  EXPECT_EQ(be_->kv_dtype(), DType::kF32);
  EXPECT_EQ(be_->name(), "cuda");
}

TEST_F(CudaOps, UploadLayoutMirrorsArraysAcrossGrowingSteps) {
  for (int n : {3, 40, 7}) {
    BatchLayout l = MakeLayout({{.start = 5, .n = n, .blocks = {4, 1, 9, 2}, .state_slot = 1},
                                {.start = 0, .n = 2, .blocks = {3}, .state_slot = 0}},
                               16, 4);
    ASSERT_OK(be_->UploadLayout(l));
    ASSERT_EQ(l.dev.positions.device, Device::kCuda);
    std::vector<int32_t> pos(l.positions.size()), bt(l.block_tables.size()),
        starts(l.seq_token_start.size());
    ASSERT_OK(be_->CopyToHost(l.dev.positions, pos.data()));
    ASSERT_OK(be_->CopyToHost(l.dev.block_tables, bt.data()));
    ASSERT_OK(be_->CopyToHost(l.dev.seq_token_start, starts.data()));
    EXPECT_EQ(pos, l.positions);
    EXPECT_EQ(bt, l.block_tables);
    EXPECT_EQ(starts, l.seq_token_start);
    EXPECT_EQ(l.dev.block_tables.shape, (std::vector<int64_t>{2, 4}));
  }
}

TEST_F(CudaOps, EmbeddingF32Bf16AndF16Tables) {
  const int64_t V = 37, D = 67, T = 11;
  std::vector<float> table = Random(V * D);
  std::vector<int32_t> ids(T);
  std::uniform_int_distribution<int32_t> pick(0, V - 1);
  for (int32_t& i : ids) i = pick(rng_);
  Tensor dev_ids = Upload(ids, DType::kI32, {T});

  Tensor tf = Prepare(table, {V, D}, WeightUse::kEmbedding);
  Tensor out = Poisoned({T, D});
  ASSERT_OK(be_->Embedding(tf, dev_ids, out));
  std::vector<float> got = Download(out);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t d = 0; d < D; ++d) ASSERT_EQ(got[t * D + d], table[ids[t] * D + d]);
  }

  // BF16 and F16 tables stay 16-bit on the device (a resident F16 Engram table takes its own
  // size in HBM) and are widened on read.
  for (const DType dt : {DType::kBF16, DType::kF16}) {
    const bool bf16 = dt == DType::kBF16;
    std::vector<uint16_t> h(table.size());
    for (size_t i = 0; i < h.size(); ++i) h[i] = bf16 ? F32ToBf16(table[i]) : F32ToF16(table[i]);
    auto th = be_->PrepareWeight(HostView(h.data(), dt, {V, D}), WeightUse::kEmbedding);
    ASSERT_TRUE(th.ok()) << th.status().ToString();
    EXPECT_EQ(th->dtype, dt);
    out = Poisoned({T, D});
    ASSERT_OK(be_->Embedding(*th, dev_ids, out));
    got = Download(out);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t d = 0; d < D; ++d) {
        const uint16_t v = h[ids[t] * D + d];
        ASSERT_EQ(got[t * D + d], bf16 ? Bf16ToF32(v) : F16ToF32(v)) << DTypeName(dt);
      }
    }
  }

  // An id outside [0, V) is found on the device and reported by the next wait.
  ids[3] = static_cast<int32_t>(V);
  Tensor bad = Upload(ids, DType::kI32, {T});
  ASSERT_OK(be_->Embedding(tf, bad, out));
  EXPECT_EQ(be_->Synchronize().code(), StatusCode::kOutOfRange);
  ASSERT_OK(be_->Synchronize());  // reported once
}

TEST_F(CudaOps, RmsNormMatchesReference) {
  for (int64_t D : {131, 256}) {  // scalar and 16-byte vector paths
    const int64_t R = 7;
    const float eps = 1e-6f;
    std::vector<float> x = Random(R * D, -3.f, 3.f), w = Random(D, 0.5f, 1.5f);
    Tensor dx = UploadF32(x, {R, D});
    Tensor dw = Prepare(w, {D}, WeightUse::kVector);
    Tensor out = Poisoned({R, D});
    ASSERT_OK(be_->RmsNorm(dx, dw, eps, out));
    std::vector<double> ref(R * D);
    for (int64_t r = 0; r < R; ++r) {
      double ss = 0;
      for (int64_t d = 0; d < D; ++d) ss += double(x[r * D + d]) * x[r * D + d];
      const double inv = 1.0 / std::sqrt(ss / D + eps);
      for (int64_t d = 0; d < D; ++d) ref[r * D + d] = x[r * D + d] * inv * w[d];
    }
    Report(D == 131 ? "RmsNorm D=131" : "RmsNorm D=256", RelErr(Download(out), ref), kF32Tol);
    ASSERT_OK(be_->RmsNorm(dx, dw, eps, dx));  // in place
    Report("RmsNorm in place", RelErr(Download(dx), ref), kF32Tol);
  }
}

TEST_F(CudaOps, LinearBf16WeightsWithAndWithoutBias) {
  struct Case {
    int64_t M, K, N;
    bool bias;
  };
  for (const Case& c :
       {Case{5, 67, 33, false}, Case{13, 256, 384, true}, Case{1, 1000, 77, true}}) {
    std::vector<float> x = Random(c.M * c.K), w = Random(c.N * c.K), b = Random(c.N);
    Tensor dx = UploadF32(x, {c.M, c.K});
    Tensor dw = Prepare(w, {c.N, c.K}, WeightUse::kLinear);
    EXPECT_EQ(dw.dtype, DType::kBF16);
    Tensor db = Prepare(b, {c.N}, WeightUse::kVector);
    Tensor out = Poisoned({c.M, c.N});
    ASSERT_OK(be_->Linear(dx, dw, c.bias ? &db : nullptr, out));
    std::vector<double> ref(c.M * c.N);
    for (int64_t m = 0; m < c.M; ++m) {
      for (int64_t n = 0; n < c.N; ++n) {
        double s = c.bias ? b[n] : 0.0;
        for (int64_t k = 0; k < c.K; ++k) s += double(x[m * c.K + k]) * w[n * c.K + k];
        ref[m * c.N + n] = s;
      }
    }
    char name[64];
    std::snprintf(name, sizeof name, "Linear BF16 %ldx%ldx%ld%s", long(c.M), long(c.K), long(c.N),
                  c.bias ? " +bias" : "");
    Report(name, RelErr(Download(out), ref), kBf16GemmTol);
  }
}

TEST_F(CudaOps, LinearF32DeviceWeightIsExactF32) {
  const int64_t M = 9, K = 67, N = 21;
  std::vector<float> x = Random(M * K), w = Random(N * K);
  Tensor dx = UploadF32(x, {M, K}), dw = UploadF32(w, {N, K});
  Tensor out = Poisoned({M, N});
  ASSERT_OK(be_->Linear(dx, dw, nullptr, out));
  std::vector<double> ref(M * N);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += double(x[m * K + k]) * w[n * K + k];
      ref[m * N + n] = s;
    }
  }
  Report("Linear F32 9x67x21", RelErr(Download(out), ref), kF32Tol);
}

TEST_F(CudaOps, AddAndSwiGlu) {
  for (int64_t n : {7 * 13, 8 * 16}) {
    std::vector<float> x = Random(n), y = Random(n);
    Tensor dx = UploadF32(x, {n}), dy = UploadF32(y, {n});
    ASSERT_OK(be_->Add(dx, dy));
    std::vector<float> got = Download(dx);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], x[i] + y[i]);
  }
  const int64_t T = 9, I = 75;
  std::vector<float> gu = Random(T * 2 * I, -6.f, 6.f);
  Tensor dgu = UploadF32(gu, {T, 2 * I});
  Tensor out = Poisoned({T, I});
  ASSERT_OK(be_->SwiGlu(dgu, out));
  std::vector<double> ref(T * I);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < I; ++i)
      ref[t * I + i] = Silu(gu[t * 2 * I + i]) * gu[t * 2 * I + I + i];
  }
  Report("SwiGlu 9x75", RelErr(Download(out), ref), kF32Tol);
}

TEST_F(CudaOps, RopeRotatesQAndKHeadsOnly) {
  const int nq = 4, nkv = 2, hd = 64, half = hd / 2;
  const int64_t row = (nq + 2 * nkv) * hd;
  // Two sequences at large positions (angles of thousands of radians).
  BatchLayout l = MakeLayout({{.start = 5000, .n = 6, .blocks = std::vector<int32_t>(400, 0)},
                              {.start = 123, .n = 5, .blocks = std::vector<int32_t>(400, 1)}},
                             16, 400);
  ASSERT_OK(be_->UploadLayout(l));
  const int64_t T = l.num_tokens();
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) inv[i] = 1.f / std::pow(10000.f, 2.f * i / hd);
  std::vector<float> qkv = Random(T * row);
  Tensor dq = UploadF32(qkv, {T, row});
  RopeParams p{.num_q_heads = nq,
               .num_kv_heads = nkv,
               .head_dim = hd,
               .inv_freq = Prepare(inv, {half}, WeightUse::kVector)};
  ASSERT_OK(be_->Rope(dq, l, p));
  std::vector<float> got = Download(dq);
  std::vector<double> ref(qkv.begin(), qkv.end());
  for (int64_t t = 0; t < T; ++t) {
    for (int h = 0; h < nq + nkv; ++h) {
      for (int i = 0; i < half; ++i) {
        const float angle = static_cast<float>(l.positions[t]) * inv[i];  // F32, as HF
        const double c = std::cos(double(angle)), s = std::sin(double(angle));
        const size_t a = t * row + h * hd + i, b = a + half;
        ref[a] = qkv[a] * c - double(qkv[b]) * s;
        ref[b] = qkv[b] * c + double(qkv[a]) * s;
      }
    }
    for (int64_t e = (nq + nkv) * hd; e < row; ++e) ASSERT_EQ(got[t * row + e], qkv[t * row + e]);
  }
  Report("Rope nq=4 nkv=2 hd=64", RelErr(got, ref), kF32Tol);
}

// Paged attention over several steps (prefill chunks, then decodes) of two sequences whose
// blocks are scattered through the cache, against a float64 reference keeping each sequence's
// full K/V history.
void CudaOps::RunPagedAttention(int nq, int nkv, int hd, const char* label) {
  CudaOps* t = this;
  Backend& be = *be_;
  std::mt19937& rng = rng_;
  const int block_size = 16, num_blocks = 40, max_blocks = 8;
  const int64_t row = (nq + 2 * nkv) * hd;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<std::vector<int32_t>> blocks = {
      std::vector<int32_t>(perm.begin(), perm.begin() + max_blocks),
      std::vector<int32_t>(perm.begin() + max_blocks, perm.begin() + 2 * max_blocks)};
  Tensor kc = t->Poisoned({num_blocks, block_size, nkv, hd});  // unwritten slots are NaN
  Tensor vc = t->Poisoned({num_blocks, block_size, nkv, hd});
  AttentionParams p{
      .num_q_heads = nq, .num_kv_heads = nkv, .head_dim = hd, .scale = 1.f / std::sqrt(float(hd))};
  std::vector<std::vector<std::vector<float>>> hist_k(2), hist_v(2);  // [seq][pos][nkv*hd]
  // Steps: (start, n) per sequence; n = 0 leaves a sequence out of the step.
  const int steps[][2][2] = {{{0, 30}, {0, 20}},
                             {{30, 1}, {20, 37}},
                             {{31, 1}, {57, 1}},
                             {{32, 17}, {58, 1}},
                             {{49, 1}, {0, 0}}};
  double worst = 0;
  for (const auto& step : steps) {
    std::vector<SeqChunk> seqs;
    std::vector<int> which;
    for (int s = 0; s < 2; ++s) {
      if (step[s][1] == 0) continue;
      seqs.push_back({.start = step[s][0], .n = step[s][1], .blocks = blocks[s]});
      which.push_back(s);
    }
    BatchLayout l = MakeLayout(seqs, block_size, max_blocks);
    ASSERT_OK(be.UploadLayout(l));
    const int64_t T = l.num_tokens();
    std::vector<float> qkv = t->Random(T * row);
    Tensor dq = t->UploadF32(qkv, {T, row});
    Tensor out = t->Poisoned({T, int64_t{nq} * hd});
    ASSERT_OK(be.PagedAttention(dq, kc, vc, l, p, out));
    for (int64_t i = 0; i < T; ++i) {
      const int s = which[l.seq_of_token[i]];
      const float* k = &qkv[i * row + nq * hd];
      hist_k[s].emplace_back(k, k + nkv * hd);
      hist_v[s].emplace_back(k + nkv * hd, k + 2 * nkv * hd);
    }
    std::vector<double> ref(T * nq * hd);
    for (int64_t i = 0; i < T; ++i) {
      const int s = which[l.seq_of_token[i]];
      const int ctx = l.positions[i] + 1;
      for (int h = 0; h < nq; ++h) {
        const int kvh = h / (nq / nkv);
        std::vector<double> sc(ctx);
        double mx = -1e300;
        for (int j = 0; j < ctx; ++j) {
          double d = 0;
          for (int e = 0; e < hd; ++e)
            d += double(qkv[i * row + h * hd + e]) * hist_k[s][j][kvh * hd + e];
          sc[j] = d * p.scale;
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (double& x : sc) sum += (x = std::exp(x - mx));
        for (int e = 0; e < hd; ++e) {
          double o = 0;
          for (int j = 0; j < ctx; ++j) o += sc[j] * hist_v[s][j][kvh * hd + e];
          ref[(i * nq + h) * hd + e] = o / sum;
        }
      }
    }
    worst = std::max(worst, RelErr(t->Download(out), ref));
  }
  Report(label, worst, kF32Tol);
  // The caches hold each position's k and v at its slot, bit for bit.
  std::vector<float> kh = t->Download(kc), vh = t->Download(vc);
  for (int s = 0; s < 2; ++s) {
    for (size_t pos = 0; pos < hist_k[s].size(); ++pos) {
      const int64_t slot = int64_t{blocks[s][pos / block_size]} * block_size + pos % block_size;
      for (int e = 0; e < nkv * hd; ++e) {
        ASSERT_EQ(kh[slot * nkv * hd + e], hist_k[s][pos][e]);
        ASSERT_EQ(vh[slot * nkv * hd + e], hist_v[s][pos][e]);
      }
    }
  }
  ASSERT_OK(be.Synchronize());  // no kernel met an unusable slot
}

TEST_F(CudaOps, PagedAttentionPrefillChunksThenDecodeGqa) {
  RunPagedAttention(8, 2, 64, "PagedAttention nq=8 nkv=2 hd=64");
  RunPagedAttention(6, 3, 42, "PagedAttention nq=6 nkv=3 hd=42");
  RunPagedAttention(4, 4, 128, "PagedAttention nq=nkv=4 hd=128");
}

TEST_F(CudaOps, GatherRowsF32AndBf16) {
  const int64_t R = 50, T = 7, H = 3;
  std::vector<int64_t> rows(T * H);
  std::uniform_int_distribution<int64_t> pick(0, R - 1);
  for (int64_t& r : rows) r = pick(rng_);
  Tensor dr = Upload(rows, DType::kI64, {T, H});
  for (int64_t Dh : {64, 37, 32, 13}) {
    for (bool bf16 : {false, true}) {
      std::vector<float> table = Random(R * Dh);
      std::vector<uint16_t> bf(table.size());
      for (size_t i = 0; i < bf.size(); ++i) bf[i] = F32ToBf16(table[i]);
      auto dt = bf16 ? be_->PrepareWeight(HostView(bf.data(), DType::kBF16, {R, Dh}),
                                          WeightUse::kEmbedding)
                     : be_->PrepareWeight(HostView(table.data(), DType::kF32, {R, Dh}),
                                          WeightUse::kEmbedding);
      ASSERT_TRUE(dt.ok()) << dt.status().ToString();
      Tensor out = Poisoned({T, H * Dh});
      ASSERT_OK(be_->GatherRows(*dt, dr, out));
      std::vector<float> got = Download(out);
      for (int64_t i = 0; i < T * H; ++i) {
        for (int64_t e = 0; e < Dh; ++e) {
          const float want = bf16 ? Bf16ToF32(bf[rows[i] * Dh + e]) : table[rows[i] * Dh + e];
          ASSERT_EQ(got[i * Dh + e], want) << "Dh=" << Dh << " bf16=" << bf16;
        }
      }
    }
  }
  // An F16 table in device memory as the dram/nvme tiers' arena holds it (not prepared).
  for (int64_t Dh : {64, 13}) {
    std::vector<float> table = Random(R * Dh);
    std::vector<uint16_t> h(table.size());
    for (size_t i = 0; i < h.size(); ++i) h[i] = F32ToF16(table[i]);
    auto dt = be_->Alloc(DType::kF16, {R, Dh});
    ASSERT_TRUE(dt.ok()) << dt.status().ToString();
    ASSERT_OK(be_->CopyFromHost(h.data(), *dt));
    Tensor out = Poisoned({T, H * Dh});
    ASSERT_OK(be_->GatherRows(*dt, dr, out));
    std::vector<float> got = Download(out);
    for (int64_t i = 0; i < T * H; ++i) {
      for (int64_t e = 0; e < Dh; ++e) {
        ASSERT_EQ(got[i * Dh + e], F16ToF32(h[rows[i] * Dh + e])) << "F16 Dh=" << Dh;
      }
    }
  }
  // A row outside the table is found on the device and reported by the next wait.
  std::vector<float> table = Random(R * 16);
  Tensor dt = Prepare(table, {R, 16}, WeightUse::kEmbedding);
  rows[4] = R;
  Tensor bad = Upload(rows, DType::kI64, {T, H});
  Tensor out = Poisoned({T, H * 16});
  ASSERT_OK(be_->GatherRows(dt, bad, out));
  EXPECT_EQ(be_->Synchronize().code(), StatusCode::kOutOfRange);
}

// Bitwise equal, except that a NaN of the reference need only be a NaN.
bool SameFloat(float got, float want) {
  if (std::isnan(want)) return std::isnan(got);
  uint32_t a, b;
  std::memcpy(&a, &got, 4);
  std::memcpy(&b, &want, 4);
  return a == b;
}

TEST_F(CudaOps, GatherRowsDequantizesPackedFp8Rows) {
  const int64_t R = 61, T = 9, H = 4;
  std::uniform_int_distribution<int> byte(0, 255);
  for (int64_t Dh : {256, 32, 64, 128}) {
    const int64_t rb = static_cast<int64_t>(Fp8RowBytes(Dh));
    // Random codes (NaN and subnormal codes included); scales over the whole range, the
    // extremes (0 = 2^-127, 254, 255 = NaN) in the first blocks.
    std::vector<uint8_t> table(R * rb);
    for (auto& b : table) b = static_cast<uint8_t>(byte(rng_));
    const uint8_t extremes[] = {0, 1, 127, 254, 255};
    for (int64_t r = 0; r < 5; ++r) table[r * rb + Dh] = extremes[r];
    std::vector<int64_t> rows(T * H);
    std::uniform_int_distribution<int64_t> pick(0, R - 1);
    for (int64_t& r : rows) r = pick(rng_);
    for (int64_t i = 0; i < 5; ++i) rows[i] = i;
    rows[5] = R - 1;
    Tensor dr = Upload(rows, DType::kI64, {T, H});
    auto check = [&](const Tensor& t, const uint8_t* host, const char* where) {
      Tensor out = Poisoned({T, H * Dh});
      ASSERT_OK(be_->GatherRows(t, dr, out));
      const std::vector<float> got = Download(out);
      std::vector<float> want(Dh);
      for (int64_t i = 0; i < T * H; ++i) {
        const uint8_t* row = host + rows[i] * rb;
        DequantFp8Row(row, row + Dh, Dh, want.data());
        for (int64_t e = 0; e < Dh; ++e) {
          ASSERT_TRUE(SameFloat(got[i * Dh + e], want[e]))
              << where << " Dh=" << Dh << " row " << i << " value " << e << ": " << got[i * Dh + e]
              << " vs " << want[e] << " (code " << int{row[e]} << ", scale "
              << int{row[Dh + e / 32]} << ")";
        }
      }
    };
    // Device memory (PrepareWeight copies the bytes as stored).
    auto dt =
        be_->PrepareWeight(HostView(table.data(), DType::kU8, {R, rb}), WeightUse::kEmbedding);
    ASSERT_TRUE(dt.ok()) << dt.status().ToString();
    EXPECT_EQ(dt->dtype, DType::kU8);
    check(*dt, table.data(), "device");
    // A view one row in: rows of 33 or 66 bytes start at odd or 2-byte-aligned addresses.
    check(dt->Rows(1, R), table.data() + rb, "device view");
    // Pinned mapped host memory, read in place over the bus.
    auto pinned = be_->AllocHostStaging(DType::kU8, {R, rb});
    ASSERT_TRUE(pinned.ok()) << pinned.status().ToString();
    std::memcpy(pinned->data, table.data(), table.size());
    check(*pinned, table.data(), "pinned host");
  }
  // Shape checks name the operand and what was expected.
  const int64_t Dh = 128, rb = static_cast<int64_t>(Fp8RowBytes(Dh));
  std::vector<uint8_t> bytes(R * rb, 0x38);
  auto dt = be_->PrepareWeight(HostView(bytes.data(), DType::kU8, {R, rb}), WeightUse::kEmbedding);
  ASSERT_TRUE(dt.ok()) << dt.status().ToString();
  std::vector<int64_t> rows(T * H, 3);
  Tensor dr = Upload(rows, DType::kI64, {T, H});
  auto invalid = [&](const Tensor& t, Tensor o, const char* needle) {
    const Status st = be_->GatherRows(t, dr, o);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    EXPECT_NE(st.message().find(needle), std::string::npos) << st.message();
  };
  invalid(dt->Rows(0, R), Poisoned({T, H * 96 + 1}), "out");
  invalid(*dt, Poisoned({T, H * 48}), "multiple of 32");
  invalid(*dt, Poisoned({T, H * 64}), "[rows, 66]");
  ASSERT_OK(be_->Synchronize());
  // A row outside the table: NaN, reported by the next wait.
  rows[2] = R;
  Tensor bad = Upload(rows, DType::kI64, {T, H});
  Tensor out = Poisoned({T, H * Dh});
  ASSERT_OK(be_->GatherRows(*dt, bad, out));
  EXPECT_EQ(be_->Synchronize().code(), StatusCode::kOutOfRange);
  const std::vector<float> got = Download(out);
  EXPECT_TRUE(std::isnan(got[2 * Dh]));
  EXPECT_EQ(got[0], 1.f * E8M0ToF32(0x38));
}

TEST_F(CudaOps, GatherRowsFromPageableHostTableReadsOrRefuses) {
  // Pinned tables are the tiering layer's case (tested there). Pageable memory is readable
  // only where the GPU has HMM/ATS; elsewhere the op must refuse it by name.
  const int64_t R = 20, Dh = 24, T = 5, H = 2;
  Tensor table = HostTensor(DType::kF32, {R, Dh});
  std::vector<float> vals = Random(R * Dh);
  std::copy(vals.begin(), vals.end(), table.ptr<float>());
  std::vector<int64_t> rows(T * H);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = (i * 7) % R;
  Tensor dr = Upload(rows, DType::kI64, {T, H});
  Tensor out = Poisoned({T, H * Dh});
  const Status st = be_->GatherRows(table, dr, out);
  if (!st.ok()) {
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    std::printf("[  info    ] pageable host table refused: %s\n", st.ToString().c_str());
    return;
  }
  std::vector<float> got = Download(out);
  for (int64_t i = 0; i < T * H; ++i) {
    for (int64_t e = 0; e < Dh; ++e) ASSERT_EQ(got[i * Dh + e], vals[rows[i] * Dh + e]);
  }
}

TEST_F(CudaOps, EngramGateMatchesReference) {
  const int64_t T = 9, D = 131;
  const float eps = 1e-6f;
  std::vector<float> k = Random(T * D, -2.f, 2.f), h = Random(T * D, -2.f, 2.f), v = Random(T * D),
                     wk = Random(D, 0.5f, 1.5f), wq = Random(D, 0.5f, 1.5f);
  Tensor dk = UploadF32(k, {T, D}), dh = UploadF32(h, {T, D}), dv = UploadF32(v, {T, D});
  Tensor dwk = Prepare(wk, {D}, WeightUse::kVector), dwq = Prepare(wq, {D}, WeightUse::kVector);
  ASSERT_OK(be_->EngramGate(dk, dh, dwk, dwq, eps, dv));
  std::vector<double> ref(T * D);
  for (int64_t t = 0; t < T; ++t) {
    double sk = 0, sh = 0;
    for (int64_t d = 0; d < D; ++d) {
      sk += double(k[t * D + d]) * k[t * D + d];
      sh += double(h[t * D + d]) * h[t * D + d];
    }
    const double ik = 1 / std::sqrt(sk / D + eps), ih = 1 / std::sqrt(sh / D + eps);
    double g = 0;
    for (int64_t d = 0; d < D; ++d) g += (k[t * D + d] * ik * wk[d]) * (h[t * D + d] * ih * wq[d]);
    g /= std::sqrt(double(D));
    g = (g > 0 ? 1 : g < 0 ? -1 : 0) * std::sqrt(std::max(std::abs(g), 1e-6));
    for (int64_t d = 0; d < D; ++d) ref[t * D + d] = v[t * D + d] * Sigmoid(g);
  }
  Report("EngramGate 9x131", RelErr(Download(dv), ref), kF32Tol);
}

// ShortConv over two sequences: all tokens in one step, then the same tokens in chunks and
// single-token decodes; the chunked run must equal the whole run, and both the reference.
TEST_F(CudaOps, EngramShortConvChunkedEqualsWhole) {
  const int64_t D = 67;
  const EngramConvParams p{.kernel_size = 4, .dilation = 3, .norm_eps = 1e-5f};
  const int W = (p.kernel_size - 1) * p.dilation;
  const int len[2] = {23, 17};
  const int32_t slot[2] = {2, 0};
  const int64_t num_slots = 3;
  std::vector<std::vector<float>> v(2), h(2);
  for (int s = 0; s < 2; ++s) {
    v[s] = Random(len[s] * D, -2.f, 2.f);
    h[s] = Random(len[s] * D);
  }
  std::vector<float> nw = Random(D, 0.5f, 1.5f), cw = Random(D * p.kernel_size);
  Tensor dnw = Prepare(nw, {D}, WeightUse::kVector);
  Tensor dcw = Prepare(cw, {D, p.kernel_size}, WeightUse::kVector);

  // float64 reference over whole sequences.
  std::vector<std::vector<double>> ref_h(2), ref_x(2);
  for (int s = 0; s < 2; ++s) {
    ref_x[s].resize(len[s] * D);
    ref_h[s].resize(len[s] * D);
    for (int t = 0; t < len[s]; ++t) {
      double ss = 0;
      for (int64_t c = 0; c < D; ++c) ss += double(v[s][t * D + c]) * v[s][t * D + c];
      const double inv = 1 / std::sqrt(ss / D + p.norm_eps);
      for (int64_t c = 0; c < D; ++c) ref_x[s][t * D + c] = v[s][t * D + c] * inv * nw[c];
    }
    for (int t = 0; t < len[s]; ++t) {
      for (int64_t c = 0; c < D; ++c) {
        double y = 0;
        for (int i = 0; i < p.kernel_size; ++i) {
          const int q = t - (p.kernel_size - 1 - i) * p.dilation;
          if (q >= 0) y += cw[c * p.kernel_size + i] * ref_x[s][q * D + c];
        }
        ref_h[s][t * D + c] = h[s][t * D + c] + v[s][t * D + c] + Silu(y);
      }
    }
  }

  // Runs the steps; each step lists (start, n) per sequence. Returns h per sequence.
  using Step = std::array<std::array<int, 2>, 2>;  // (start, n) per sequence
  auto run = [&](const std::vector<Step>& steps, Tensor& state,
                 std::vector<std::vector<float>>& out) {
    out = {std::vector<float>(len[0] * D), std::vector<float>(len[1] * D)};
    for (const auto& step : steps) {
      std::vector<SeqChunk> seqs;
      std::vector<int> which;
      for (int s = 0; s < 2; ++s) {
        if (step[s][1] == 0) continue;
        seqs.push_back(
            {.start = step[s][0], .n = step[s][1], .blocks = {0, 0}, .state_slot = slot[s]});
        which.push_back(s);
      }
      BatchLayout l = MakeLayout(seqs, 16, 2);
      ASSERT_OK(be_->UploadLayout(l));
      const int64_t T = l.num_tokens();
      std::vector<float> sv(T * D), sh(T * D);
      for (int64_t i = 0; i < T; ++i) {
        const int s = which[l.seq_of_token[i]];
        std::copy_n(&v[s][l.positions[i] * D], D, &sv[i * D]);
        std::copy_n(&h[s][l.positions[i] * D], D, &sh[i * D]);
      }
      Tensor dv = UploadF32(sv, {T, D}), dh = UploadF32(sh, {T, D});
      ASSERT_OK(be_->EngramShortConv(dv, dnw, dcw, p, l, state, dh));
      std::vector<float> got = Download(dh);
      for (int64_t i = 0; i < T; ++i) {
        const int s = which[l.seq_of_token[i]];
        std::copy_n(&got[i * D], D, &out[s][l.positions[i] * D]);
      }
    }
    ASSERT_OK(be_->Synchronize());
  };

  // States start as NaN: only positions before 0 may be treated as zero, never read.
  Tensor whole_state = Poisoned({num_slots, W, D});
  std::vector<std::vector<float>> whole, chunked;
  run({Step{{{0, len[0]}, {0, len[1]}}}}, whole_state, whole);
  for (int s = 0; s < 2; ++s) {
    Report(s == 0 ? "EngramShortConv whole, seq A" : "EngramShortConv whole, seq B",
           RelErr(whole[s], ref_h[s]), kF32Tol);
  }
  Tensor chunk_state = Poisoned({num_slots, W, D});
  run({Step{{{0, 5}, {0, 1}}}, Step{{{5, 1}, {1, 9}}}, Step{{{6, 1}, {10, 1}}},
       Step{{{7, 8}, {11, 6}}}, Step{{{15, 8}, {0, 0}}}},
      chunk_state, chunked);
  for (int s = 0; s < 2; ++s) {
    double diff = 0;
    for (size_t i = 0; i < whole[s].size(); ++i) {
      diff = std::max(diff, double(std::abs(whole[s][i] - chunked[s][i])));
    }
    EXPECT_LE(diff, 1e-6) << "chunked differs from whole for sequence " << s;
  }
  // Both states hold x of each sequence's last W positions at position mod W.
  std::vector<float> ws = Download(whole_state), cs = Download(chunk_state);
  for (int s = 0; s < 2; ++s) {
    std::vector<float> got;
    std::vector<double> want;
    for (int pos = len[s] - W; pos < len[s]; ++pos) {
      for (int64_t c = 0; c < D; ++c) {
        const size_t at = (slot[s] * W + pos % W) * D + c;
        EXPECT_EQ(ws[at], cs[at]);
        got.push_back(ws[at]);
        want.push_back(ref_x[s][pos * D + c]);
      }
    }
    Report("EngramShortConv state", RelErr(got, want), kF32Tol);
  }
}

// ArgmaxRows on the GPU equals the CPU backend's (and so engram::GreedyToken) on every row:
// random logits of odd widths (rows start at every 4-byte offset mod 16, so the scalar head,
// the float4 body and the tail all run), a Llama-3-like width of 128256 with planted ties,
// -inf and NaN rows, rows of one repeated value, and views of a tensor's later rows.
TEST_F(CudaOps, ArgmaxRowsEqualsTheCpuBackend) {
  auto cpu = CreateBackend({.kind = "cpu", .threads = 2});
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  constexpr float kInf = std::numeric_limits<float>::infinity();
  auto check = [&](std::vector<float> x, int64_t R, int64_t V, const std::string& what) {
    Tensor dl = UploadF32(x, {R, V});
    auto di = be_->Alloc(DType::kI32, {R});
    ASSERT_TRUE(di.ok());
    ASSERT_OK(be_->ArgmaxRows(dl, *di));
    std::vector<int32_t> got(static_cast<size_t>(R), -7);
    ASSERT_OK(be_->CopyToHost(*di, got.data()));
    Tensor hl = HostView(x.data(), DType::kF32, {R, V});
    Tensor hi = HostTensor(DType::kI32, {R});
    ASSERT_OK((*cpu)->ArgmaxRows(hl, hi));
    for (int64_t r = 0; r < R; ++r) {
      ASSERT_EQ(got[r], hi.ptr<int32_t>()[r]) << what << ", row " << r << " of " << R;
    }
    // The rows after the first, as a view: another start address (alignment) per row.
    if (R > 1) {
      Tensor tail_ids = di->Rows(1, R);
      ASSERT_OK(be_->ArgmaxRows(dl.Rows(1, R), tail_ids));
      ASSERT_OK(be_->CopyToHost(*di, got.data()));
      for (int64_t r = 1; r < R; ++r) {
        ASSERT_EQ(got[r], hi.ptr<int32_t>()[r]) << what << " (view), row " << r;
      }
    }
  };
  for (int64_t V : {1, 2, 3, 4, 5, 7, 31, 33, 1000, 2049, 4099, 16385, 32001}) {
    const int64_t R = 6;
    std::vector<float> x = Random(static_cast<size_t>(R * V), -8.f, 8.f);
    for (float& f : x) f = std::round(f);  // 17 distinct values: many ties
    x[static_cast<size_t>(V / 2)] = kNaN;
    x[static_cast<size_t>(2 * V)] = kNaN;           // a row starting with NaN
    x[static_cast<size_t>(3 * V + V - 1)] = 100.f;  // the max in the tail
    for (int64_t i = 0; i < V; ++i) x[static_cast<size_t>(4 * V + i)] = -kInf;
    for (int64_t i = 0; i < V; ++i) x[static_cast<size_t>(5 * V + i)] = 0.5f;  // all equal
    check(std::move(x), R, V, "V " + std::to_string(V));
  }
  {
    const int64_t R = 64, V = 128256;
    std::vector<float> x = Random(static_cast<size_t>(R * V), -20.f, 20.f);
    std::uniform_int_distribution<int64_t> col(0, V - 1);
    for (int64_t r = 0; r < R; ++r) {
      float* row = x.data() + r * V;
      const int ties = 1 + static_cast<int>(r % 4);  // 1..4 copies of the max, anywhere
      for (int k = 0; k < ties; ++k) row[col(rng_)] = 30.f;
      if (r % 8 == 1) row[col(rng_)] = kInf;
      if (r % 8 == 2) row[col(rng_)] = kNaN;
      if (r % 8 == 3) row[0] = kNaN;
      if (r % 8 == 4) {
        for (int64_t i = 0; i < V; ++i) row[i] = kNaN;
      }
      if (r % 8 == 5) row[V - 1] = 31.f;
    }
    check(std::move(x), R, V, "V 128256");
  }
  // No rows: nothing to launch.
  Tensor none = Poisoned({0, 5});
  auto no_ids = be_->Alloc(DType::kI32, {0});
  ASSERT_TRUE(no_ids.ok());
  ASSERT_OK(be_->ArgmaxRows(none, *no_ids));
  // Bad operands name themselves.
  Tensor l = UploadF32(Random(12), {3, 4});
  auto ids3 = be_->Alloc(DType::kI32, {3}), ids4 = be_->Alloc(DType::kI32, {4});
  auto ids64 = be_->Alloc(DType::kI64, {3});
  ASSERT_TRUE(ids3.ok() && ids4.ok() && ids64.ok());
  auto expect_bad = [&](const Tensor& lg, Tensor& ids, const char* name) {
    const Status st = be_->ArgmaxRows(lg, ids);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    EXPECT_NE(st.message().find(name), std::string::npos) << st.message();
  };
  expect_bad(l, *ids4, "ids");
  expect_bad(l, *ids64, "ids");
  expect_bad(l.Reshaped({12}), *ids3, "logits");
  expect_bad(HostTensor(DType::kF32, {3, 4}), *ids3, "logits");
  Tensor empty_cols = Poisoned({3, 0});
  expect_bad(empty_cols, *ids3, "logits");
  ASSERT_OK(be_->Synchronize());
}

TEST_F(CudaOps, BadShapesAreInvalidArgument) {
  const auto invalid = [](const Status& st) { return st.code() == StatusCode::kInvalidArgument; };
  Tensor x = UploadF32(Random(4 * 6), {4, 6});
  Tensor w5 = UploadF32(Random(5), {5});
  Tensor out = Poisoned({4, 6});
  EXPECT_TRUE(invalid(be_->RmsNorm(x, w5, 1e-6f, out)));
  Tensor host = HostTensor(DType::kF32, {4, 6});
  Tensor w6 = UploadF32(Random(6), {6});
  EXPECT_TRUE(invalid(be_->RmsNorm(host, w6, 1e-6f, out)));  // not a device tensor

  std::vector<float> wl = Random(3 * 5);
  Tensor lw = Prepare(wl, {3, 5}, WeightUse::kLinear);
  Tensor lout = Poisoned({4, 3});
  EXPECT_TRUE(invalid(be_->Linear(x, lw, nullptr, lout)));  // K 6 vs 5
  EXPECT_TRUE(invalid(be_->Add(x, w6)));
  Tensor odd = UploadF32(Random(4 * 5), {4, 5});
  Tensor sout = Poisoned({4, 2});
  EXPECT_TRUE(invalid(be_->SwiGlu(odd, sout)));

  std::vector<int32_t> ids32 = {1, 2};
  Tensor i32 = Upload(ids32, DType::kI32, {2, 1});
  Tensor gout = Poisoned({2, 6});
  EXPECT_TRUE(invalid(be_->GatherRows(x, i32, gout)));  // rows must be I64
  Tensor f_ids = UploadF32(Random(4), {4});
  EXPECT_TRUE(invalid(be_->Embedding(x, f_ids, out)));  // ids must be I32

  BatchLayout l = MakeLayout({{.start = 0, .n = 4, .blocks = {0}}}, 16, 1);
  const int nq = 2, nkv = 1, hd = 8;
  Tensor qkv = UploadF32(Random(4 * 32), {4, 32});
  Tensor kc = Poisoned({2, 8, nkv, hd});  // block_size 8, layout says 16
  Tensor vc = Poisoned({2, 8, nkv, hd});
  Tensor kc16 = Poisoned({2, 16, nkv, hd}), vc16 = Poisoned({2, 16, nkv, hd});
  Tensor aout = Poisoned({4, nq * hd});
  AttentionParams ap{.num_q_heads = nq, .num_kv_heads = nkv, .head_dim = hd, .scale = 0.3f};
  EXPECT_TRUE(invalid(be_->PagedAttention(qkv, kc16, vc16, l, ap, aout)));  // not uploaded
  ASSERT_OK(be_->UploadLayout(l));
  EXPECT_TRUE(invalid(be_->PagedAttention(qkv, kc, vc, l, ap, aout)));  // block size
  ap.num_q_heads = 3;
  EXPECT_TRUE(invalid(be_->PagedAttention(qkv, kc16, vc16, l, ap, aout)));  // heads
  ap.num_q_heads = nq;
  ASSERT_OK(be_->PagedAttention(qkv, kc16, vc16, l, ap, aout));

  const EngramConvParams cp{.kernel_size = 4, .dilation = 3};
  Tensor cv = UploadF32(Random(4 * 6), {4, 6});
  Tensor nw = UploadF32(Random(6), {6}), cw = UploadF32(Random(24), {6, 4});
  Tensor bad_state = Poisoned({2, 8, 6});  // window is 9
  Tensor ch = UploadF32(Random(4 * 6), {4, 6});
  EXPECT_TRUE(invalid(be_->EngramShortConv(cv, nw, cw, cp, l, bad_state, ch)));
  Tensor state = Poisoned({2, 9, 6});
  ASSERT_OK(be_->EngramShortConv(cv, nw, cw, cp, l, state, ch));
  ASSERT_OK(be_->Synchronize());
}

// Not a check: rough timings of the ops that dominate a decode step, on random data. Run with
// --gtest_also_run_disabled_tests --gtest_filter='*Timings*'. Median of 20 runs, each from
// launch to Synchronize (so launch latency is included).
TEST_F(CudaOps, DISABLED_Timings) {
  auto median_us = [&](const std::function<Status()>& op) {
    std::vector<double> us;
    for (int i = 0; i < 23; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const Status st = op();
      const Status sy = be_->Synchronize();
      const auto t1 = std::chrono::steady_clock::now();
      EXPECT_TRUE(st.ok() && sy.ok()) << st.ToString() << sy.ToString();
      if (i >= 3) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    std::sort(us.begin(), us.end());
    return us[us.size() / 2];
  };
  // Linear, Llama-8B-like shapes: qkv 4096->6144, gate_up 4096->28672.
  for (int64_t N : {6144, 28672}) {
    const int64_t K = 4096;
    std::vector<float> w = Random(N * K);
    Tensor dw = Prepare(w, {N, K}, WeightUse::kLinear);
    for (int64_t M : {1, 64, 512}) {
      Tensor dx = UploadF32(Random(M * K), {M, K});
      Tensor out = Poisoned({M, N});
      const double us = median_us([&] { return be_->Linear(dx, dw, nullptr, out); });
      std::printf(
          "[  timing  ] Linear BF16 M=%-4ld K=%ld N=%-6ld %9.1f us  %7.1f GB/s weights  "
          "%7.1f TFLOP/s\n",
          long(M), long(K), long(N), us, N * K * 2 / us / 1e3, 2.0 * M * N * K / us / 1e6);
    }
  }
  // Decode attention: S sequences, one token each, context C, nq=32 nkv=8 hd=128.
  {
    const int S = 16, C = 2048, nq = 32, nkv = 8, hd = 128, bs = 16;
    const int per_seq = C / bs, blocks = S * per_seq;
    std::vector<int32_t> perm(blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng_);
    std::vector<SeqChunk> seqs;
    for (int s = 0; s < S; ++s) {
      seqs.push_back({.start = C - 1,
                      .n = 1,
                      .blocks = std::vector<int32_t>(perm.begin() + s * per_seq,
                                                     perm.begin() + (s + 1) * per_seq)});
    }
    BatchLayout l = MakeLayout(seqs, bs, per_seq);
    ASSERT_OK(be_->UploadLayout(l));
    const int64_t cache = int64_t{blocks} * bs * nkv * hd;
    Tensor kc = UploadF32(Random(cache), {blocks, bs, nkv, hd});
    Tensor vc = UploadF32(Random(cache), {blocks, bs, nkv, hd});
    Tensor qkv = UploadF32(Random(S * (nq + 2 * nkv) * hd), {S, (nq + 2 * nkv) * hd});
    Tensor out = Poisoned({S, nq * hd});
    AttentionParams p{
        .num_q_heads = nq, .num_kv_heads = nkv, .head_dim = hd, .scale = 1.f / std::sqrt(128.f)};
    const double us = median_us([&] { return be_->PagedAttention(qkv, kc, vc, l, p, out); });
    std::printf(
        "[  timing  ] PagedAttention decode S=%d ctx=%d nq=%d nkv=%d hd=%d  %9.1f us  "
        "%7.1f GB/s of KV\n",
        S, C, nq, nkv, hd, us, 2.0 * S * C * nkv * hd * 4 / us / 1e3);
  }
  // Prefill attention: one sequence, a 512-token chunk at positions 0..511.
  {
    const int T = 512, nq = 32, nkv = 8, hd = 128, bs = 16, blocks = T / bs;
    std::vector<int32_t> tbl(blocks);
    std::iota(tbl.begin(), tbl.end(), 0);
    BatchLayout l = MakeLayout({{.start = 0, .n = T, .blocks = tbl}}, bs, blocks);
    ASSERT_OK(be_->UploadLayout(l));
    Tensor kc = Poisoned({blocks, bs, nkv, hd}), vc = Poisoned({blocks, bs, nkv, hd});
    Tensor qkv = UploadF32(Random(T * (nq + 2 * nkv) * hd), {T, (nq + 2 * nkv) * hd});
    Tensor out = Poisoned({T, nq * hd});
    AttentionParams p{
        .num_q_heads = nq, .num_kv_heads = nkv, .head_dim = hd, .scale = 1.f / std::sqrt(128.f)};
    const double us = median_us([&] { return be_->PagedAttention(qkv, kc, vc, l, p, out); });
    std::printf("[  timing  ] PagedAttention prefill T=%d nq=%d nkv=%d hd=%d  %9.1f us\n", T, nq,
                nkv, hd, us);
  }
  // Engram rows: 512 tokens x 16 heads of 128 BF16 values from a 1M-row table.
  {
    const int64_t R = 1 << 20, Dh = 128, T = 512, H = 16;
    std::vector<uint16_t> bf(R * Dh);
    std::vector<float> vals = Random(1 << 16);
    for (size_t i = 0; i < bf.size(); ++i) bf[i] = F32ToBf16(vals[i & 0xffff]);
    auto dt = be_->PrepareWeight(HostView(bf.data(), DType::kBF16, {R, Dh}), WeightUse::kEmbedding);
    ASSERT_TRUE(dt.ok()) << dt.status().ToString();
    std::vector<int64_t> rows(T * H);
    std::uniform_int_distribution<int64_t> pick(0, R - 1);
    for (int64_t& r : rows) r = pick(rng_);
    Tensor dr = Upload(rows, DType::kI64, {T, H});
    Tensor out = Poisoned({T, H * Dh});
    const double us = median_us([&] { return be_->GatherRows(*dt, dr, out); });
    std::printf("[  timing  ] GatherRows BF16 %ld rows x %ld  %9.1f us\n", long(T * H), long(Dh),
                us);
  }
  // The same from packed FP8 rows (Dh = 256: 264 bytes a row), from device memory and from
  // pinned host memory read in place; GB/s of packed bytes read.
  {
    const int64_t R = 1 << 20, Dh = 256, T = 512, H = 16;
    const int64_t rb = static_cast<int64_t>(Fp8RowBytes(Dh));
    auto pinned = be_->AllocHostStaging(DType::kU8, {R, rb});
    ASSERT_TRUE(pinned.ok()) << pinned.status().ToString();
    uint8_t* p = pinned->ptr<uint8_t>();
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t i = 0; i < rb; ++i)
        p[r * rb + i] = static_cast<uint8_t>(i < Dh ? (r + i) % 127 : 120);
    }
    auto dt = be_->PrepareWeight(*pinned, WeightUse::kEmbedding);
    ASSERT_TRUE(dt.ok()) << dt.status().ToString();
    std::vector<int64_t> rows(T * H);
    std::uniform_int_distribution<int64_t> pick(0, R - 1);
    for (int64_t& r : rows) r = pick(rng_);
    Tensor dr = Upload(rows, DType::kI64, {T, H});
    Tensor out = Poisoned({T, H * Dh});
    for (const auto& [table, where] :
         {std::pair{&*dt, "device"}, std::pair{&*pinned, "pinned host"}}) {
      const double us = median_us([&] { return be_->GatherRows(*table, dr, out); });
      std::printf("[  timing  ] GatherRows FP8 %ld rows x %ld (%s)  %9.1f us  %7.1f GB/s packed\n",
                  long(T * H), long(Dh), where, us, double(T * H * rb) / us / 1e3);
    }
  }
  // Greedy sampling: the argmax of R rows of a 128256-token vocabulary, vs copying them out.
  for (int64_t R : {1, 64}) {
    const int64_t V = 128256;
    Tensor logits = UploadF32(Random(R * V), {R, V});
    auto ids = be_->Alloc(DType::kI32, {R});
    ASSERT_TRUE(ids.ok());
    const double us = median_us([&] { return be_->ArgmaxRows(logits, *ids); });
    std::vector<float> host(static_cast<size_t>(R * V));
    const double copy_us = median_us([&] { return be_->CopyToHost(logits, host.data()); });
    std::printf(
        "[  timing  ] ArgmaxRows R=%-3ld V=%ld  %9.1f us  %7.1f GB/s of logits  (CopyToHost of "
        "the rows: %9.1f us)\n",
        long(R), long(V), us, R * V * 4 / us / 1e3, copy_us);
  }
}

}  // namespace
}  // namespace engram
