// Backend::ArgmaxRows on the CPU backend: the lowest index among ties, -1 for rows holding a NaN
// or with no finite maximum (engram::GreedyToken), rows split over threads, bad operands.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <span>
#include <vector>

#include "cpu_test_util.h"
#include "model/sampler.h"

namespace engram {
namespace {

using cpu_test::FromVector;
using cpu_test::RandomFloats;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ArgmaxRows of `rows` rows of `x` on `b`.
std::vector<int32_t> ArgmaxOn(Backend& b, const std::vector<float>& x, int64_t rows) {
  const int64_t v = rows == 0 ? 7 : static_cast<int64_t>(x.size()) / rows;
  Tensor logits = rows == 0 ? HostTensor(DType::kF32, {0, v}) : FromVector(x, {rows, v});
  Tensor ids = HostTensor(DType::kI32, {rows});
  for (int64_t r = 0; r < rows; ++r) ids.ptr<int32_t>()[r] = -7;  // unwritten rows show
  const Status st = b.ArgmaxRows(logits, ids);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return std::vector<int32_t>(ids.ptr<int32_t>(), ids.ptr<int32_t>() + rows);
}

// The host's greedy pick of each row: what ArgmaxRows must equal.
std::vector<int32_t> Reference(const std::vector<float>& x, int64_t rows) {
  std::vector<int32_t> ids;
  const size_t v = x.size() / static_cast<size_t>(rows);
  for (int64_t r = 0; r < rows; ++r) {
    ids.push_back(GreedyToken(std::span<const float>(x.data() + r * v, v)));
  }
  return ids;
}

TEST(CpuArgmaxRows, SmallRowsTiesNegativesAndInfinities) {
  auto b = cpu_test::MakeBackend(CpuIsa::kScalar, 2);
  struct Case {
    std::vector<float> row;
    int32_t want;
  };
  const std::vector<Case> cases = {
      {{3.f}, 0},
      {{1.f, 5.f, 5.f, 2.f}, 1},                 // tie: the lowest index
      {{-4.f, -1.5f, -2.f, -1.5f, -9.f}, 1},     // all negative, tied
      {{-kInf, -kInf, -kInf}, -1},               // nothing above -inf: unusable
      {{-kInf, -3.f, -kInf}, 1},                 // any finite value beats -inf
      {{2.f, kInf, 7.f, kInf}, -1},              // +inf: overflowed, unusable
      {{-0.f, 0.f, -0.f}, 0},                    // -0 equals +0
      {{-1.f, 0.f, -0.f}, 1},                    //
      {{1.f, kNaN, 2.f, kNaN}, -1},              // any NaN: unusable
      {{-kInf, kNaN, -kInf}, -1},                //
      {{kNaN, 1.f, 9.f}, -1},                    //
      {{kNaN, kNaN}, -1},                        // all NaN
      {{kNaN}, -1},                              //
      {{0.5f, 0.25f, 1.f, 0.75f, 1.f, 1.f}, 2},  // V = 6, not a multiple of 4 or 8
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    const auto& row = cases[c].row;
    ASSERT_EQ(Reference(row, 1)[0], cases[c].want) << "case " << c << ": the test is wrong";
    EXPECT_EQ(ArgmaxOn(*b, row, 1)[0], cases[c].want) << "case " << c;
  }
}

TEST(CpuArgmaxRows, ManyRowsOfOddWidthsEqualTheSamplersArgmax) {
  for (int threads : {1, 4}) {
    auto b = cpu_test::MakeBackend(CpuIsa::kScalar, threads);
    for (int64_t v : {1, 2, 3, 5, 31, 33, 257, 1001}) {
      const int64_t rows = 9;
      // Few distinct values, so rows hold many ties.
      std::vector<float> x = RandomFloats(static_cast<size_t>(rows * v), 11 + v, -4.f, 4.f);
      for (float& f : x) f = std::round(f);
      x[static_cast<size_t>(2 * v + v / 2)] = kNaN;
      x[static_cast<size_t>(3 * v)] = kNaN;  // a leading NaN
      x[static_cast<size_t>(5 * v + v - 1)] = -kInf;
      x[static_cast<size_t>(6 * v + v / 3)] = kInf;
      EXPECT_EQ(ArgmaxOn(*b, x, rows), Reference(x, rows)) << "threads " << threads << ", V " << v;
    }
  }
}

// Rows long enough to be split into segments (32768 columns each) over the pool's threads: the
// segments combine to the lowest index of the row's maximum.
TEST(CpuArgmaxRows, LongRowsSplitOverThreads) {
  auto b = cpu_test::MakeBackend(CpuIsa::kScalar, 4);
  const int64_t v = 128256, rows = 6;
  std::vector<float> x = RandomFloats(static_cast<size_t>(rows * v), 5, -10.f, 10.f);
  auto at = [&](int64_t r, int64_t i) -> float& { return x[static_cast<size_t>(r * v + i)]; };
  at(0, 100000) = 50.f;  // the max in the last segment
  at(1, 32767) = 50.f;   // a tie across the first segment boundary
  at(1, 32768) = 50.f;
  at(2, 65536) = 50.f;  // a tie between the third and the last segment
  at(2, 128255) = 50.f;
  at(3, 0) = kNaN;  // a leading NaN, with a larger value later
  at(3, 77777) = 99.f;
  at(4, 128000) = kNaN;  // one NaN in the last segment only
  at(4, 90000) = 60.f;
  for (int64_t i = 0; i < v; ++i) at(5, i) = -kInf;  // all -inf across every segment
  at(5, 100) = -kInf;
  const std::vector<int32_t> want = {100000, 32767, 65536, -1, -1, -1};
  ASSERT_EQ(Reference(x, rows), want);
  EXPECT_EQ(ArgmaxOn(*b, x, rows), want);
}

TEST(CpuArgmaxRows, ZeroRowsIsANoOp) {
  auto b = cpu_test::MakeBackend(CpuIsa::kScalar, 2);
  EXPECT_TRUE(ArgmaxOn(*b, {}, 0).empty());
}

TEST(CpuArgmaxRows, BadOperandsAreInvalidArgumentNamingThem) {
  auto b = cpu_test::MakeBackend(CpuIsa::kScalar, 1);
  Tensor logits = FromVector(RandomFloats(12, 3), {3, 4});
  Tensor ids = HostTensor(DType::kI32, {3});
  ASSERT_TRUE(b->ArgmaxRows(logits, ids).ok());
  auto expect_bad = [&](const Tensor& l, Tensor i, const char* names) {
    const Status st = b->ArgmaxRows(l, i);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << names << ": " << st.ToString();
    EXPECT_NE(st.message().find(names), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("ArgmaxRows"), std::string::npos) << st.message();
  };
  expect_bad(logits.Reshaped({12}), ids, "logits");             // not a matrix
  expect_bad(HostTensor(DType::kBF16, {3, 4}), ids, "logits");  // not F32
  expect_bad(HostTensor(DType::kF32, {3, 0}), ids, "logits");   // no columns
  expect_bad(logits, HostTensor(DType::kI32, {4}), "ids");      // one id per row
  expect_bad(logits, HostTensor(DType::kI64, {3}), "ids");      // I32
  expect_bad(logits, HostTensor(DType::kI32, {3, 1}), "ids");   // rank 1
  Tensor on_device = logits;
  on_device.device = Device::kCuda;
  expect_bad(on_device, ids, "logits is not in host memory");
}

}  // namespace
}  // namespace engram
