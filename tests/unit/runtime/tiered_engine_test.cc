// The Engram tables in the host (DRAM) and NVMe tiers, with and without prefetch, give the
// same logits as the resident tables, and the overlap accounting counts the row traffic.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <filesystem>
#include <optional>
#include <set>

#include "model/model_files.h"
#include "model/sampler.h"
#include "model/synth.h"
#include "model/weights.h"
#include "prefetch/ngram_hasher.h"
#include "runtime/engine.h"
#include "runtime/engine_loop.h"

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

// A tiny model written under a directory that accepts O_DIRECT; "" when there is none.
std::string WriteTinyModel(const char* name, std::optional<double> table_gb = std::nullopt,
                           const char* preset = "tiny") {
  const std::string base = DirectIoDir();
  if (base.empty()) return "";
  const std::string dir = base + "/engram-" + name + "-" + std::to_string(::getpid());
  SynthOptions o;
  o.preset = preset;
  o.table_gb = table_gb;
  o.progress = false;
  const Status st = WriteSynthModel(o, dir);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return st.ok() ? dir : "";
}

// period > 0 repeats the token pattern (recurring n-grams, so a hot cache gets hits).
std::vector<float> TierLogits(const std::string& dir, const TableOptions& tables,
                              OverlapStats* overlap = nullptr, int period = 0) {
  auto files = OpenModel(dir);
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
  for (size_t i = 0; i < ids.size(); ++i) {
    const size_t k = period > 0 ? i % static_cast<size_t>(period) : i;
    ids[i] = static_cast<int32_t>((k * 29 + 3) % 512);
  }
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

class TieredEngine : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { dir_ = WriteTinyModel("tiered-test"); }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::vector<float> Logits(const TableOptions& tables, OverlapStats* overlap = nullptr,
                            int period = 0) {
    return TierLogits(dir_, tables, overlap, period);
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

TEST_F(TieredEngine, ZeroCopyAndHotCacheEqualResidentTables) {
  if (dir_.empty()) GTEST_SKIP() << "no filesystem here accepts O_DIRECT";
  constexpr int kPeriod = 7;
  const auto want = Logits(TableOptions{}, nullptr, kPeriod);
  ASSERT_FALSE(want.empty());
  struct Case {
    const char* tier;
    const char* transfer;
    uint64_t hot_bytes;
    bool prefetch;
  };
  // A 20-row hot cache per layer (16-byte rows): admissions and evictions both happen.
  const Case cases[] = {{"dram", "zero_copy", 0, true}, {"dram", "zero_copy", 0, false},
                        {"dram", "copy", 320, true},    {"dram", "zero_copy", 320, true},
                        {"nvme", "copy", 320, true},    {"dram", "copy", 320, false}};
  for (const Case& c : cases) {
    TableOptions t;
    t.tier = c.tier;
    t.transfer = c.transfer;
    t.hot_cache_bytes = c.hot_bytes;
    t.prefetch = c.prefetch;
    t.cache_bytes = 16 * 1024;
    OverlapStats overlap;
    const std::string what = std::string(c.tier) + " " + c.transfer + " hot " +
                             std::to_string(c.hot_bytes) + (c.prefetch ? " prefetch" : " sync");
    EXPECT_EQ(Logits(t, &overlap, kPeriod), want) << what;
    ASSERT_EQ(overlap.layers.size(), 1u);
    const LayerOverlap& l = overlap.layers[0];
    if (c.hot_bytes > 0) {
      // The pattern recurs every 7 tokens: its n-gram rows come back from the hot cache.
      EXPECT_GT(l.hot_hits, 0u) << what;
      EXPECT_LE(l.hot_hits, l.unique_rows);
      EXPECT_EQ(l.bytes_moved, (l.unique_rows - l.hot_hits) * 16u) << what;
    } else {
      EXPECT_EQ(l.hot_hits, 0u);
      EXPECT_EQ(l.bytes_moved, l.unique_rows * 16u);
    }
  }
}

TEST_F(TieredEngine, PinnedDramTablesEqualResidentTables) {
  if (dir_.empty()) GTEST_SKIP() << "no filesystem here accepts O_DIRECT";
  const auto want = Logits(TableOptions{});
  TableOptions t;
  t.tier = "dram";
  t.pin = "on";  // CPU backend: mlock; a refusal is logged and the tables stay usable
  EXPECT_EQ(Logits(t), want);
}

TEST_F(TieredEngine, BadTableOptionsAreRefused) {
  auto make = [](TableOptions t) {
    auto files = OpenModel("synth:tiny");
    EXPECT_TRUE(files.ok());
    EngineOptions opt;
    opt.tables = std::move(t);
    return Engine::Create(std::move(files).value(), opt).status();
  };
  TableOptions t;
  t.tier = "dram";
  t.transfer = "teleport";
  Status st = make(t);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("copy, zero_copy"), std::string::npos) << st.message();
  t.transfer = "copy";
  t.pin = "maybe";
  st = make(t);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("tables.pin"), std::string::npos) << st.message();
  t.pin = "auto";
  t.hot_cache_bytes = 3;  // less than one row
  st = make(t);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("hot_cache_bytes"), std::string::npos) << st.message();
}

TEST_F(TieredEngine, ZeroCopyNeedsTheDramTier) {
  if (dir_.empty()) GTEST_SKIP() << "no filesystem here accepts O_DIRECT";
  auto files = OpenModel(dir_);
  ASSERT_TRUE(files.ok());
  EngineOptions opt;
  opt.tables.tier = "nvme";
  opt.tables.transfer = "zero_copy";
  const Status st = Engine::Create(std::move(files).value(), opt).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find("tables.tier dram"), std::string::npos) << st.message();
}

// An NVMe read error (injected through the reader's fault hook) after retries ends only the
// request whose tokens need the unreadable rows; the other request in the same steps finishes
// with exactly the tokens it gets without the fault.
class NvmeFaultIsolation : public ::testing::Test {
 protected:
  // 250k 16-byte rows: a 4 KiB block holds 256 of them.
  static void SetUpTestSuite() { dir_ = WriteTinyModel("fault-test", 0.004); }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  static std::vector<int32_t> Prompt(int seed, int n) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 37 + seed * 101 + 5) % 512);
    return ids;
  }

  // File offsets of every Engram row the tokens need (layer tables, absolute rows).
  static std::vector<uint64_t> RowOffsets(const ModelFiles& files,
                                          const std::vector<int32_t>& tokens) {
    auto h = NgramHasher::Create(*files.config.engram, files.compression);
    EXPECT_TRUE(h.ok());
    std::vector<int64_t> t(tokens.begin(), tokens.end());
    std::vector<uint64_t> out;
    for (int l = 0; l < h->num_layers(); ++l) {
      std::vector<int64_t> rows(t.size() * static_cast<size_t>(h->num_heads()));
      h->Hash(l, {}, t, /*add_offsets=*/true, rows.data());
      const TensorInfo* info = files.store.Info(EngramTableName(
          *files.config.engram, files.config.engram->layer_ids[static_cast<size_t>(l)]));
      const uint64_t rb = static_cast<uint64_t>(info->shape[1]) * DTypeSize(info->dtype);
      for (int64_t r : rows) out.push_back(info->file_offset + static_cast<uint64_t>(r) * rb);
    }
    return out;
  }

  struct Outcome {
    std::vector<int32_t> tokens;
    FinishReason finish = FinishReason::kNone;
    Status status;
  };

  // Runs B (decoding) and then A through a real EngineLoop; returns {A, B}.
  static std::pair<Outcome, Outcome> Serve(std::function<int(uint64_t, uint32_t, int)> hook) {
    auto files = OpenModel(dir_);
    EXPECT_TRUE(files.ok()) << files.status().ToString();
    EngineOptions opt;
    opt.backend.threads = 2;
    opt.kv_tokens = 4096;
    opt.max_seqs = 4;
    opt.tables.tier = "nvme";
    opt.tables.cache_bytes = 64 * 1024;
    opt.tables.nvme_fault_hook = std::move(hook);
    auto engine = Engine::Create(std::move(files).value(), opt);
    EXPECT_TRUE(engine.ok()) << engine.status().ToString();
    ServingOptions so;
    so.limits.kv_blocks = 4096 / 16;
    EngineLoop loop(std::move(engine).value(), nullptr, so);
    auto submit = [&](const char* id, std::vector<int32_t> prompt, int max_tokens) {
      GenerationParams p;
      p.prompt = std::move(prompt);
      p.max_tokens = max_tokens;
      p.ignore_eos = true;
      auto r = loop.Submit(id, std::move(p), std::nullopt);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      return std::move(r).value();
    };
    auto drain = [](RequestState& r) {
      Outcome o;
      StreamEvent ev;
      while (r.Pop(&ev, std::chrono::milliseconds(30000))) {
        o.tokens.insert(o.tokens.end(), ev.token_ids.begin(), ev.token_ids.end());
        if (ev.finish != FinishReason::kNone) {
          o.finish = ev.finish;
          o.status = ev.status;
          break;
        }
      }
      return o;
    };
    auto b = submit("b", Prompt(2, 12), 24);
    // A arrives while B decodes, so A's prefill and B's decode share steps.
    StreamEvent first;
    EXPECT_TRUE(b->Pop(&first, std::chrono::milliseconds(30000)));
    auto a = submit("a", Prompt(1, 12), 8);
    Outcome oa = drain(*a);
    Outcome ob = drain(*b);
    ob.tokens.insert(ob.tokens.begin(), first.token_ids.begin(), first.token_ids.end());
    return {oa, ob};
  }

  static std::string dir_;
};
std::string NvmeFaultIsolation::dir_;

TEST_F(NvmeFaultIsolation, OnlyTheRequestNeedingTheBadBlockFails) {
  if (dir_.empty()) GTEST_SKIP() << "no filesystem here accepts O_DIRECT";
  const auto [ref_a, ref_b] = Serve(nullptr);
  ASSERT_EQ(ref_a.finish, FinishReason::kLength) << ref_a.status.ToString();
  ASSERT_EQ(ref_b.finish, FinishReason::kLength) << ref_b.status.ToString();
  ASSERT_EQ(ref_b.tokens.size(), 24u);

  // A 4 KiB block that A's prompt needs and B never touches (prompt and every token it runs).
  auto files = OpenModel(dir_);
  ASSERT_TRUE(files.ok());
  std::vector<int32_t> b_all = Prompt(2, 12);
  b_all.insert(b_all.end(), ref_b.tokens.begin(), ref_b.tokens.end());
  std::set<uint64_t> b_blocks;
  for (uint64_t off : RowOffsets(*files, b_all)) b_blocks.insert(off / 4096);
  uint64_t bad = UINT64_MAX;
  for (uint64_t off : RowOffsets(*files, Prompt(1, 12))) {
    if (b_blocks.count(off / 4096) == 0) {
      bad = off;
      break;
    }
  }
  ASSERT_NE(bad, UINT64_MAX) << "every block A needs is also B's; pick other prompts";

  std::atomic<int> faults{0};
  const auto [a, b] = Serve([bad, &faults](uint64_t offset, uint32_t length, int) {
    if (offset <= bad && bad < offset + length) {
      ++faults;
      return -EIO;
    }
    return 0;
  });
  EXPECT_GT(faults.load(), 1) << "the read is retried before it fails";
  EXPECT_EQ(a.finish, FinishReason::kError);
  EXPECT_EQ(a.status.code(), StatusCode::kUnavailable) << a.status.ToString();
  EXPECT_NE(a.status.message().find("engram"), std::string::npos) << a.status.message();
  EXPECT_EQ(b.finish, FinishReason::kLength) << b.status.ToString();
  EXPECT_EQ(b.tokens, ref_b.tokens);
}

TEST_F(NvmeFaultIsolation, StepReportsTheFailedSequenceOnly) {
  if (dir_.empty()) GTEST_SKIP() << "no filesystem here accepts O_DIRECT";
  auto files = OpenModel(dir_);
  ASSERT_TRUE(files.ok());
  // Fail every read of the block holding A's first row; B's prompt must avoid that block.
  const std::vector<int32_t> pa = Prompt(1, 12), pb = Prompt(3, 12);
  std::set<uint64_t> b_blocks;
  for (uint64_t off : RowOffsets(*files, pb)) b_blocks.insert(off / 4096);
  uint64_t bad = UINT64_MAX;
  for (uint64_t off : RowOffsets(*files, pa)) {
    if (b_blocks.count(off / 4096) == 0) {
      bad = off;
      break;
    }
  }
  ASSERT_NE(bad, UINT64_MAX);
  // greedy: both chunks are greedy (StepOutput form) and b_id receives B's id.
  auto run = [&](bool faulty, bool with_failed, std::vector<Engine::SeqFailure>* failed,
                 std::vector<float>* b_logits, int32_t* b_id = nullptr) -> Status {
    auto f = OpenModel(dir_);
    EngineOptions opt;
    opt.backend.threads = 2;
    opt.kv_tokens = 1024;
    opt.max_seqs = 2;
    opt.tables.tier = "nvme";
    opt.tables.prefetch = faulty;  // both paths: copy thread and synchronous
    if (faulty) {
      opt.tables.nvme_fault_hook = [bad](uint64_t offset, uint32_t length, int) {
        return offset <= bad && bad < offset + length ? -EIO : 0;
      };
    }
    auto e = Engine::Create(std::move(f).value(), opt);
    if (!e.ok()) return e.status();
    auto sa = (*e)->AddSequence();
    auto sb = (*e)->AddSequence();
    StepChunk ch[2] = {{*sa, pa}, {*sb, pb}};
    if (b_id != nullptr) {
      ch[0].greedy = ch[1].greedy = true;
      Engine::StepOutput o;
      ENGRAM_RETURN_IF_ERROR((*e)->Step(ch, false, o, with_failed ? failed : nullptr));
      if (o.greedy_ids.size() != 2 || !o.logits.empty()) return Internal("not two greedy ids");
      *b_id = o.greedy_ids[1];
      return Status::Ok();
    }
    auto out = (*e)->Step(ch, false, with_failed ? failed : nullptr);
    if (!out.ok()) return out.status();
    const size_t V = static_cast<size_t>((*e)->config().vocab_size);
    b_logits->assign(out->begin() + static_cast<ptrdiff_t>(V), out->end());
    return Status::Ok();
  };
  std::vector<float> want, got;
  std::vector<Engine::SeqFailure> failed;
  ASSERT_TRUE(run(false, true, &failed, &want).ok());
  EXPECT_TRUE(failed.empty());
  ASSERT_TRUE(run(true, true, &failed, &got).ok());
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].seq, 0);
  EXPECT_EQ(failed[0].status.code(), StatusCode::kUnavailable);
  EXPECT_EQ(got, want) << "B's logits do not depend on A's unreadable rows";
  // Without a place to report per-sequence failures the whole step fails.
  const Status st = run(true, false, nullptr, &got);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  // Greedy chunks (ids picked on the device): A is listed, B's id is the argmax of its logits.
  failed.clear();
  int32_t b_id = -1;
  const Status gst = run(true, true, &failed, &got, &b_id);
  ASSERT_TRUE(gst.ok()) << gst.ToString();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].seq, 0);
  EXPECT_EQ(b_id, Argmax(want));
  EXPECT_EQ(run(true, false, nullptr, &got, &b_id).code(), StatusCode::kUnavailable);
}

TEST(EngineChecksums, CorruptTableIsRefusedAtStartNamingFileAndTensor) {
  const std::string dir = "/tmp/engram-cksum-engine-" + std::to_string(::getpid());
  SynthOptions o;
  o.preset = "tiny";
  o.progress = false;
  ASSERT_TRUE(WriteSynthModel(o, dir).ok());
  const std::string table = EngramTableName(EngramConfig{}, 1);
  TensorInfo info;
  {
    auto files = OpenModel(dir);
    ASSERT_TRUE(files.ok());
    ASSERT_NE(files->store.Info(table), nullptr);
    info = *files->store.Info(table);
  }
  // Flip one byte in the middle of the table, in its file.
  {
    const int fd = ::open(info.file.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    const off_t at = static_cast<off_t>(info.file_offset + info.nbytes / 2);
    unsigned char b = 0;
    ASSERT_EQ(::pread(fd, &b, 1, at), 1);
    b ^= 0x5a;
    ASSERT_EQ(::pwrite(fd, &b, 1, at), 1);
    ::close(fd);
  }
  for (const char* tier : {"resident", "dram"}) {
    auto files = OpenModel(dir);
    ASSERT_TRUE(files.ok());
    EngineOptions opt;
    opt.tables.tier = tier;
    const Status st = Engine::Create(std::move(files).value(), opt).status();
    EXPECT_EQ(st.code(), StatusCode::kDataLoss) << tier << ": " << st.ToString();
    EXPECT_NE(st.message().find(table), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(info.file), std::string::npos) << st.message();
  }
  // An operator who rewrote the table on purpose can start without verification.
  auto files = OpenModel(dir);
  ASSERT_TRUE(files.ok());
  EngineOptions opt;
  opt.tables.verify_checksums = false;
  EXPECT_TRUE(Engine::Create(std::move(files).value(), opt).ok());
  fs::remove_all(dir);
}

TEST(DramTier, SyntheticTablesAreNotHeldTwice) {
  auto files = OpenModel("synth:tiny");
  ASSERT_TRUE(files.ok());
  const std::string table =
      EngramTableName(*files->config.engram, files->config.engram->layer_ids[0]);
  EngineOptions opt;
  opt.tables.tier = "dram";
  auto e = Engine::Create(std::move(files).value(), opt);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  // The dram tier copied the table; the engine's synthetic copy is gone.
  EXPECT_EQ((*e)->files().store.Get(table).status().code(), StatusCode::kFailedPrecondition);
  ASSERT_NE((*e)->files().store.Info(table), nullptr);
  auto seq = (*e)->AddSequence();
  const int32_t ids[] = {1, 2, 3};
  StepChunk ch{*seq, ids};
  EXPECT_TRUE((*e)->Step({&ch, 1}, false).ok());
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

namespace engram {
namespace {

// DeepSeek-V4.1's layout: FP8 rows of 32 values + 1 scale = 33 bytes (rows straddle every
// alignment), 4 heads per token, two Engram layers.
class V41TieredEngine : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = WriteTinyModel("v41-tiered-test", std::nullopt, "tiny-v41");
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  static std::string dir_;
};
std::string V41TieredEngine::dir_;

TEST_F(V41TieredEngine, EveryTierAndModeEqualsResidentTables) {
  if (dir_.empty()) GTEST_SKIP() << "no filesystem here accepts O_DIRECT";
  constexpr int kPeriod = 7;
  constexpr uint64_t kRowBytes = 33;
  const auto want = TierLogits(dir_, TableOptions{}, nullptr, kPeriod);
  ASSERT_FALSE(want.empty());
  for (const char* tier : {"dram", "nvme"}) {
    for (const char* transfer : {"copy", "zero_copy"}) {
      if (std::string(tier) == "nvme" && std::string(transfer) == "zero_copy") continue;
      for (const uint64_t hot : {uint64_t{0}, 2 * 20 * kRowBytes}) {
        for (const bool prefetch : {true, false}) {
          TableOptions t;
          t.tier = tier;
          t.transfer = transfer;
          t.hot_cache_bytes = hot;
          t.prefetch = prefetch;
          t.cache_bytes = 40 * kRowBytes;  // a small row cache: hits and misses both happen
          OverlapStats overlap;
          const std::string what = std::string(tier) + " " + transfer + " hot " +
                                   std::to_string(hot) + (prefetch ? " prefetch" : " sync");
          EXPECT_EQ(TierLogits(dir_, t, &overlap, kPeriod), want) << what;
          ASSERT_EQ(overlap.layers.size(), 2u) << what;
          for (const LayerOverlap& l : overlap.layers) {
            EXPECT_EQ(l.rows_requested, 30u * 4u) << what;  // 30 tokens x 4 heads
            EXPECT_EQ(l.bytes_moved, (l.unique_rows - l.hot_hits) * kRowBytes) << what;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace engram
