// IoUringReader against a real file on a filesystem with O_DIRECT; skips (with the reason)
// where O_DIRECT or io_uring is unavailable.
#include "tiering/io_uring_reader.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

namespace engram {
namespace {

namespace fs = std::filesystem;

// Writes `bytes` random bytes to a new file in the first directory (build dir, /var/tmp, /tmp)
// whose filesystem accepts O_DIRECT and where io_uring works. Empty path + reason otherwise.
struct TestFile {
  std::string path;
  std::vector<uint8_t> data;
  std::string skip_reason;

  explicit TestFile(size_t bytes, uint32_t seed) {
    std::vector<std::string> tried;
    for (const fs::path& dir : {fs::current_path(), fs::path("/var/tmp"), fs::path("/tmp")}) {
      std::string p = (dir / "io_uring_reader_test.XXXXXX").string();
      const int fd = mkstemp(p.data());
      if (fd < 0) {
        tried.push_back(dir.string() + ": " + std::strerror(errno));
        continue;
      }
      close(fd);
      const int dfd = open(p.c_str(), O_RDONLY | O_DIRECT);
      if (dfd < 0) {
        tried.push_back(dir.string() + ": O_DIRECT: " + std::strerror(errno));
        unlink(p.c_str());
        continue;
      }
      close(dfd);
      path = p;
      break;
    }
    if (path.empty()) {
      for (const auto& t : tried) skip_reason += t + "; ";
      skip_reason = "no directory supports O_DIRECT (" + skip_reason + ")";
      return;
    }
    data.resize(bytes);
    std::mt19937_64 rng(seed);
    for (size_t i = 0; i < bytes; i += 8) {
      const uint64_t v = rng();
      std::memcpy(&data[i], &v, std::min<size_t>(8, bytes - i));
    }
    FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr || std::fwrite(data.data(), 1, bytes, f) != bytes || std::fclose(f) != 0) {
      skip_reason = "cannot write " + path;
      path.clear();
      return;
    }
    auto probe = IoUringReader::Open(path, {});
    if (!probe.ok()) {
      skip_reason = probe.status().ToString();
      unlink(path.c_str());
      path.clear();
    }
  }
  ~TestFile() {
    if (!path.empty()) unlink(path.c_str());
  }
};

// 4 MiB + a tail that ends mid-block, so reads at the end cross EOF inside a block.
constexpr size_t kFileBytes = (4u << 20) + 1234;

class IoUringReaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { file_ = new TestFile(kFileBytes, 42); }
  static void TearDownTestSuite() {
    delete file_;
    file_ = nullptr;
  }
  void SetUp() override {
    if (file_->path.empty()) {
      std::fprintf(stderr, "SKIP: %s\n", file_->skip_reason.c_str());
      GTEST_SKIP() << file_->skip_reason;
    }
  }
  std::unique_ptr<IoUringReader> OpenReader(ReaderOptions opts = {}) {
    auto r = IoUringReader::Open(file_->path, opts);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }
  // Requests with their own destination buffers.
  struct Batch {
    std::vector<ReadRequest> reqs;
    std::vector<std::vector<uint8_t>> bufs;
    std::vector<ReadRequest*> ptrs;
    void Add(uint64_t off, uint32_t len) {
      bufs.emplace_back(len, 0xAB);
      reqs.push_back({});
      reqs.back().offset = off;
      reqs.back().length = len;
    }
    std::span<ReadRequest*> Span() {
      ptrs.clear();
      for (size_t i = 0; i < reqs.size(); ++i) {
        reqs[i].dest = bufs[i].data();
        ptrs.push_back(&reqs[i]);
      }
      return ptrs;
    }
    bool Matches(size_t i, const std::vector<uint8_t>& data) const {
      return reqs[i].bytes_read == reqs[i].length &&
             std::memcmp(bufs[i].data(), data.data() + reqs[i].offset, reqs[i].length) == 0;
    }
  };
  static TestFile* file_;
};
TestFile* IoUringReaderTest::file_ = nullptr;

TEST_F(IoUringReaderTest, RandomUnalignedRangesMatch) {
  ReaderOptions opts;
  opts.queue_depth = 8;
  auto reader = OpenReader(opts);
  ASSERT_NE(reader, nullptr);
  EXPECT_TRUE(reader->direct_io());
  EXPECT_GE(reader->alignment(), 512u);
  std::mt19937 rng(7);
  Batch b;
  for (int i = 0; i < 500; ++i) {
    const uint32_t len = 1 + rng() % 20000;
    b.Add(rng() % (kFileBytes - len + 1), len);
  }
  ASSERT_TRUE(reader->ReadBatch(b.Span()).ok());
  for (size_t i = 0; i < b.reqs.size(); ++i) {
    ASSERT_TRUE(b.reqs[i].status.ok()) << i << ": " << b.reqs[i].status.ToString();
    ASSERT_TRUE(b.Matches(i, file_->data)) << "request " << i << " at " << b.reqs[i].offset;
  }
  // The reader is reusable across batches.
  Batch again;
  again.Add(12345, 678);
  EXPECT_TRUE(reader->ReadBatch(again.Span()).ok());
  EXPECT_TRUE(again.Matches(0, file_->data));
}

TEST_F(IoUringReaderTest, AlignmentBoundariesAndFileEnd) {
  auto reader = OpenReader();
  ASSERT_NE(reader, nullptr);
  const uint64_t a = reader->alignment();
  Batch b;
  b.Add(a - 1, 2);                                      // crosses one boundary
  b.Add(a, static_cast<uint32_t>(a));                   // exactly aligned
  b.Add(3 * a - 7, static_cast<uint32_t>(2 * a + 14));  // crosses three
  b.Add(0, 1);
  b.Add(kFileBytes - 10, 10);  // ends at EOF, mid-block
  b.Add(kFileBytes - 1, 1);
  b.Add(kFileBytes - 5, 10);   // past EOF
  b.Add(kFileBytes + 100, 4);  // entirely past EOF
  b.Add(kFileBytes, 0);        // empty at EOF: fine
  const Status s = reader->ReadBatch(b.Span());
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange) << s.ToString();
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_TRUE(b.reqs[i].status.ok()) << i << ": " << b.reqs[i].status.ToString();
    EXPECT_TRUE(b.Matches(i, file_->data)) << i;
  }
  EXPECT_EQ(b.reqs[6].status.code(), StatusCode::kOutOfRange);
  EXPECT_NE(b.reqs[6].status.message().find("past the end"), std::string::npos);
  EXPECT_EQ(b.reqs[6].bytes_read, 0u);
  EXPECT_EQ(b.reqs[7].status.code(), StatusCode::kOutOfRange);
  EXPECT_TRUE(b.reqs[8].status.ok());
}

TEST_F(IoUringReaderTest, EagainThenSuccess) {
  ReaderOptions opts;
  opts.queue_depth = 4;
  opts.fault_hook = [](uint64_t, uint32_t, int attempt) { return attempt < 2 ? -EAGAIN : 0; };
  auto reader = OpenReader(opts);
  ASSERT_NE(reader, nullptr);
  Batch b;
  for (int i = 0; i < 10; ++i) b.Add(i * 100003, 5000);
  ASSERT_TRUE(reader->ReadBatch(b.Span()).ok());
  for (size_t i = 0; i < b.reqs.size(); ++i) EXPECT_TRUE(b.Matches(i, file_->data)) << i;
  EXPECT_EQ(reader->stats().retries, 20u);
}

TEST_F(IoUringReaderTest, ShortReadsAreResubmitted) {
  ReaderOptions opts;
  opts.queue_depth = 4;
  // The first two attempts of every request return only part of what was asked: once an
  // unaligned amount, once one alignment unit.
  opts.fault_hook = [](uint64_t, uint32_t length, int attempt) {
    if (attempt == 0) return static_cast<int>(length / 2 + 3);
    if (attempt == 1) return 4096 < static_cast<int>(length) ? 4096 : 0;
    return 0;
  };
  auto reader = OpenReader(opts);
  ASSERT_NE(reader, nullptr);
  Batch b;
  for (int i = 0; i < 12; ++i) b.Add(777 + i * 300007, 30000 + i);
  ASSERT_TRUE(reader->ReadBatch(b.Span()).ok());
  for (size_t i = 0; i < b.reqs.size(); ++i) EXPECT_TRUE(b.Matches(i, file_->data)) << i;
  EXPECT_GE(reader->stats().short_reads, 12u);
}

TEST_F(IoUringReaderTest, TransientEioWithinRetriesRecovers) {
  ReaderOptions opts;
  opts.max_retries = 3;
  opts.fault_hook = [](uint64_t, uint32_t, int attempt) { return attempt < 3 ? -EIO : 0; };
  auto reader = OpenReader(opts);
  ASSERT_NE(reader, nullptr);
  Batch b;
  b.Add(100, 200);
  EXPECT_TRUE(reader->ReadBatch(b.Span()).ok());
  EXPECT_TRUE(b.Matches(0, file_->data));
}

TEST_F(IoUringReaderTest, EioBeyondRetriesFailsOnlyThatRequest) {
  constexpr uint64_t kBad = 1000000;
  ReaderOptions opts;
  opts.queue_depth = 4;
  opts.max_retries = 2;
  int bad_attempts = 0;
  opts.fault_hook = [&](uint64_t off, uint32_t len, int) {
    if (off <= kBad && kBad < off + len) {
      ++bad_attempts;
      return -EIO;
    }
    return 0;
  };
  auto reader = OpenReader(opts);
  ASSERT_NE(reader, nullptr);
  Batch b;
  for (int i = 0; i < 9; ++i) b.Add(i * 400009 + 5, 3000);  // none touches kBad
  b.Add(kBad, 64);
  const Status s = reader->ReadBatch(b.Span());
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  for (size_t i = 0; i < 9; ++i) {
    EXPECT_TRUE(b.reqs[i].status.ok()) << i << ": " << b.reqs[i].status.ToString();
    EXPECT_TRUE(b.Matches(i, file_->data)) << i;
  }
  const Status& bad = b.reqs[9].status;
  EXPECT_EQ(bad.code(), StatusCode::kUnavailable);
  EXPECT_NE(bad.message().find("offset 1000000"), std::string::npos) << bad.message();
  EXPECT_NE(bad.message().find(std::strerror(EIO)), std::string::npos) << bad.message();
  EXPECT_NE(bad.message().find(file_->path), std::string::npos) << bad.message();
  EXPECT_EQ(bad_attempts, 3);  // first try + max_retries
}

TEST_F(IoUringReaderTest, InvalidRequests) {
  ReaderOptions opts;
  opts.max_request_bytes = 4096;
  auto reader = OpenReader(opts);
  ASSERT_NE(reader, nullptr);
  Batch b;
  b.Add(0, 4097);
  b.Add(10, 10);
  auto span = b.Span();
  EXPECT_EQ(reader->ReadBatch(span).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(b.reqs[0].status.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(b.Matches(1, file_->data));
  b.reqs[1].dest = nullptr;
  std::vector<ReadRequest*> one = {&b.reqs[1]};
  EXPECT_EQ(reader->ReadBatch(one).code(), StatusCode::kInvalidArgument);
}

TEST(IoUringReader, MissingFileIsNotFound) {
  auto r = IoUringReader::Open("/nonexistent/dir/table.safetensors", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_NE(r.status().message().find("/nonexistent/dir/table.safetensors"), std::string::npos);
}

TEST(IoUringReader, BadOptionsAreInvalidArgument) {
  ReaderOptions opts;
  opts.queue_depth = 0;
  EXPECT_EQ(IoUringReader::Open("/nonexistent", opts).status().code(),
            StatusCode::kInvalidArgument);
}

// 4 KiB random aligned reads over a 256 MiB file at queue depth 32, O_DIRECT (page cache
// bypassed). Run: tiering_test --gtest_also_run_disabled_tests --gtest_filter='*Benchmark*'
TEST(IoUringReaderBench, DISABLED_Benchmark4KRandomReads) {
  constexpr size_t kBytes = 256u << 20;
  TestFile file(kBytes, 1);
  if (file.path.empty()) GTEST_SKIP() << file.skip_reason;
  ReaderOptions opts;
  opts.queue_depth = 32;
  opts.max_request_bytes = 4096;
  auto reader = IoUringReader::Open(file.path, opts);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  ASSERT_TRUE((*reader)->direct_io());
  constexpr int kBatch = 1024;
  constexpr int kReads = 64 * 1024;
  std::vector<ReadRequest> reqs(kBatch);
  std::vector<ReadRequest*> ptrs(kBatch);
  std::vector<uint8_t> dest(size_t{kBatch} * 4096);
  std::mt19937_64 rng(3);
  std::vector<double> seconds;
  for (int run = 0; run < 5; ++run) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int done = 0; done < kReads; done += kBatch) {
      for (int i = 0; i < kBatch; ++i) {
        reqs[i].offset = (rng() % (kBytes / 4096)) * 4096;
        reqs[i].length = 4096;
        reqs[i].dest = dest.data() + size_t{4096} * i;
        ptrs[i] = &reqs[i];
      }
      ASSERT_TRUE((*reader)->ReadBatch(ptrs).ok());
    }
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double med = seconds[seconds.size() / 2];
  std::printf(
      "IoUringReader 4 KiB random reads, 256 MiB file, QD 32, O_DIRECT (%s, alignment %u): "
      "median of 5 runs of %d reads: %.0f IOPS, %.1f MB/s (min %.0f IOPS, max %.0f IOPS)\n",
      (*reader)->uses_read_opcode() ? "IORING_OP_READ" : "READV", (*reader)->alignment(), kReads,
      kReads / med, kReads * 4096.0 / med / 1e6, kReads / seconds.back(), kReads / seconds.front());
}

}  // namespace
}  // namespace engram
