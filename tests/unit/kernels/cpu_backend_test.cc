// The CPU backend's memory, weight preparation, layout upload and construction.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>

#include "cpu_test_util.h"

namespace engram {
namespace {

using cpu_test::FromVector;
using cpu_test::RandomFloats;

TEST(CpuBackend, CreatedThroughTheFactory) {
  BackendOptions options;
  options.kind = "cpu";
  options.threads = 3;
  auto b = CreateBackend(options);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ((*b)->device(), Device::kCpu);
  EXPECT_EQ((*b)->kv_dtype(), DType::kF32);
  EXPECT_NE(std::string((*b)->name()).find("3 threads"), std::string::npos) << (*b)->name();
  options.threads = -1;
  EXPECT_EQ(CreateBackend(options).status().code(), StatusCode::kInvalidArgument);
}

// Graph capture is a CUDA feature: the CPU backend says so and never changes its epoch.
TEST(CpuBackend, HasNoGraphCapture) {
  BackendOptions options;
  options.threads = 1;
  options.cuda_graphs = true;  // ignored
  auto b = CreateBackend(options);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ((*b)->BeginCapture().code(), StatusCode::kUnimplemented);
  EXPECT_EQ((*b)->EndCapture().status().code(), StatusCode::kUnimplemented);
  (*b)->AbortCapture();  // a no-op
  EXPECT_EQ((*b)->capture_epoch(), 0u);
}

TEST(CpuBackend, EnvironmentForcesTheScalarKernels) {
  ASSERT_EQ(setenv("ENGRAM_CPU_ISA", "scalar", 1), 0);
  EXPECT_EQ(DefaultCpuIsa(), CpuIsa::kScalar);
  BackendOptions options;
  options.threads = 1;
  auto b = CreateCpuBackend(options);
  ASSERT_TRUE(b.ok());
  EXPECT_NE(std::string((*b)->name()).find("scalar"), std::string::npos) << (*b)->name();
  ASSERT_EQ(setenv("ENGRAM_CPU_ISA", "avx2", 1), 0);
  EXPECT_EQ(DefaultCpuIsa(), std::min(CpuIsa::kAvx2, BestCpuIsa()));
  ASSERT_EQ(unsetenv("ENGRAM_CPU_ISA"), 0);
  EXPECT_EQ(DefaultCpuIsa(), BestCpuIsa());
}

TEST(CpuBackend, AllocIsAlignedAndAllocZerosIsZero) {
  auto b = cpu_test::MakeBackend(CpuIsa::kScalar, 1);
  for (int64_t n : {1, 3, 1000, 1 << 20}) {
    auto t = b->Alloc(DType::kF32, {n});
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % 64, 0u);
    EXPECT_EQ(t->device, Device::kCpu);
    auto z = b->AllocZeros(DType::kBF16, {n, 3});
    ASSERT_TRUE(z.ok());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(z->data) % 64, 0u);
    for (int64_t i = 0; i < z->numel(); ++i) ASSERT_EQ(z->ptr<uint16_t>()[i], 0);
  }
  auto empty = b->Alloc(DType::kF32, {0, 5});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(b->Alloc(DType::kF32, {-1}).status().code(), StatusCode::kInvalidArgument);
}

TEST(CpuBackend, CopiesRoundTrip) {
  auto b = cpu_test::MakeBackend(CpuIsa::kScalar, 1);
  const auto v = RandomFloats(77, 1);
  auto t = b->Alloc(DType::kF32, {7, 11});
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(b->CopyFromHost(v.data(), *t).ok());
  std::vector<float> back(77);
  ASSERT_TRUE(b->CopyToHost(*t, back.data()).ok());
  ASSERT_TRUE(b->Synchronize().ok());
  EXPECT_EQ(back, v);
}

TEST(CpuBackend, PrepareWeightAliasesTablesAndConvertsVectors) {
  auto b = cpu_test::MakeBackend(CpuIsa::kScalar, 1);
  std::vector<float> rounded;
  Tensor bf16 = cpu_test::ToDType(RandomFloats(12, 2), {12}, DType::kBF16, &rounded);
  auto vec = b->PrepareWeight(bf16, WeightUse::kVector);
  ASSERT_TRUE(vec.ok());
  EXPECT_EQ(vec->dtype, DType::kF32);
  EXPECT_EQ(vec->shape, bf16.shape);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(vec->ptr<float>()[i], rounded[i]);
  Tensor f32 = FromVector(RandomFloats(6, 3), {2, 3});
  auto same = b->PrepareWeight(f32, WeightUse::kVector);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->data, f32.data);
  auto table = b->PrepareWeight(bf16.Reshaped({4, 3}), WeightUse::kEmbedding);
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->data, bf16.data);
  EXPECT_EQ(table->dtype, DType::kBF16);
  // Linear weights: F16 becomes F32 panels, BF16 stays BF16.
  Tensor f16 = cpu_test::ToDType(RandomFloats(12, 4), {4, 3}, DType::kF16, &rounded);
  auto lin = b->PrepareWeight(f16, WeightUse::kLinear);
  ASSERT_TRUE(lin.ok());
  EXPECT_EQ(lin->dtype, DType::kF32);
  EXPECT_EQ(lin->layout, Layout::kBackendPacked);
  Tensor ints = HostTensor(DType::kI32, {4});
  Status st = b->PrepareWeight(ints, WeightUse::kVector).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(b->PrepareWeight(bf16, WeightUse::kLinear).status().code(),
            StatusCode::kInvalidArgument);  // not a matrix
}

TEST(CpuBackend, UploadLayoutViewsTheHostVectors) {
  auto b = cpu_test::MakeBackend(CpuIsa::kScalar, 1);
  BatchLayout l;
  l.token_ids = {5, 6, 7};
  l.positions = {0, 1, 2};
  l.seq_of_token = {0, 0, 0};
  l.slot_mapping = {32, 33, 34};
  l.seq_token_start = {0, 3};
  l.context_lens = {3};
  l.state_slots = {0};
  l.block_tables = {2};
  l.max_blocks_per_seq = 1;
  l.logit_rows = {2};
  ASSERT_TRUE(b->UploadLayout(l).ok());
  EXPECT_EQ(l.dev.token_ids.data, l.token_ids.data());
  EXPECT_EQ(l.dev.token_ids.dtype, DType::kI32);
  EXPECT_EQ(l.dev.token_ids.shape, std::vector<int64_t>{3});
  EXPECT_EQ(l.dev.slot_mapping.ptr<int32_t>()[2], 34);
  EXPECT_EQ(l.dev.block_tables.numel(), 1);
  EXPECT_EQ(l.dev.logit_rows.ptr<int32_t>()[0], 2);
}

TEST(CpuBackend, RejectsDeviceTensors) {
  auto b = cpu_test::MakeBackend(CpuIsa::kScalar, 1);
  Tensor x = FromVector(RandomFloats(8, 1), {2, 4});
  Tensor y = x;
  y.device = Device::kCuda;
  Status st = b->Add(x, y);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("y is not in host memory"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace engram
