// GatherRows, EngramGate and EngramShortConv on the CPU backend against float64 references;
// the short conv over a sequence split into chunks equals the whole sequence at once.
#include <gtest/gtest.h>

#include "cpu_test_util.h"

namespace engram {
namespace {

using cpu_test::FromVector;
using cpu_test::Poisoned;
using cpu_test::RandomFloats;
using cpu_test::RelError;
using cpu_test::ToDType;
using cpu_test::ToVector;

class CpuEngramOpsTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  std::unique_ptr<Backend> backend_ = cpu_test::MakeBackend(GetParam());
};

TEST_P(CpuEngramOpsTest, GatherRowsFromBf16AndF32Tables) {
  const int64_t R = 1000, Dh = 45, T = 37, H = 6;
  std::mt19937 rng(5);
  std::uniform_int_distribution<int64_t> pick(0, R - 1);
  std::vector<int64_t> idx(T * H);
  for (int64_t& i : idx) i = pick(rng);
  idx[0] = 0;
  idx[1] = R - 1;
  Tensor rows = HostView(idx.data(), DType::kI64, {T, H});
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    std::vector<float> rounded;
    Tensor host = ToDType(RandomFloats(R * Dh, 9), {R, Dh}, dtype, &rounded);
    auto table = backend_->PrepareWeight(host, WeightUse::kEmbedding);
    ASSERT_TRUE(table.ok());
    Tensor out = Poisoned(*backend_, {T, H * Dh});
    ASSERT_TRUE(backend_->GatherRows(*table, rows, out).ok());
    const auto got = ToVector(out);
    for (int64_t i = 0; i < T * H; ++i) {
      for (int64_t c = 0; c < Dh; ++c) {
        ASSERT_EQ(got[i * Dh + c], rounded[idx[i] * Dh + c]) << DTypeName(dtype) << " row " << i;
      }
    }
  }
  Tensor table = FromVector(RandomFloats(R * Dh, 1), {R, Dh});
  idx[7] = R;
  Tensor out = Poisoned(*backend_, {T, H * Dh});
  Status st = backend_->GatherRows(table, rows, out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("rows[1][1]"), std::string::npos) << st.message();
  idx[7] = 0;
  Tensor bad_out = Poisoned(*backend_, {T, H * Dh + 1});
  st = backend_->GatherRows(table, rows, bad_out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("out"), std::string::npos) << st.message();
  Tensor rows32 = HostTensor(DType::kI32, {T, H});
  st = backend_->GatherRows(table, rows32, out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("rows"), std::string::npos) << st.message();
}

TEST_P(CpuEngramOpsTest, GateMatchesReference) {
  for (auto [T, D] : {std::pair<int64_t, int64_t>{1, 5}, {9, 67}, {40, 1024}}) {
    const auto kv = RandomFloats(T * D, 1, -2.f, 2.f), hv = RandomFloats(T * D, 2, -2.f, 2.f);
    const auto vv = RandomFloats(T * D, 3), wk = RandomFloats(D, 4, 0.5f, 1.5f),
               wq = RandomFloats(D, 5, 0.5f, 1.5f);
    Tensor k = FromVector(kv, {T, D}), h = FromVector(hv, {T, D}), v = FromVector(vv, {T, D});
    Tensor w_key = FromVector(wk, {D}), w_query = FromVector(wq, {D});
    const float eps = 1e-6f;
    ASSERT_TRUE(backend_->EngramGate(k, h, w_key, w_query, eps, v).ok());
    std::vector<double> ref(T * D);
    for (int64_t t = 0; t < T; ++t) {
      double sk = 0, sh = 0;
      for (int64_t c = 0; c < D; ++c) {
        sk += double(kv[t * D + c]) * kv[t * D + c];
        sh += double(hv[t * D + c]) * hv[t * D + c];
      }
      const double rk = 1 / std::sqrt(sk / D + eps), rh = 1 / std::sqrt(sh / D + eps);
      double g = 0;
      for (int64_t c = 0; c < D; ++c) g += kv[t * D + c] * rk * wk[c] * hv[t * D + c] * rh * wq[c];
      g /= std::sqrt(double(D));
      g = (g > 0 ? 1 : g < 0 ? -1 : 0) * std::sqrt(std::max(std::fabs(g), 1e-6));
      const double a = 1 / (1 + std::exp(-g));
      for (int64_t c = 0; c < D; ++c) ref[t * D + c] = vv[t * D + c] * a;
    }
    EXPECT_LE(RelError(ToVector(v), ref), 1e-6) << T << "x" << D;
  }
  Tensor k = FromVector(RandomFloats(8, 1), {2, 4}), v = FromVector(RandomFloats(8, 1), {2, 4});
  Tensor w = FromVector(RandomFloats(4, 1), {4}), bad_h = FromVector(RandomFloats(6, 1), {2, 3});
  Status st = backend_->EngramGate(k, bad_h, w, w, 1e-6f, v);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("h has shape"), std::string::npos) << st.message();
}

// A sequence's values and the float64 expectation of the conv module over all of it.
struct ConvCase {
  int64_t D = 0;
  EngramConvParams p;
  std::vector<float> norm_w, conv_w;  // conv_w [D, K]
};

std::vector<double> ConvReference(const ConvCase& c, const std::vector<float>& v,
                                  const std::vector<float>& h0, int64_t len) {
  const int64_t D = c.D, K = c.p.kernel_size;
  std::vector<double> x(len * D);
  for (int64_t t = 0; t < len; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += double(v[t * D + i]) * v[t * D + i];
    const double s = 1 / std::sqrt(ss / D + c.p.norm_eps);
    for (int64_t i = 0; i < D; ++i) x[t * D + i] = v[t * D + i] * s * c.norm_w[i];
  }
  std::vector<double> out(len * D);
  for (int64_t t = 0; t < len; ++t) {
    for (int64_t ch = 0; ch < D; ++ch) {
      double y = 0;
      for (int64_t i = 0; i < K; ++i) {
        const int64_t q = t - (K - 1 - i) * c.p.dilation;
        if (q >= 0) y += c.conv_w[ch * K + i] * x[q * D + ch];
      }
      out[t * D + ch] = h0[t * D + ch] + v[t * D + ch] + cpu_test::Silu(y);
    }
  }
  return out;
}

// Layout of one step holding, per sequence i, positions [start[i], start[i] + count[i]).
BatchLayout ConvLayout(const std::vector<int>& start, const std::vector<int>& count,
                       const std::vector<int>& slots) {
  BatchLayout l;
  l.seq_token_start.push_back(0);
  for (size_t s = 0; s < start.size(); ++s) {
    for (int p = start[s]; p < start[s] + count[s]; ++p) {
      l.token_ids.push_back(0);
      l.positions.push_back(p);
      l.seq_of_token.push_back(static_cast<int32_t>(s));
      l.slot_mapping.push_back(0);
    }
    l.seq_token_start.push_back(l.num_tokens());
    l.context_lens.push_back(start[s] + count[s]);
    l.state_slots.push_back(slots[s]);
  }
  return l;
}

TEST_P(CpuEngramOpsTest, ShortConvInChunksEqualsWholeSequence) {
  ConvCase c;
  c.D = 37;
  c.p.kernel_size = 4;
  c.p.dilation = 3;
  c.norm_w = RandomFloats(c.D, 1, 0.5f, 1.5f);
  c.conv_w = RandomFloats(c.D * c.p.kernel_size, 2);
  const int64_t D = c.D, W = (c.p.kernel_size - 1) * c.p.dilation;
  Tensor norm_w = FromVector(c.norm_w, {D});
  Tensor conv_w = FromVector(c.conv_w, {D, 1, c.p.kernel_size});  // the checkpoint's shape
  // Two sequences of 40 tokens, ring slots 2 and 0 of 3; first all at once, then chunked.
  const int len = 40;
  std::vector<std::vector<float>> v(2), h0(2);
  for (int s = 0; s < 2; ++s) {
    v[s] = RandomFloats(len * D, 10 + s, -2.f, 2.f);
    h0[s] = RandomFloats(len * D, 20 + s);
  }
  const std::vector<int> slots = {2, 0};
  auto run_steps = [&](const std::vector<std::vector<int>>& chunks) {
    auto state = backend_->Alloc(DType::kF32, {3, W, D});
    EXPECT_TRUE(state.ok());
    float* sp = state->ptr<float>();
    for (int64_t i = 0; i < state->numel(); ++i) sp[i] = std::nanf("");  // never read
    std::vector<std::vector<float>> out(2);
    std::vector<int> pos = {0, 0};
    for (size_t step = 0; step < chunks[0].size(); ++step) {
      std::vector<int> starts, counts, used_slots;
      std::vector<float> vs, hs;
      for (int s = 0; s < 2; ++s) {
        const int n = chunks[s][step];
        if (n == 0) continue;
        starts.push_back(pos[s]);
        counts.push_back(n);
        used_slots.push_back(slots[s]);
        vs.insert(vs.end(), v[s].begin() + pos[s] * D, v[s].begin() + (pos[s] + n) * D);
        hs.insert(hs.end(), h0[s].begin() + pos[s] * D, h0[s].begin() + (pos[s] + n) * D);
      }
      BatchLayout l = ConvLayout(starts, counts, used_slots);
      const int64_t T = l.num_tokens();
      Tensor vt = FromVector(vs, {T, D}), ht = FromVector(hs, {T, D});
      Status st = backend_->EngramShortConv(vt, norm_w, conv_w, c.p, l, *state, ht);
      EXPECT_TRUE(st.ok()) << st.ToString();
      const auto got = ToVector(ht);
      int64_t row = 0;
      for (int s = 0; s < 2; ++s) {
        const int n = chunks[s][step];
        out[s].insert(out[s].end(), got.begin() + row * D, got.begin() + (row + n) * D);
        row += n;
        pos[s] += n;
      }
    }
    return out;
  };
  const auto whole = run_steps({{len}, {len}});
  // Chunks shorter and longer than the ring (W = 9), decode steps, and steps where only one
  // of the sequences runs.
  const auto chunked = run_steps({{5, 1, 1, 12, 0, 3, 1, 17}, {1, 1, 20, 7, 2, 0, 9, 0}});
  for (int s = 0; s < 2; ++s) {
    const auto ref = ConvReference(c, v[s], h0[s], len);
    EXPECT_LE(RelError(whole[s], ref), 1e-5) << "sequence " << s;
    ASSERT_EQ(chunked[s].size(), whole[s].size());
    EXPECT_LE(RelError(chunked[s], ref), 1e-5) << "sequence " << s;
    std::vector<double> whole_d(whole[s].begin(), whole[s].end());
    EXPECT_LE(RelError(chunked[s], whole_d), 1e-6) << "sequence " << s;
  }
}

TEST_P(CpuEngramOpsTest, ShortConvRejectsBadOperands) {
  const int64_t D = 8, T = 3;
  EngramConvParams p;
  BatchLayout l = ConvLayout({0}, {3}, {1});
  Tensor v = FromVector(RandomFloats(T * D, 1), {T, D}),
         h = FromVector(RandomFloats(T * D, 2), {T, D});
  Tensor norm_w = FromVector(RandomFloats(D, 3), {D});
  Tensor conv_w = FromVector(RandomFloats(D * 4, 4), {D, 4});
  Tensor state = HostTensor(DType::kF32, {2, 9, D});
  ASSERT_TRUE(backend_->EngramShortConv(v, norm_w, conv_w, p, l, state, h).ok());
  Tensor bad_state = HostTensor(DType::kF32, {2, 8, D});
  Status st = backend_->EngramShortConv(v, norm_w, conv_w, p, l, bad_state, h);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("state"), std::string::npos) << st.message();
  Tensor bad_conv = FromVector(RandomFloats(D * 3, 4), {D, 3});
  st = backend_->EngramShortConv(v, norm_w, bad_conv, p, l, state, h);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("conv_w"), std::string::npos) << st.message();
  l.state_slots[0] = 2;
  st = backend_->EngramShortConv(v, norm_w, conv_w, p, l, state, h);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("state_slots"), std::string::npos) << st.message();
}

INSTANTIATE_TEST_SUITE_P(Isa, CpuEngramOpsTest, ::testing::ValuesIn(cpu_test::IsasToTest()),
                         cpu_test::IsaParamName);

}  // namespace
}  // namespace engram
