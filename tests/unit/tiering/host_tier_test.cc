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
  auto tier = CreateHostTier({tables.begin(), tables.end()}, SmallOptions());
  ASSERT_TRUE(tier.ok()) << tier.status().ToString();
  TableTier& t = **tier;
  EXPECT_EQ(t.name(), "dram");
  EXPECT_EQ(t.num_layers(), 2);
  EXPECT_EQ(t.format().dtype, dtype);
  EXPECT_EQ(t.format().dim, 24);
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

TEST(HostTier, ReportsCopyProgressByPercentInOrder) {
  std::vector<Tensor> tables = {RandomTable(DType::kBF16, 1000, 24, 1),
                                RandomTable(DType::kBF16, 517, 24, 2)};
  HostTierOptions o = SmallOptions();
  std::vector<std::pair<uint64_t, uint64_t>> calls;  // one call at a time: no lock needed
  o.on_progress = [&](uint64_t done, uint64_t total) { calls.emplace_back(done, total); };
  auto tier = CreateHostTier({tables.begin(), tables.end()}, o);
  ASSERT_TRUE(tier.ok()) << tier.status().ToString();
  const uint64_t total = (1000 + 517) * 24 * 2;
  ASSERT_GE(calls.size(), 10u) << "progress should move by about a percent";
  EXPECT_LE(calls.size(), 100u);
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].second, total);
    if (i > 0) {
      EXPECT_GT(calls[i].first * 100 / total, calls[i - 1].first * 100 / total);
    }
  }
  EXPECT_EQ(calls.back().first, total);
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

namespace engram {
namespace {

// FP8 rows are stored packed (codes then scales) and read back in that form; the budget counts
// the scales; the host table the zero-copy path reads is U8 [rows, 264].
TEST(HostTier, Fp8RowsArePackedWithTheirScales) {
  constexpr int64_t kRows = 1000, kDh = 256;
  const Tensor codes = RandomTable(DType::kF8E4M3, kRows, kDh, 5);
  const Tensor scales = RandomTable(DType::kF8E8M0, kRows, kDh / 32, 6);
  HostTierOptions o = SmallOptions();
  o.budget_bytes = kRows * 264 - 1;
  EXPECT_EQ(CreateHostTier({TableSource(codes, scales)}, o).status().code(),
            StatusCode::kResourceExhausted);
  o.budget_bytes = kRows * 264;
  auto tier = CreateHostTier({TableSource(codes, scales)}, o);
  ASSERT_TRUE(tier.ok()) << tier.status().ToString();
  TableTier& t = **tier;
  EXPECT_TRUE(t.format().fp8());
  EXPECT_EQ(t.row_bytes(), 264u);
  const Tensor host = t.HostTable(0);
  EXPECT_EQ(host.dtype, DType::kU8);
  EXPECT_EQ(host.shape, (std::vector<int64_t>{kRows, 264}));
  const std::vector<int64_t> rows = {999, 0, 517, 3};
  std::vector<uint8_t> out(rows.size() * 264);
  ASSERT_TRUE(t.ReadRows(0, rows, out.data(), {}).ok());
  for (size_t i = 0; i < rows.size(); ++i) {
    const uint8_t* row = out.data() + i * 264;
    EXPECT_EQ(std::memcmp(row, codes.ptr<uint8_t>() + rows[i] * kDh, kDh), 0) << rows[i];
    EXPECT_EQ(std::memcmp(row + kDh, scales.ptr<uint8_t>() + rows[i] * 8, 8), 0) << rows[i];
  }
  EXPECT_EQ(t.stats().bytes_moved, rows.size() * 264);
}

TEST(TableSource, ChecksNameWhatIsWrong) {
  const Tensor codes = RandomTable(DType::kF8E4M3, 10, 64, 1);
  auto message = [](const TableSource& s) { return s.Check("T").ToString(); };
  EXPECT_TRUE(TableSource(codes, RandomTable(DType::kF8E8M0, 10, 2, 2)).Check("T").ok());
  EXPECT_NE(message(TableSource(codes)).find("scales"), std::string::npos) << message(codes);
  const std::string dtype = message(TableSource(codes, RandomTable(DType::kBF16, 10, 2, 2)));
  EXPECT_NE(dtype.find("have dtype BF16, expected F8_E8M0"), std::string::npos) << dtype;
  const std::string shape = message(TableSource(codes, RandomTable(DType::kF8E8M0, 10, 3, 2)));
  EXPECT_NE(shape.find("expected [10, 2]"), std::string::npos) << shape;
  const std::string ragged = message(
      TableSource(RandomTable(DType::kF8E4M3, 10, 40, 1), RandomTable(DType::kF8E8M0, 10, 1, 2)));
  EXPECT_NE(ragged.find("multiple of 32"), std::string::npos) << ragged;
  const std::string extra = message(
      TableSource(RandomTable(DType::kBF16, 10, 64, 1), RandomTable(DType::kF8E8M0, 10, 2, 2)));
  EXPECT_NE(extra.find("scales belong to F8_E4M3 tables only"), std::string::npos) << extra;
  EXPECT_NE(message(TableSource(RandomTable(DType::kI32, 10, 64, 1))).find("expected F32"),
            std::string::npos);
}

TEST(TableSource, StoredPacksCodesThenScales) {
  const Tensor codes = RandomTable(DType::kF8E4M3, 3, 32, 1);
  const Tensor scales = RandomTable(DType::kF8E8M0, 3, 1, 2);
  const Tensor stored = TableSource(codes, scales).Stored();
  ASSERT_EQ(stored.shape, (std::vector<int64_t>{3, 33}));
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(std::memcmp(stored.ptr<uint8_t>() + r * 33, codes.ptr<uint8_t>() + r * 32, 32), 0);
    EXPECT_EQ(stored.ptr<uint8_t>()[r * 33 + 32], scales.ptr<uint8_t>()[r]);
  }
  const Tensor bf16 = RandomTable(DType::kBF16, 3, 8, 1);
  EXPECT_EQ(TableSource(bf16).Stored().data, bf16.data);  // already stored as it is
}

}  // namespace
}  // namespace engram
