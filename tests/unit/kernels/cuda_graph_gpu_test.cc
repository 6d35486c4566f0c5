// Graph capture on the CUDA backend (Backend::BeginCapture / EndCapture / Replay): captured ops
// do not run until replayed, replays read the values their addresses hold at replay time and
// equal eager runs exactly, what would allocate or synchronize refuses during a capture
// (which then ends cleanly), and a reallocated scratch makes older graphs refuse to replay.
// Skips when no CUDA backend can be made.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <vector>

#include "kernels/backend.h"

namespace engram {
namespace {

#define ASSERT_OK(expr)                                       \
  do {                                                        \
    const ::engram::Status _st = (expr);                      \
    ASSERT_TRUE(_st.ok()) << #expr << ": " << _st.ToString(); \
  } while (0)

class CudaGraphs : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = CreateBackend({.kind = "cuda"});
    if (!r.ok()) GTEST_SKIP() << "CUDA backend unavailable: " << r.status().ToString();
    be_ = std::move(r).value();
  }
  std::vector<float> Random(size_t n) {
    std::uniform_real_distribution<float> d(-1.f, 1.f);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng_);
    return v;
  }
  Tensor Upload(const std::vector<float>& v, std::vector<int64_t> shape) {
    auto r = be_->Alloc(DType::kF32, std::move(shape));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    Tensor t = std::move(r).value();
    const Status st = be_->CopyFromHost(v.data(), t);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return t;
  }
  std::vector<float> Download(const Tensor& t) {
    std::vector<float> v(static_cast<size_t>(t.numel()));
    const Status st = be_->CopyToHost(t, v.data());
    EXPECT_TRUE(st.ok()) << st.ToString();
    return v;
  }
  Tensor LinearWeight(int64_t n, int64_t k) {
    std::vector<float> w = Random(static_cast<size_t>(n * k));
    auto r = be_->PrepareWeight(HostView(w.data(), DType::kF32, {n, k}), WeightUse::kLinear);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return std::move(r).value();
  }

  std::unique_ptr<Backend> be_;
  std::mt19937 rng_{7};
};

TEST_F(CudaGraphs, ReplayRunsTheCapturedOpsOnCurrentValues) {
  const std::vector<float> x0 = Random(4 * 33), y0 = Random(4 * 33), y1 = Random(4 * 33);
  Tensor x = Upload(x0, {4, 33}), y = Upload(y0, {4, 33});
  ASSERT_OK(be_->BeginCapture());
  ASSERT_OK(be_->Add(x, y));
  auto g = be_->EndCapture();
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(Download(x), x0) << "a captured op ran during the capture";
  ASSERT_OK(be_->Replay(**g));
  ASSERT_OK(be_->Replay(**g));
  std::vector<float> want = x0;
  for (size_t i = 0; i < want.size(); ++i) want[i] = (want[i] + y0[i]) + y0[i];
  EXPECT_EQ(Download(x), want);
  // New values at the same address: the replay reads them.
  ASSERT_OK(be_->CopyFromHost(y1.data(), y));
  ASSERT_OK(be_->Replay(**g));
  for (size_t i = 0; i < want.size(); ++i) want[i] += y1[i];
  EXPECT_EQ(Download(x), want);
}

TEST_F(CudaGraphs, CapturedLinearEqualsEagerLinear) {
  const int64_t M = 3, K = 256, N = 96;
  Tensor w = LinearWeight(N, K);
  Tensor x = Upload(Random(M * K), {M, K});
  Tensor eager = Upload(std::vector<float>(M * N, 0.f), {M, N});
  Tensor graphed = Upload(std::vector<float>(M * N, 0.f), {M, N});
  ASSERT_OK(be_->Linear(x, w, nullptr, eager));  // also the warm-up (scratch, cuBLAS)
  ASSERT_OK(be_->BeginCapture());
  ASSERT_OK(be_->Linear(x, w, nullptr, graphed));
  auto g = be_->EndCapture();
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  ASSERT_OK(be_->Replay(**g));
  EXPECT_EQ(Download(graphed), Download(eager));
}

TEST_F(CudaGraphs, AllocatingOrSynchronizingDuringCaptureRefusesAndAbortEndsIt) {
  const std::vector<float> x0 = Random(64), y0 = Random(64);
  Tensor x = Upload(x0, {64}), y = Upload(y0, {64});
  std::vector<float> host(64);
  ASSERT_OK(be_->BeginCapture());
  EXPECT_EQ(be_->BeginCapture().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(be_->Alloc(DType::kF32, {8}).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(be_->CopyToHost(x, host.data()).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(be_->CopyFromHost(host.data(), x).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(be_->Synchronize().code(), StatusCode::kFailedPrecondition);
  ASSERT_OK(be_->Add(x, y));
  be_->AbortCapture();
  be_->AbortCapture();  // a no-op now
  EXPECT_EQ(be_->EndCapture().status().code(), StatusCode::kFailedPrecondition);
  // Nothing of the capture ran; eager work goes on.
  EXPECT_EQ(Download(x), x0);
  ASSERT_OK(be_->Add(x, y));
  std::vector<float> want = x0;
  for (size_t i = 0; i < want.size(); ++i) want[i] += y0[i];
  EXPECT_EQ(Download(x), want);
}

TEST_F(CudaGraphs, ScratchGrowthRefusesDuringCaptureAndStalesOlderGraphs) {
  const int64_t K = 1024, N = 8;
  Tensor w = LinearWeight(N, K);
  Tensor xs = Upload(Random(2 * K), {2, K}), outs = Upload(std::vector<float>(2 * N), {2, N});
  ASSERT_OK(be_->Linear(xs, w, nullptr, outs));
  ASSERT_OK(be_->BeginCapture());
  ASSERT_OK(be_->Linear(xs, w, nullptr, outs));
  auto small = be_->EndCapture();
  ASSERT_TRUE(small.ok()) << small.status().ToString();
  const uint64_t epoch = be_->capture_epoch();

  // 1024 x 1024 BF16 = 2 MiB: more than the scratch holds so far.
  const int64_t M = 1024;
  Tensor xb = Upload(Random(M * K), {M, K}), outb = Upload(std::vector<float>(M * N), {M, N});
  ASSERT_OK(be_->BeginCapture());
  const Status st = be_->Linear(xb, w, nullptr, outb);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  be_->AbortCapture();
  EXPECT_EQ(be_->capture_epoch(), epoch);
  ASSERT_OK(be_->Replay(**small));  // nothing was reallocated yet

  ASSERT_OK(be_->Linear(xb, w, nullptr, outb));  // eager: the scratch grows
  EXPECT_GT(be_->capture_epoch(), epoch);
  EXPECT_EQ(be_->Replay(**small).code(), StatusCode::kFailedPrecondition);
  ASSERT_OK(be_->Synchronize());
}

}  // namespace
}  // namespace engram
