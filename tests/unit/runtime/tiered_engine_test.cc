// The Engram tables in the host (DRAM) and NVMe tiers, with and without prefetch, give the
// same logits as the resident tables, and the overlap accounting counts the row traffic.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>
#include <filesystem>

#include "model/model_files.h"
#include "model/synth.h"
#include "runtime/engine.h"

namespace engram {
namespace {

namespace fs = std::filesystem;

// A directory on a filesystem that accepts O_DIRECT (the NVMe tier reads with it), or "".
std::string DirectIoDir() {
  for (const fs::path& base : {fs::current_path(), fs::path("/var/tmp"), fs::path("/tmp")}) {
    const fs::path probe = base / ("engram-odirect-probe-" + std::to_string(::getpid()));
    const int fd = ::open(probe.c_str(), O_CREAT | O_RDWR | O_DIRECT, 0600);
    if (fd >= 0) {
      ::close(fd);
      fs::remove(probe);
      return base.string();
    }
  }
  return "";
}

class TieredEngine : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string base = DirectIoDir();
    if (base.empty()) return;
    dir_ = base + "/engram-tiered-test-" + std::to_string(::getpid());
    SynthOptions o;
    o.preset = "tiny";
    ASSERT_TRUE(WriteSynthModel(o, dir_).ok());
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::vector<float> Logits(const TableOptions& tables, OverlapStats* overlap = nullptr) {
    auto files = OpenModel(dir_);
    EXPECT_TRUE(files.ok()) << files.status().ToString();
    EngineOptions opt;
    opt.backend.threads = 2;
    opt.kv_tokens = 4096;
    opt.max_seqs = 4;
    opt.tables = tables;
    auto e = Engine::Create(std::move(files).value(), opt);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    if (!e.ok()) return {};
    Engine& engine = **e;
    std::vector<int32_t> ids(30);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 29 + 3) % 512);
    auto seq = engine.AddSequence();
    std::vector<float> all;
    // A prefill chunk, then decode steps: both paths through the tier.
    StepChunk ch{*seq, std::span<const int32_t>(ids.data(), 20)};
    auto out = engine.Step({&ch, 1}, true);
    EXPECT_TRUE(out.ok()) << out.status().ToString();
    all = *out;
    for (size_t i = 20; i < ids.size(); ++i) {
      StepChunk d{*seq, std::span<const int32_t>(&ids[i], 1)};
      auto r = engine.Step({&d, 1}, true);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      all.insert(all.end(), r->begin(), r->end());
    }
    if (overlap) *overlap = engine.overlap_stats();
    return all;
  }

  static std::string dir_;
};
std::string TieredEngine::dir_;

TEST_F(TieredEngine, DramAndNvmeTiersEqualResidentTables) {
  if (dir_.empty()) GTEST_SKIP() << "no filesystem here accepts O_DIRECT";
  TableOptions resident;
  const auto want = Logits(resident);
  ASSERT_FALSE(want.empty());
  for (const char* tier : {"dram", "nvme"}) {
    for (bool prefetch : {true, false}) {
      TableOptions t;
      t.tier = tier;
      t.prefetch = prefetch;
      t.cache_bytes = 16 * 1024;  // a small row cache: hits and misses both happen
      OverlapStats overlap;
      const auto got = Logits(t, &overlap);
      EXPECT_EQ(got, want) << tier << (prefetch ? " with prefetch" : " synchronous");
      ASSERT_EQ(overlap.layers.size(), 1u);
      const LayerOverlap& l = overlap.layers[0];
      EXPECT_EQ(l.steps, 11u);                // one prefill chunk + 10 decode steps
      EXPECT_EQ(l.rows_requested, 30u * 8u);  // 30 tokens x 8 heads
      EXPECT_LE(l.unique_rows, l.rows_requested);
      EXPECT_GT(l.unique_rows, 0u);
      EXPECT_EQ(l.bytes_moved, l.unique_rows * 8u * 2u);  // Dh 8, BF16
      EXPECT_EQ(overlap.prefetch, prefetch);
      EXPECT_GT(overlap.step_s, 0.0);
    }
  }
}

TEST_F(TieredEngine, NvmeTierRefusesInMemoryTables) {
  auto files = OpenModel("synth:tiny");
  ASSERT_TRUE(files.ok());
  EngineOptions opt;
  opt.tables.tier = "nvme";
  auto e = Engine::Create(std::move(files).value(), opt);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kFailedPrecondition) << e.status().ToString();
}

}  // namespace
}  // namespace engram
