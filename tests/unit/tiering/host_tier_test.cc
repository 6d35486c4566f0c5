#include "tiering/host_tier.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace engram {
namespace {

Tensor RandomTable(DType dtype, int64_t rows, int64_t dh, uint32_t seed) {
  Tensor t = HostTensor(dtype, {rows, dh});
  std::mt19937 rng(seed);
  auto* p = static_cast<unsigned char*>(t.data);
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(rng());
  return t;
}

HostTierOptions SmallOptions() {
  HostTierOptions o;
  o.page = PageRequest::kNormal;
  o.copy_threads = 3;
  return o;
}

void ExpectRowsEqual(DType dtype) {
  std::vector<Tensor> tables = {RandomTable(dtype, 1000, 24, 1), RandomTable(dtype, 517, 24, 2)};
  auto tier = CreateHostTier(tables, SmallOptions());
  ASSERT_TRUE(tier.ok()) << tier.status().ToString();
  TableTier& t = **tier;
  EXPECT_EQ(t.name(), "dram");
  EXPECT_EQ(t.num_layers(), 2);
  EXPECT_EQ(t.dtype(), dtype);
  EXPECT_EQ(t.row_elems(), 24);
  EXPECT_EQ(t.rows(1), 517);
  EXPECT_GE(t.resident_bytes(), static_cast<int64_t>(tables[0].nbytes() + tables[1].nbytes()));
  const size_t rb = 24 * DTypeSize(dtype);
  std::mt19937_64 rng(7);
  for (int layer = 0; layer < 2; ++layer) {
    std::vector<int64_t> rows;
    for (int i = 0; i < 200; ++i) rows.push_back(static_cast<int64_t>(rng() % t.rows(layer)));
    rows.push_back(t.rows(layer) - 1);
    rows.push_back(0);
    std::vector<unsigned char> out(rows.size() * rb);
    ASSERT_TRUE(t.ReadRows(layer, rows, out.data(), {}).ok());
    const auto* src = static_cast<const unsigned char*>(tables[layer].data);
    for (size_t i = 0; i < rows.size(); ++i) {
      ASSERT_EQ(std::memcmp(out.data() + i * rb, src + rows[i] * rb, rb), 0) << "row " << rows[i];
    }
  }
  const TierStats s = t.stats();
  EXPECT_EQ(s.rows_requested, 404u);
  EXPECT_EQ(s.bytes_moved, 404u * rb);
  EXPECT_EQ(s.cache_hits + s.cache_misses + s.io_reads, 0u);
}

TEST(HostTier, RowsEqualSourceBf16) { ExpectRowsEqual(DType::kBF16); }
TEST(HostTier, RowsEqualSourceF32) { ExpectRowsEqual(DType::kF32); }

TEST(HostTier, OutOfRangeRowAndLayer) {
  auto tier = CreateHostTier({RandomTable(DType::kF32, 10, 4, 3)}, SmallOptions());
  ASSERT_TRUE(tier.ok());
  std::vector<float> out(4);
  const int64_t bad[] = {10};
  EXPECT_EQ((*tier)->ReadRows(0, bad, out.data(), {}).code(), StatusCode::kOutOfRange);
  const int64_t neg[] = {-1};
  EXPECT_EQ((*tier)->ReadRows(0, neg, out.data(), {}).code(), StatusCode::kOutOfRange);
  const int64_t ok[] = {9};
  EXPECT_EQ((*tier)->ReadRows(1, ok, out.data(), {}).code(), StatusCode::kOutOfRange);
  EXPECT_TRUE((*tier)->ReadRows(0, {}, out.data(), {}).ok());
}

TEST(HostTier, RefusesTablesOverBudget) {
  HostTierOptions o = SmallOptions();
  o.budget_bytes = 1000;
  auto tier = CreateHostTier({RandomTable(DType::kBF16, 100, 8, 4)}, o);  // 1600 bytes
  ASSERT_FALSE(tier.ok());
  EXPECT_EQ(tier.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(tier.status().message().find("budget"), std::string::npos) << tier.status().ToString();
  o.budget_bytes = 1600;
  EXPECT_TRUE(CreateHostTier({RandomTable(DType::kBF16, 100, 8, 4)}, o).ok());
}

TEST(HostTier, RefusesSizeMismatchNamingTheTensor) {
  Tensor t = RandomTable(DType::kBF16, 100, 8, 5);
  HostTierOptions o = SmallOptions();
  TensorInfo info;
  info.name = "model.layers.2.engram.multi_head_embedding.embedding.weight";
  info.file = "/models/x/engram.safetensors";
  info.dtype = DType::kBF16;
  info.shape = {100, 8};
  info.nbytes = 1598;
  o.infos = {info};
  auto tier = CreateHostTier({t}, o);
  ASSERT_FALSE(tier.ok());
  EXPECT_EQ(tier.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(tier.status().message().find(info.name), std::string::npos) << tier.status().ToString();
  EXPECT_NE(tier.status().message().find("1600"), std::string::npos);
  o.infos[0].nbytes = 1600;
  o.infos[0].shape = {100, 9};
  EXPECT_EQ(CreateHostTier({t}, o).status().code(), StatusCode::kInvalidArgument);
  o.infos[0].shape = {100, 8};
  EXPECT_TRUE(CreateHostTier({t}, o).ok());
}

TEST(HostTier, RefusesBadTables) {
  EXPECT_EQ(CreateHostTier({}, SmallOptions()).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateHostTier({HostTensor(DType::kF32, {8})}, SmallOptions()).status().code(),
            StatusCode::kInvalidArgument);
  auto mixed = CreateHostTier(
      {RandomTable(DType::kF32, 8, 4, 1), RandomTable(DType::kF32, 8, 5, 1)}, SmallOptions());
  EXPECT_EQ(mixed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(mixed.status().message().find("engram table layer 1"), std::string::npos);
}

TEST(HostTier, CallsDmaHooks) {
  HostTierOptions o = SmallOptions();
  int registered = 0, unregistered = 0;
  o.register_for_dma = [&](void*, size_t) {
    ++registered;
    return Status::Ok();
  };
  o.unregister_for_dma = [&](void*, size_t) { ++unregistered; };
  {
    auto tier =
        CreateHostTier({RandomTable(DType::kF32, 8, 4, 1), RandomTable(DType::kF32, 9, 4, 2)}, o);
    ASSERT_TRUE(tier.ok());
    EXPECT_EQ(registered, 2);
  }
  EXPECT_EQ(unregistered, 2);
}

}  // namespace
}  // namespace engram
