// RmsNorm, Add, SwiGlu, Rope and Embedding on the CPU backend against float64 references.
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

class CpuElementwiseTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  std::unique_ptr<Backend> backend_ = cpu_test::MakeBackend(GetParam());
};

std::vector<double> RmsNormRef(const std::vector<float>& x, const std::vector<float>& w,
                               int64_t rows, int64_t d, double eps) {
  std::vector<double> ref(rows * d);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t c = 0; c < d; ++c) ss += double(x[r * d + c]) * x[r * d + c];
    const double s = 1.0 / std::sqrt(ss / d + eps);
    for (int64_t c = 0; c < d; ++c) ref[r * d + c] = x[r * d + c] * s * w[c];
  }
  return ref;
}

TEST_P(CpuElementwiseTest, RmsNorm) {
  for (auto [rows, d] :
       {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {5, 33}, {17, 1031}, {300, 64}}) {
    const auto xv = RandomFloats(rows * d, 11 + d, -3.f, 3.f);
    const auto wv = RandomFloats(d, 12 + d, 0.5f, 1.5f);
    Tensor x = FromVector(xv, {rows, d});
    Tensor w = FromVector(wv, {d});
    Tensor out = Poisoned(*backend_, {rows, d});
    ASSERT_TRUE(backend_->RmsNorm(x, w, 1e-6f, out).ok());
    const auto ref = RmsNormRef(xv, wv, rows, d, 1e-6);
    EXPECT_LE(RelError(ToVector(out), ref), 1e-6) << rows << "x" << d;
    // In place.
    ASSERT_TRUE(backend_->RmsNorm(x, w, 1e-6f, x).ok());
    EXPECT_LE(RelError(ToVector(x), ref), 1e-6);
  }
  Tensor x = FromVector(RandomFloats(8, 1), {2, 4});
  Tensor bad_w = FromVector(RandomFloats(5, 1), {5});
  Tensor out = Poisoned(*backend_, {2, 4});
  Status st = backend_->RmsNorm(x, bad_w, 1e-6f, out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("w has shape [5]"), std::string::npos) << st.message();
}

TEST_P(CpuElementwiseTest, Add) {
  const int64_t n = 3 * 40000 + 5;  // large enough to run on several threads
  const auto xv = RandomFloats(n, 1), yv = RandomFloats(n, 2);
  Tensor x = FromVector(xv, {n});
  Tensor y = FromVector(yv, {n});
  ASSERT_TRUE(backend_->Add(x, y).ok());
  std::vector<double> ref(n);
  for (int64_t i = 0; i < n; ++i) ref[i] = double(xv[i]) + yv[i];
  EXPECT_LE(RelError(ToVector(x), ref), 1e-7);
  Tensor bad = FromVector(RandomFloats(4, 1), {4});
  Status st = backend_->Add(x, bad);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("y has shape"), std::string::npos) << st.message();
}

TEST_P(CpuElementwiseTest, SwiGlu) {
  for (auto [t, inter] : {std::pair<int64_t, int64_t>{1, 3}, {7, 45}, {33, 1000}}) {
    const auto gv = RandomFloats(t * 2 * inter, 5, -12.f, 12.f);
    Tensor gu = FromVector(gv, {t, 2 * inter});
    Tensor out = Poisoned(*backend_, {t, inter});
    ASSERT_TRUE(backend_->SwiGlu(gu, out).ok());
    std::vector<double> ref(t * inter);
    for (int64_t r = 0; r < t; ++r) {
      for (int64_t i = 0; i < inter; ++i) {
        ref[r * inter + i] = cpu_test::Silu(gv[r * 2 * inter + i]) * gv[r * 2 * inter + inter + i];
      }
    }
    EXPECT_LE(RelError(ToVector(out), ref), 1e-6);
  }
  Tensor gu = FromVector(RandomFloats(2 * 6, 1), {2, 6});
  Tensor bad = Poisoned(*backend_, {2, 4});
  Status st = backend_->SwiGlu(gu, bad);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("out"), std::string::npos) << st.message();
}

TEST_P(CpuElementwiseTest, RopeRotatesQAndKHeadsOnly) {
  const int nq = 6, nkv = 2, hd = 36;  // hd / 2 = 18: not a multiple of 8
  const int64_t T = 9, row = (nq + 2 * nkv) * hd;
  BatchLayout layout;
  for (int t = 0; t < T; ++t) {
    layout.token_ids.push_back(1);
    layout.positions.push_back(t == 0 ? 0 : 3 + 997 * t);  // large positions too
  }
  std::vector<float> freq(hd / 2);
  for (int i = 0; i < hd / 2; ++i) freq[i] = std::pow(10000.f, -2.f * i / hd);
  const auto xv = RandomFloats(T * row, 21);
  Tensor qkv = FromVector(xv, {T, row});
  RopeParams p;
  p.num_q_heads = nq;
  p.num_kv_heads = nkv;
  p.head_dim = hd;
  p.inv_freq = FromVector(freq, {hd / 2});
  ASSERT_TRUE(backend_->Rope(qkv, layout, p).ok());
  std::vector<double> ref(xv.begin(), xv.end());
  for (int64_t t = 0; t < T; ++t) {
    for (int h = 0; h < nq + nkv; ++h) {
      for (int i = 0; i < hd / 2; ++i) {
        const float angle = static_cast<float>(layout.positions[t]) * freq[i];  // F32 angle
        const double c = std::cos(double(angle)), s = std::sin(double(angle));
        const double x1 = xv[t * row + h * hd + i], x2 = xv[t * row + h * hd + i + hd / 2];
        ref[t * row + h * hd + i] = x1 * c - x2 * s;
        ref[t * row + h * hd + i + hd / 2] = x2 * c + x1 * s;
      }
    }
  }
  const auto out = ToVector(qkv);
  EXPECT_LE(RelError(out, ref), 1e-6);
  // v heads untouched.
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = (nq + nkv) * hd; i < row; ++i) ASSERT_EQ(out[t * row + i], xv[t * row + i]);
  }
  p.inv_freq = FromVector(std::vector<float>(freq.begin() + 1, freq.end()), {hd / 2 - 1});
  Status st = backend_->Rope(qkv, layout, p);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("inv_freq"), std::string::npos) << st.message();
}

TEST_P(CpuElementwiseTest, EmbeddingForEveryTableType) {
  const int64_t V = 50, D = 37;
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    std::vector<float> rounded;
    Tensor host = ToDType(RandomFloats(V * D, 3), {V, D}, dtype, &rounded);
    auto table = backend_->PrepareWeight(host, WeightUse::kEmbedding);
    ASSERT_TRUE(table.ok());
    EXPECT_EQ(table->data, host.data) << "embedding tables are aliased, not copied";
    std::vector<int32_t> id = {0, 49, 7, 7, 13, 2, 31};
    Tensor ids = HostView(id.data(), DType::kI32, {static_cast<int64_t>(id.size())});
    Tensor out = Poisoned(*backend_, {static_cast<int64_t>(id.size()), D});
    ASSERT_TRUE(backend_->Embedding(*table, ids, out).ok());
    const auto got = ToVector(out);
    for (size_t t = 0; t < id.size(); ++t) {
      for (int64_t c = 0; c < D; ++c) ASSERT_EQ(got[t * D + c], rounded[id[t] * D + c]);
    }
    id[3] = 50;
    Status st = backend_->Embedding(*table, ids, out);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("ids[3] = 50"), std::string::npos) << st.message();
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, CpuElementwiseTest, ::testing::ValuesIn(cpu_test::IsasToTest()),
                         cpu_test::IsaParamName);

}  // namespace
}  // namespace engram
