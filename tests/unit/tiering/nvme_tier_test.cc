// NvmeTier over a real safetensors file written with SafetensorsWriter, in the first directory
// (build dir, /var/tmp, /tmp) that accepts O_DIRECT; skips (with the reason) where O_DIRECT
// or io_uring is unavailable.
#include "tiering/nvme_tier.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

namespace engram {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kDh = 24;        // BF16 rows of 48 bytes: never block-aligned
constexpr int64_t kRows0 = 50000;  // ~2.3 MiB
constexpr int64_t kRows1 = 7919;
constexpr int64_t kFp8Dh = 256;      // packed FP8 rows: 256 codes + 8 scales = 264 bytes
constexpr int64_t kFp8Rows = 30011;  // codes ~7.3 MiB; rows straddle 4 KiB blocks
constexpr size_t kFp8RowBytes = 264;

// A safetensors file: a small leading tensor (so tables start unaligned) and two BF16 tables.
struct TableFile {
  std::string path;
  std::string skip_reason;
  std::vector<TensorInfo> tables;
  std::vector<std::vector<uint8_t>> data;  // the tables' bytes
  // An FP8 table (layer 7) and its E8M0 scales, each after an odd-sized tensor.
  TensorInfo fp8, fp8_scale;
  std::vector<uint8_t> fp8_codes, fp8_scales;

  TableFile() {
    std::vector<std::string> tried;
    for (const fs::path& dir : {fs::current_path(), fs::path("/var/tmp"), fs::path("/tmp")}) {
      std::string probe = (dir / "nvme_tier_test.XXXXXX").string();
      const int fd = mkstemp(probe.data());
      if (fd < 0) {
        tried.push_back(dir.string() + ": " + std::strerror(errno));
        continue;
      }
      close(fd);
      const int dfd = open(probe.c_str(), O_RDONLY | O_DIRECT);
      unlink(probe.c_str());
      if (dfd < 0) {
        tried.push_back(dir.string() + ": O_DIRECT: " + std::strerror(errno));
        continue;
      }
      close(dfd);
      path = probe + ".safetensors";
      break;
    }
    if (path.empty()) {
      for (const auto& t : tried) skip_reason += t + "; ";
      skip_reason = "no directory supports O_DIRECT (" + skip_reason + ")";
      return;
    }
    const std::vector<SafetensorsWriter::Spec> specs = {
        {"model.embed_tokens.weight", DType::kF32, {3, 5}},
        {"model.layers.1.engram.multi_head_embedding.embedding.weight",
         DType::kBF16,
         {kRows0, kDh}},
        {"model.layers.4.engram.multi_head_embedding.embedding.weight",
         DType::kBF16,
         {kRows1, kDh}},
        {"odd.a", DType::kU8, {3}},
        {"model.layers.7.engram.embed.weight", DType::kF8E4M3, {kFp8Rows, kFp8Dh}},
        {"odd.b", DType::kU8, {5}},
        {"model.layers.7.engram.embed.scale", DType::kF8E8M0, {kFp8Rows, kFp8Dh / 32}},
    };
    auto writer = SafetensorsWriter::Create(path, specs);
    if (!writer.ok()) {
      skip_reason = writer.status().ToString();
      path.clear();
      return;
    }
    std::mt19937_64 rng(99);
    std::vector<uint8_t> head(3 * 5 * 4, 1);
    Status st = (*writer)->Append(head.data(), head.size());
    for (int64_t rows : {kRows0, kRows1}) {
      data.emplace_back(rows * kDh * 2);
      for (auto& b : data.back()) b = static_cast<uint8_t>(rng());
      if (st.ok()) st = (*writer)->Append(data.back().data(), data.back().size());
    }
    const uint8_t odd[5] = {9, 9, 9, 9, 9};
    fp8_codes.resize(kFp8Rows * kFp8Dh);
    for (auto& b : fp8_codes) b = static_cast<uint8_t>(rng());
    fp8_scales.resize(kFp8Rows * kFp8Dh / 32);
    for (auto& b : fp8_scales) b = static_cast<uint8_t>(rng());
    if (st.ok()) st = (*writer)->Append(odd, 3);
    if (st.ok()) st = (*writer)->Append(fp8_codes.data(), fp8_codes.size());
    if (st.ok()) st = (*writer)->Append(odd, 5);
    if (st.ok()) st = (*writer)->Append(fp8_scales.data(), fp8_scales.size());
    if (st.ok()) st = (*writer)->Finish();
    auto store = st.ok() ? TensorStore::OpenFile(path) : Result<TensorStore>(st);
    if (!store.ok()) {
      skip_reason = store.status().ToString();
      path.clear();
      return;
    }
    for (size_t i = 1; i < 3; ++i) tables.push_back(*store->Info(specs[i].name));
    fp8 = *store->Info(specs[4].name);
    fp8_scale = *store->Info(specs[6].name);
    auto probe = IoUringReader::Open(path, {});
    if (!probe.ok()) skip_reason = probe.status().ToString();
  }
  ~TableFile() {
    if (!path.empty()) unlink(path.c_str());
  }
};

class NvmeTierTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { file_ = new TableFile(); }
  static void TearDownTestSuite() {
    delete file_;
    file_ = nullptr;
  }
  void SetUp() override {
    if (!file_->skip_reason.empty()) {
      std::fprintf(stderr, "SKIP: %s\n", file_->skip_reason.c_str());
      GTEST_SKIP() << file_->skip_reason;
    }
  }
  std::unique_ptr<TableTier> Make(NvmeTierOptions o) {
    auto tier = CreateNvmeTier({file_->tables.begin(), file_->tables.end()}, o);
    EXPECT_TRUE(tier.ok()) << tier.status().ToString();
    return tier.ok() ? std::move(tier).value() : nullptr;
  }
  static void ExpectRows(int layer, const std::vector<int64_t>& rows,
                         const std::vector<uint8_t>& out) {
    const size_t rb = kDh * 2;
    for (size_t i = 0; i < rows.size(); ++i) {
      ASSERT_EQ(std::memcmp(out.data() + i * rb, file_->data[layer].data() + rows[i] * rb, rb), 0)
          << "layer " << layer << " row " << rows[i];
    }
  }
  static TableFile* file_;
};
TableFile* NvmeTierTest::file_ = nullptr;

std::vector<int64_t> DistinctRows(size_t n, int64_t limit, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> rows;
  std::vector<bool> seen(limit);
  while (rows.size() < n) {
    const auto r = static_cast<int64_t>(rng() % limit);
    if (!seen[r]) {
      seen[r] = true;
      rows.push_back(r);
    }
  }
  return rows;
}

TEST_F(NvmeTierTest, RandomRowsEqualTheFile) {
  NvmeTierOptions o;
  o.cache_bytes = 0;  // every row from the file
  o.merge_bytes = 0;  // one read per row
  auto tier = Make(o);
  ASSERT_NE(tier, nullptr);
  EXPECT_EQ(tier->name(), "nvme");
  EXPECT_EQ(tier->num_layers(), 2);
  EXPECT_EQ(tier->format().dtype, DType::kBF16);
  EXPECT_EQ(tier->format().dim, kDh);
  EXPECT_EQ(tier->rows(0), kRows0);
  EXPECT_EQ(tier->rows(1), kRows1);
  for (int layer = 0; layer < 2; ++layer) {
    std::vector<int64_t> rows = DistinctRows(300, tier->rows(layer), 5 + layer);
    rows.push_back(tier->rows(layer) - 1);  // the table's last row
    std::vector<uint8_t> out(rows.size() * kDh * 2);
    ASSERT_TRUE(tier->ReadRows(layer, rows, out.data(), {}).ok());
    ExpectRows(layer, rows, out);
  }
  const TierStats s = tier->stats();
  EXPECT_EQ(s.rows_requested, 602u);
  EXPECT_EQ(s.cache_misses, 602u);
  EXPECT_GE(s.io_reads, 602u);
  EXPECT_EQ(s.bytes_moved, 602u * kDh * 2);
}

TEST_F(NvmeTierTest, NeighbouringRowsAreReadTogether) {
  // 48-byte rows: 85 per 4 KiB block. Rows 1000..1199 span three or four blocks: one read.
  // Rows in blocks far apart stay separate reads; a row asked twice is served twice.
  std::vector<int64_t> rows;
  for (int64_t r = 1199; r >= 1000; --r) rows.push_back(r);  // any order
  rows.push_back(30000);
  rows.push_back(1050);
  rows.push_back(kRows0 - 1);
  NvmeTierOptions o;
  o.cache_bytes = 0;
  auto tier = Make(o);
  ASSERT_NE(tier, nullptr);
  std::vector<uint8_t> out(rows.size() * kDh * 2);
  ASSERT_TRUE(tier->ReadRows(0, rows, out.data(), {}).ok());
  ExpectRows(0, rows, out);
  EXPECT_EQ(tier->stats().io_reads, 3u);

  // A small cap splits the run: 2 KiB holds 42 rows of 48 bytes.
  o.merge_bytes = 2048;
  auto capped = Make(o);
  ASSERT_NE(capped, nullptr);
  std::fill(out.begin(), out.end(), 0);
  ASSERT_TRUE(capped->ReadRows(0, rows, out.data(), {}).ok());
  ExpectRows(0, rows, out);
  EXPECT_EQ(capped->stats().io_reads, 2u + (200 + 41) / 42);

  // Dense random rows (many share blocks) equal the file through every path.
  const std::vector<int64_t> dense = DistinctRows(8000, kRows0, 21);
  std::vector<uint8_t> dense_out(dense.size() * kDh * 2);
  ASSERT_TRUE(tier->ReadRows(0, dense, dense_out.data(), {}).ok());
  ExpectRows(0, dense, dense_out);
  EXPECT_LT(tier->stats().io_reads, 3u + 8000 / 4);

  // Every row of the table, through a buffer of 8 KiB: many waves of four 2 KiB merges.
  o.merge_buffer_bytes = 8 << 10;
  auto waves = Make(o);
  ASSERT_NE(waves, nullptr);
  std::vector<int64_t> all(kRows0);
  for (int64_t r = 0; r < kRows0; ++r) all[static_cast<size_t>(r)] = kRows0 - 1 - r;
  std::vector<uint8_t> all_out(all.size() * kDh * 2);
  ASSERT_TRUE(waves->ReadRows(0, all, all_out.data(), {}).ok());
  ExpectRows(0, all, all_out);
  EXPECT_EQ(waves->stats().io_reads, static_cast<uint64_t>((kRows0 + 41) / 42));
}

TEST_F(NvmeTierTest, FailedMergedReadFailsOnlyTheRowsInTheBadBlock) {
  // Rows 1000..1199 form one merged read; the block holding row 1100 is poisoned. The merged
  // read fails, its rows are read again one by one, and only the rows in that block fail.
  const uint64_t base = file_->tables[0].file_offset;
  const uint64_t bad_block = (base + 1100 * kDh * 2) / 4096 * 4096;
  NvmeTierOptions o;
  o.cache_bytes = 1 << 20;
  o.reader.max_retries = 1;
  o.reader.alignment = 4096;
  o.reader.fault_hook = [bad_block](uint64_t offset, uint32_t length, int) {
    return offset <= bad_block && bad_block < offset + length ? -EIO : 0;
  };
  auto tier = Make(o);
  ASSERT_NE(tier, nullptr);
  std::vector<int64_t> rows;
  for (int64_t r = 1000; r < 1200; ++r) rows.push_back(r);
  std::vector<uint8_t> out(rows.size() * kDh * 2, 0xAB);
  std::vector<uint8_t> failed(rows.size(), 0);
  const Status s = tier->ReadRows(0, rows, out.data(), failed);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  const size_t rb = kDh * 2;
  int bad_rows = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const uint64_t begin = base + static_cast<uint64_t>(rows[i]) * rb;
    const bool in_bad =
        begin / 4096 * 4096 == bad_block || (begin + rb - 1) / 4096 * 4096 == bad_block;
    EXPECT_EQ(failed[i], in_bad ? 1 : 0) << "row " << rows[i];
    if (in_bad) {
      ++bad_rows;
      for (size_t b = 0; b < rb; ++b) ASSERT_EQ(out[i * rb + b], 0) << "row " << rows[i];
    } else {
      ASSERT_EQ(std::memcmp(out.data() + i * rb, file_->data[0].data() + rows[i] * rb, rb), 0)
          << "row " << rows[i];
    }
  }
  EXPECT_GT(bad_rows, 80);
  EXPECT_LT(bad_rows, 90);
  // The good rows were cached, the failed ones were not: they fail again, nothing else is read.
  const uint64_t reads = tier->stats().io_reads;
  std::vector<uint8_t> again(rows.size(), 0);
  EXPECT_EQ(tier->ReadRows(0, rows, out.data(), again).code(), StatusCode::kUnavailable);
  EXPECT_EQ(again, failed);
  EXPECT_GT(tier->stats().io_reads, reads);
  EXPECT_EQ(tier->stats().cache_hits, rows.size() - static_cast<size_t>(bad_rows));
}

TEST_F(NvmeTierTest, RepeatedReadsHitTheCache) {
  for (const char* policy : {"lru", "tinylfu"}) {
    NvmeTierOptions o;
    o.cache_bytes = 1 << 20;  // 21845 rows: holds the working set
    o.policy = policy;
    auto tier = Make(o);
    ASSERT_NE(tier, nullptr);
    EXPECT_GE(tier->resident_bytes(), 1 << 20);
    const std::vector<int64_t> rows = DistinctRows(500, kRows0, 11);
    std::vector<uint8_t> out(rows.size() * kDh * 2);
    for (int rep = 0; rep < 3; ++rep) {
      std::fill(out.begin(), out.end(), 0);
      ASSERT_TRUE(tier->ReadRows(0, rows, out.data(), {}).ok());
      ExpectRows(0, rows, out);
    }
    const TierStats s = tier->stats();
    if (std::string(policy) == "lru") {
      // All admitted on the first pass, then hits.
      EXPECT_EQ(s.cache_misses, 500u) << policy;
      EXPECT_EQ(s.cache_hits, 1000u) << policy;
    } else {
      // The cache has free slots, so even the first pass is admitted.
      EXPECT_EQ(s.cache_hits, 1000u) << policy;
    }
    const uint64_t reads = s.io_reads;
    ASSERT_TRUE(tier->ReadRows(0, rows, out.data(), {}).ok());
    EXPECT_EQ(tier->stats().io_reads, reads) << policy;  // no I/O for cached rows
    // The same row numbers of another layer are other keys.
    std::vector<int64_t> rows1(rows.begin(), rows.begin() + 10);
    for (auto& r : rows1) r %= kRows1;
    ASSERT_TRUE(tier->ReadRows(1, rows1, out.data(), {}).ok());
    ExpectRows(1, rows1, out);
    EXPECT_GT(tier->stats().io_reads, reads) << policy;
  }
}

TEST_F(NvmeTierTest, InjectedEioIsUnavailable) {
  NvmeTierOptions o;
  o.cache_bytes = 64 << 10;
  o.reader.max_retries = 2;
  o.reader.fault_hook = [](uint64_t, uint32_t, int) { return -EIO; };
  auto tier = Make(o);
  ASSERT_NE(tier, nullptr);
  const int64_t rows[] = {17, 4242};
  std::vector<uint8_t> out(2 * kDh * 2);
  const Status s = tier->ReadRows(0, rows, out.data(), {});
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find(file_->path), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(std::strerror(EIO)), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("offset"), std::string::npos) << s.message();
  EXPECT_GE(tier->stats().io_retries, 2u);
  // Failed rows are not cached: a retry fails again rather than serving garbage.
  EXPECT_EQ(tier->ReadRows(0, rows, out.data(), {}).code(), StatusCode::kUnavailable);
}

TEST_F(NvmeTierTest, FailedBlockFailsOnlyItsRows) {
  // Rows far apart: one fails (its aligned block is poisoned), the others are read.
  const int64_t rows[] = {100, 20000, 40000};
  const uint64_t bad = file_->tables[0].file_offset + 20000 * kDh * 2;
  NvmeTierOptions o;
  o.cache_bytes = 64 << 10;
  o.reader.max_retries = 1;
  o.reader.fault_hook = [bad](uint64_t offset, uint32_t length, int) {
    return offset <= bad && bad < offset + length ? -EIO : 0;
  };
  auto tier = Make(o);
  ASSERT_NE(tier, nullptr);
  std::vector<uint8_t> out(3 * kDh * 2, 0xAB);
  std::vector<uint8_t> failed(3, 0);
  const Status s = tier->ReadRows(0, rows, out.data(), failed);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_EQ(failed, (std::vector<uint8_t>{0, 1, 0}));
  const size_t rb = kDh * 2;
  EXPECT_EQ(std::memcmp(out.data(), file_->data[0].data() + 100 * rb, rb), 0);
  EXPECT_EQ(std::memcmp(out.data() + 2 * rb, file_->data[0].data() + 40000 * rb, rb), 0);
  for (size_t b = rb; b < 2 * rb; ++b) ASSERT_EQ(out[b], 0) << "failed row bytes are zeroed";
  // The good rows were cached; the bad one was not.
  failed.assign(3, 0);
  EXPECT_EQ(tier->ReadRows(0, rows, out.data(), failed).code(), StatusCode::kUnavailable);
  EXPECT_EQ(failed, (std::vector<uint8_t>{0, 1, 0}));
}

TEST_F(NvmeTierTest, OutOfRangeRow) {
  auto tier = Make({});
  ASSERT_NE(tier, nullptr);
  const int64_t rows[] = {kRows1};
  std::vector<uint8_t> out(kDh * 2);
  EXPECT_EQ(tier->ReadRows(1, rows, out.data(), {}).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(tier->ReadRows(2, {}, out.data(), {}).code(), StatusCode::kOutOfRange);
}

TEST_F(NvmeTierTest, RefusesBadTableInfo) {
  std::vector<TensorInfo> tables = file_->tables;
  tables[1].nbytes -= 2;
  auto r = CreateNvmeTier({tables.begin(), tables.end()}, {});
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(tables[1].name), std::string::npos);
  tables = file_->tables;
  tables[1].shape[0] += 10000000;  // far past the file's end (the FP8 tensors follow it)
  tables[1].nbytes += 10000000 * kDh * 2;
  EXPECT_EQ(CreateNvmeTier({tables.begin(), tables.end()}, {}).status().code(),
            StatusCode::kOutOfRange);
  NvmeTierOptions o;
  o.policy = "mru";
  EXPECT_EQ(CreateNvmeTier({file_->tables.begin(), file_->tables.end()}, o).status().code(),
            StatusCode::kInvalidArgument);
}

// Needs no file system: refused before any file is opened.
TEST(NvmeTier, InMemoryTableIsFailedPrecondition) {
  TensorInfo info;
  info.name = "model.layers.1.engram.multi_head_embedding.embedding.weight";
  info.dtype = DType::kBF16;
  info.shape = {10, 4};
  info.nbytes = 80;
  auto r = CreateNvmeTier({info}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find(info.name), std::string::npos);
  EXPECT_NE(r.status().message().find("engram pack synth"), std::string::npos);
}

}  // namespace
}  // namespace engram

namespace engram {
namespace {

// Packed FP8 row r of the fixture: its 256 codes, then its 8 scales.
std::vector<uint8_t> PackedRow(const TableFile& f, int64_t r) {
  std::vector<uint8_t> row(f.fp8_codes.begin() + r * kFp8Dh,
                           f.fp8_codes.begin() + (r + 1) * kFp8Dh);
  row.insert(row.end(), f.fp8_scales.begin() + r * (kFp8Dh / 32),
             f.fp8_scales.begin() + (r + 1) * (kFp8Dh / 32));
  return row;
}

class NvmeFp8Test : public NvmeTierTest {
 protected:
  std::unique_ptr<TableTier> MakeFp8(NvmeTierOptions o) {
    auto tier = CreateNvmeTier({TableFiles(file_->fp8, file_->fp8_scale)}, o);
    EXPECT_TRUE(tier.ok()) << tier.status().ToString();
    return tier.ok() ? std::move(tier).value() : nullptr;
  }
  static void ExpectPacked(const std::vector<int64_t>& rows, const std::vector<uint8_t>& out) {
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::vector<uint8_t> want = PackedRow(*file_, rows[i]);
      ASSERT_EQ(std::memcmp(out.data() + i * kFp8RowBytes, want.data(), kFp8RowBytes), 0)
          << "row " << rows[i];
    }
  }
};

TEST_F(NvmeFp8Test, PackedRowsEqualTheFileWithEveryReadShape) {
  struct Case {
    uint32_t merge_bytes;
    uint64_t cache_bytes;
  };
  // One read per part; merged neighbours; merged plus a row cache (hits on the second pass).
  for (const Case c : {Case{0, 0}, Case{128 << 10, 0}, Case{128 << 10, 200 * kFp8RowBytes}}) {
    NvmeTierOptions o;
    o.merge_bytes = c.merge_bytes;
    o.cache_bytes = c.cache_bytes;
    auto tier = MakeFp8(o);
    ASSERT_NE(tier, nullptr);
    EXPECT_TRUE(tier->format().fp8());
    EXPECT_EQ(tier->row_bytes(), kFp8RowBytes);
    std::vector<int64_t> rows = DistinctRows(400, kFp8Rows, 11);
    for (int64_t r = 1000; r < 1040; ++r) {  // neighbours: merged reads across blocks
      if (std::find(rows.begin(), rows.end(), r) == rows.end()) rows.push_back(r);
    }
    rows.push_back(kFp8Rows - 1);
    if (std::find(rows.begin(), rows.end(), 0) == rows.end()) rows.push_back(0);
    for (int pass = 0; pass < 2; ++pass) {
      std::vector<uint8_t> out(rows.size() * kFp8RowBytes, 0xCD);
      ASSERT_TRUE(tier->ReadRows(0, rows, out.data(), {}).ok());
      ExpectPacked(rows, out);
    }
    EXPECT_EQ(tier->stats().bytes_moved, 2 * rows.size() * kFp8RowBytes);
    if (c.cache_bytes > 0) {
      EXPECT_GT(tier->stats().cache_hits, 0u);
    }
  }
}

TEST_F(NvmeFp8Test, ABadScaleBlockFailsOnlyItsRows) {
  // The scales of row 20000 sit in a poisoned block: that row fails, whole (its codes were
  // read fine), and is zeroed; its neighbours far away are served and cached.
  const int64_t rows[] = {100, 20000, 29000};
  const uint64_t bad = file_->fp8_scale.file_offset + 20000 * (kFp8Dh / 32);
  NvmeTierOptions o;
  o.cache_bytes = 64 << 10;
  o.reader.max_retries = 1;
  o.reader.fault_hook = [bad](uint64_t offset, uint32_t length, int) {
    return offset <= bad && bad < offset + length ? -EIO : 0;
  };
  auto tier = MakeFp8(o);
  ASSERT_NE(tier, nullptr);
  std::vector<uint8_t> out(3 * kFp8RowBytes, 0xAB);
  std::vector<uint8_t> failed(3, 0);
  const Status s = tier->ReadRows(0, rows, out.data(), failed);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_EQ(failed, (std::vector<uint8_t>{0, 1, 0}));
  ExpectPacked({100}, out);
  const std::vector<uint8_t> third(out.begin() + 2 * kFp8RowBytes, out.end());
  ExpectPacked({29000}, third);
  for (size_t b = kFp8RowBytes; b < 2 * kFp8RowBytes; ++b) {
    ASSERT_EQ(out[b], 0) << "failed row bytes are zeroed";
  }
  failed.assign(3, 0);  // not cached: it fails again
  EXPECT_EQ(tier->ReadRows(0, rows, out.data(), failed).code(), StatusCode::kUnavailable);
  EXPECT_EQ(failed, (std::vector<uint8_t>{0, 1, 0}));
}

TEST_F(NvmeFp8Test, ScalesAreRequiredAndChecked) {
  auto missing = CreateNvmeTier({TableFiles(file_->fp8)}, {});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("scales"), std::string::npos)
      << missing.status().ToString();
  TensorInfo wrong = file_->fp8_scale;
  wrong.dtype = DType::kBF16;
  wrong.nbytes *= 2;
  auto bad_dtype = CreateNvmeTier({TableFiles(file_->fp8, wrong)}, {});
  ASSERT_FALSE(bad_dtype.ok());
  EXPECT_NE(bad_dtype.status().message().find("expected F8_E8M0"), std::string::npos)
      << bad_dtype.status().ToString();
  // BF16 rows with scales beside them: refused (the scales would be ignored).
  auto extra = CreateNvmeTier({TableFiles(file_->tables[0], file_->fp8_scale)}, {});
  EXPECT_EQ(extra.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace engram
