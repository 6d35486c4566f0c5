// The whole model on the CUDA backend against the CPU backend: logits within the BF16
// tolerance, decode == prefill on the GPU, and identical greedy generations; decode steps as
// CUDA graphs (backend.cuda_graphs) give exactly the logits of eager steps. Skips with the
// reason when no GPU is visible.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <span>

#include "engine_steps.h"
#include "kernels/backend.h"
#include "model/model_files.h"
#include "model/sampler.h"
#include "model/synth.h"
#include "runtime/engine.h"

namespace engram {
namespace {

// The CUDA backend rounds activations to BF16 before each GEMM (BF16 x BF16 -> F32); the CPU
// backend keeps them F32. Measured differences on tiny are ~3e-3 relative; 2e-2 leaves room.
constexpr double kCpuGpuTolerance = 2e-2;
// On one backend, decode and prefill run the same kernels over the same values except for
// the attention's split of the sequence; differences stay at F32 rounding.
constexpr double kDecodePrefillTolerance = 1e-4;

std::unique_ptr<Engine> MakeEngine(const std::string& spec, const std::string& kind,
                                   std::string* why, const TableOptions& tables = {},
                                   const std::string& weights = "auto") {
  auto files = OpenModel(spec);
  if (!files.ok()) {
    *why = files.status().ToString();
    return nullptr;
  }
  EngineOptions opt;
  opt.backend.kind = kind;
  opt.backend.threads = 2;
  opt.backend.weights = weights;
  opt.kv_tokens = 4096;
  opt.max_seqs = 8;
  opt.tables = tables;
  auto e = Engine::Create(std::move(files).value(), opt);
  if (!e.ok()) {
    *why = e.status().ToString();
    return nullptr;
  }
  return std::move(e).value();
}

double RelErr(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

std::vector<int32_t> Prompt(size_t n, int64_t vocab) {
  std::vector<int32_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 53 + 7) % vocab);
  return ids;
}

std::vector<float> RunChunks(Engine& e, const std::vector<int32_t>& ids, size_t chunk) {
  return testing::ChunkedLogits(e, ids, chunk);
}

class GpuEngineTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    gpu_ = MakeEngine(GetParam(), "cuda", &why);
    if (!gpu_) GTEST_SKIP() << "no CUDA backend: " << why;
    cpu_ = MakeEngine(GetParam(), "cpu", &why);
    ASSERT_TRUE(cpu_) << why;
  }
  std::unique_ptr<Engine> gpu_, cpu_;
};

TEST_P(GpuEngineTest, LogitsMatchCpuBackend) {
  const auto ids = Prompt(40, cpu_->config().vocab_size);
  const auto c = RunChunks(*cpu_, ids, ids.size());
  const auto g = RunChunks(*gpu_, ids, ids.size());
  ASSERT_EQ(c.size(), g.size());
  for (float v : g) ASSERT_TRUE(std::isfinite(v));
  const double err = RelErr(g, c);
  std::printf("[  info    ] %s: GPU vs CPU logits relative error %.3g\n", GetParam().c_str(), err);
  EXPECT_LE(err, kCpuGpuTolerance);
}

TEST_P(GpuEngineTest, DecodeEqualsPrefillOnGpu) {
  const auto ids = Prompt(27, gpu_->config().vocab_size);
  const auto full = RunChunks(*gpu_, ids, ids.size());
  const auto decode = RunChunks(*gpu_, ids, 1);
  const auto chunks = RunChunks(*gpu_, ids, 4);
  const double e1 = RelErr(decode, full), e2 = RelErr(chunks, full);
  std::printf("[  info    ] %s: GPU decode vs prefill %.3g, chunked vs prefill %.3g\n",
              GetParam().c_str(), e1, e2);
  EXPECT_LE(e1, kDecodePrefillTolerance);
  EXPECT_LE(e2, kDecodePrefillTolerance);
}

TEST_P(GpuEngineTest, GreedyGenerationEqualsCpu) {
  auto generate = [](Engine& e, std::vector<int32_t> ids, int n) {
    auto seq = e.AddSequence();
    std::vector<int32_t> out;
    StepChunk ch{*seq, ids};
    auto logits = e.Step({&ch, 1}, false);
    for (int i = 0; i < n && logits.ok(); ++i) {
      out.push_back(Argmax(*logits));
      StepChunk next{*seq, std::span<const int32_t>(&out.back(), 1)};
      logits = e.Step({&next, 1}, false);
    }
    e.RemoveSequence(*seq);
    return out;
  };
  const auto prompt = Prompt(9, cpu_->config().vocab_size);
  const auto c = generate(*cpu_, prompt, 32);
  const auto g = generate(*gpu_, prompt, 32);
  EXPECT_EQ(c, g);
}

// Runs one schedule on two engines of the same model: three sequences prefilled together, then
// `steps` decode steps of all three feeding back the argmax of each row. `full` returns every
// row (the plain Step); `mixed` marks chunks greedy by a rotating pattern (some steps all greedy,
// some none), so its greedy ids come from ArgmaxRows on its backend. Checks that each greedy id
// is the argmax of the full row and that the rows `mixed` still returns are bit for bit the
// full ones. Returns the tokens generated per sequence.
std::vector<std::vector<int32_t>> MixedGreedySchedule(Engine& full, Engine& mixed, int steps) {
  const int64_t V = full.config().vocab_size;
  constexpr int kSeqs = 3;
  std::vector<std::vector<int32_t>> prompts, out(kSeqs);
  std::vector<SeqId> seqs;
  for (int s = 0; s < kSeqs; ++s) {
    prompts.push_back(Prompt(static_cast<size_t>(4 + 5 * s), V));
    for (int32_t& id : prompts.back()) id = static_cast<int32_t>((id + 41 * s) % V);
    auto a = full.AddSequence(), b = mixed.AddSequence();
    EXPECT_TRUE(a.ok() && b.ok() && *a == *b);
    if (!a.ok() || !b.ok()) return out;
    seqs.push_back(*a);
  }
  std::vector<int32_t> next(kSeqs);
  Engine::StepOutput got;
  for (int step = 0; step <= steps; ++step) {
    std::vector<StepChunk> chunks;
    for (int s = 0; s < kSeqs; ++s) {
      StepChunk ch{seqs[s], step == 0 ? std::span<const int32_t>(prompts[s])
                                      : std::span<const int32_t>(&next[s], 1)};
      ch.greedy = step % 4 == 3 ? false : step % 4 == 2 ? true : (step + s) % 2 == 0;
      chunks.push_back(ch);
    }
    auto want = full.Step(chunks, false);
    const Status st = mixed.Step(chunks, false, got);
    EXPECT_TRUE(want.ok()) << want.status().ToString();
    EXPECT_TRUE(st.ok()) << st.ToString();
    if (!want.ok() || !st.ok()) break;
    size_t row = 0, id = 0;
    for (int s = 0; s < kSeqs; ++s) {
      const std::span<const float> w(want->data() + s * V, static_cast<size_t>(V));
      next[s] = Argmax(w);
      out[s].push_back(next[s]);
      if (chunks[s].greedy) {
        EXPECT_EQ(got.greedy_ids.at(id++), next[s]) << "step " << step << ", sequence " << s;
      } else {
        const float* g = got.logits.data() + row * V;
        ++row;
        EXPECT_TRUE(std::equal(w.begin(), w.end(), g))
            << "step " << step << ", sequence " << s << ": logits differ";
      }
    }
    EXPECT_EQ(id, got.greedy_ids.size());
    EXPECT_EQ(row * V, got.logits.size());
  }
  for (SeqId s : seqs) {
    full.RemoveSequence(s);
    mixed.RemoveSequence(s);
  }
  return out;
}

TEST_P(GpuEngineTest, GreedyIdsOnTheDeviceEqualArgmaxOfFullLogits) {
  std::string why;
  auto full = MakeEngine(GetParam(), "cuda", &why);
  ASSERT_TRUE(full) << why;
  const auto tokens = MixedGreedySchedule(*full, *gpu_, 24);
  // And the CPU backend, with ArgmaxRows on the CPU, runs the same way.
  auto cpu_full = MakeEngine(GetParam(), "cpu", &why);
  ASSERT_TRUE(cpu_full) << why;
  const auto cpu_tokens = MixedGreedySchedule(*cpu_full, *cpu_, 24);
  EXPECT_EQ(tokens, cpu_tokens) << "GPU and CPU greedy generations differ";
}

// The host tiers on the GPU: rows staged through the row channel (copy and zero-copy, with and
// without the HBM hot-row cache, prefetch on and off, DRAM and NVMe) give exactly the logits of
// tables resident in HBM: the same BF16 rows reach the same GatherRows.
TEST(GpuTiers, HostTiersEqualResidentTablesOnGpu) {
  const std::string dir = "/tmp/engram-gpu-tiers-" + std::to_string(::getpid());
  SynthOptions so;
  so.preset = "tiny";
  so.progress = false;
  ASSERT_TRUE(WriteSynthModel(so, dir).ok());
  std::string why;
  auto resident = MakeEngine(dir, "cuda", &why);
  if (!resident) {
    std::filesystem::remove_all(dir);
    GTEST_SKIP() << "no CUDA backend: " << why;
  }
  // A recurring pattern so the hot cache gets hits; prefill then decode steps.
  std::vector<int32_t> ids(48);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i % 11) * 37 % 512);
  const auto want = RunChunks(*resident, ids, 1);
  const auto want_prefill = RunChunks(*resident, ids, ids.size());
  struct Case {
    const char* tier;
    const char* transfer;
    uint64_t hot;
    bool prefetch;
  };
  const Case cases[] = {{"dram", "copy", 0, true},      {"dram", "copy", 0, false},
                        {"dram", "zero_copy", 0, true}, {"dram", "zero_copy", 0, false},
                        {"dram", "copy", 640, true},    {"dram", "zero_copy", 640, true},
                        {"nvme", "copy", 0, true},      {"nvme", "copy", 640, true}};
  for (const Case& c : cases) {
    TableOptions t;
    t.tier = c.tier;
    t.transfer = c.transfer;
    t.hot_cache_bytes = c.hot;
    t.prefetch = c.prefetch;
    t.cache_bytes = 4096;
    const std::string what = std::string(c.tier) + " " + c.transfer + " hot " +
                             std::to_string(c.hot) + (c.prefetch ? " prefetch" : " sync");
    auto e = MakeEngine(dir, "cuda", &why, t);
    if (!e && std::string(c.tier) == "nvme" && why.find("O_DIRECT") != std::string::npos) {
      std::printf("[  info    ] %s skipped: %s\n", what.c_str(), why.c_str());
      continue;
    }
    ASSERT_TRUE(e) << what << ": " << why;
    EXPECT_EQ(RunChunks(*e, ids, 1), want) << what << " (decode)";
    EXPECT_EQ(RunChunks(*e, ids, ids.size()), want_prefill) << what << " (prefill)";
    const OverlapStats o = e->overlap_stats();
    ASSERT_EQ(o.layers.size(), 1u);
    std::printf("[  info    ] %s: stall %.6f s of %.6f s steps, hot hit rate %.2f\n", what.c_str(),
                o.layers[0].stall_s, o.step_s, o.layers[0].hot_hit_rate());
    if (c.hot > 0) {
      EXPECT_GT(o.layers[0].hot_hits, 0u) << what;
    }
  }
  std::filesystem::remove_all(dir);
}

// ---- decode steps as CUDA graphs (backend.cuda_graphs)

std::unique_ptr<Engine> MakeGraphEngine(const std::string& spec, bool graphs, std::string* why,
                                        const TableOptions& tables = {}) {
  auto files = OpenModel(spec);
  if (!files.ok()) {
    *why = files.status().ToString();
    return nullptr;
  }
  EngineOptions opt;
  opt.backend.kind = "cuda";
  opt.backend.cuda_graphs = graphs;
  opt.kv_tokens = 4096;
  opt.max_seqs = 8;
  // Small blocks, so a short decode crosses block-table buckets (4, 8, 16 blocks): new graphs.
  opt.block_size = 4;
  opt.tables = tables;
  auto e = Engine::Create(std::move(files).value(), opt);
  if (!e.ok()) {
    *why = e.status().ToString();
    return nullptr;
  }
  return std::move(e).value();
}

void PrintGraphStats(const std::string& what, const GraphStats& s) {
  std::printf(
      "[  info    ] %s: graphs captured %llu, replayed %llu, warm-up steps %llu, eager %llu, "
      "capture failures %llu, invalidations %llu, evictions %llu, cached %lld\n",
      what.c_str(), static_cast<unsigned long long>(s.captures),
      static_cast<unsigned long long>(s.replays), static_cast<unsigned long long>(s.warmups),
      static_cast<unsigned long long>(s.eager), static_cast<unsigned long long>(s.capture_failures),
      static_cast<unsigned long long>(s.invalidations),
      static_cast<unsigned long long>(s.evictions), static_cast<long long>(s.cached));
}

// A fixed schedule (the same token ids whatever the logits): three prompts (5, 9 and 3 tokens)
// prefilled one by one, then 30 decode steps of the first sequence alone (positions 5..34: its
// block table crosses the buckets 4 -> 8 -> 16 blocks at block_size 4), then 12 decode steps
// of all three, in a rotating order. Returns every step's logits, in order.
std::vector<float> DecodeSchedule(Engine& e) {
  const int64_t V = e.config().vocab_size;
  std::vector<float> all;
  auto step = [&](const std::vector<StepChunk>& chunks) {
    auto out = e.Step(chunks, false);
    EXPECT_TRUE(out.ok()) << out.status().ToString();
    if (out.ok()) all.insert(all.end(), out->begin(), out->end());
  };
  std::vector<SeqId> seqs;
  std::vector<std::vector<int32_t>> prompts;
  for (const size_t n : {5, 9, 3}) {
    auto seq = e.AddSequence();
    EXPECT_TRUE(seq.ok());
    seqs.push_back(*seq);
    prompts.push_back(Prompt(n, V));
    for (int32_t& id : prompts.back()) id = static_cast<int32_t>((id + 13 * seqs.size()) % V);
    step({StepChunk{*seq, prompts.back()}});
  }
  std::vector<int32_t> tok(3);
  for (int i = 0; i < 30; ++i) {
    tok[0] = static_cast<int32_t>((i * 31 + 3) % V);
    step({StepChunk{seqs[0], std::span<const int32_t>(&tok[0], 1)}});
  }
  for (int i = 0; i < 12; ++i) {
    std::vector<StepChunk> chunks;
    for (int k = 0; k < 3; ++k) {
      const int s = (i + k) % 3;
      tok[s] = static_cast<int32_t>((i * 29 + s * 17 + 5) % V);
      chunks.push_back(StepChunk{seqs[s], std::span<const int32_t>(&tok[s], 1)});
    }
    step(chunks);
  }
  for (SeqId s : seqs) e.RemoveSequence(s);
  return all;
}

// Graph replays run the very kernels of eager steps over the same values, so the logits are
// bit for bit equal: batch 1 over three block-table buckets (a graph each), then batch 3.
TEST(GpuGraphs, DecodeStepsAsGraphsEqualEagerSteps) {
  std::string why;
  auto eager = MakeGraphEngine("synth:tiny", false, &why);
  if (!eager) GTEST_SKIP() << "no CUDA backend: " << why;
  auto graphs = MakeGraphEngine("synth:tiny", true, &why);
  ASSERT_TRUE(graphs) << why;
  ASSERT_FALSE(eager->cuda_graphs());
  ASSERT_TRUE(graphs->cuda_graphs());
  const auto want = DecodeSchedule(*eager);
  const auto got = DecodeSchedule(*graphs);
  ASSERT_EQ(got.size(), want.size());
  size_t first_diff = got.size();
  for (size_t i = 0; i < got.size() && first_diff == got.size(); ++i) {
    if (got[i] != want[i]) first_diff = i;
  }
  EXPECT_EQ(first_diff, got.size())
      << "first differing logit at " << first_diff << " of " << got.size() << " (relative error "
      << RelErr(got, want) << ")";
  const GraphStats s = graphs->graph_stats();
  PrintGraphStats("synth:tiny decode schedule", s);
  EXPECT_EQ(s.capture_failures, 0u);
  EXPECT_EQ(s.eager, 0u);
  // Shapes (sequences, block-table width): (1, 4), (1, 8), (1, 16), (3, 16) over 11, 16, 3
  // and 12 steps; each runs eagerly twice, is captured on its third step, and replayed on the
  // rest (the capturing step counts as a replay).
  EXPECT_EQ(s.warmups, 8u);
  EXPECT_EQ(s.captures, 4u);
  EXPECT_EQ(s.replays, 9u + 14u + 1u + 10u);
  EXPECT_EQ(s.invalidations, 0u);
  EXPECT_EQ(s.cached, 4);
  const GraphStats off = eager->graph_stats();
  EXPECT_EQ(off.captures + off.replays + off.warmups, 0u);

  // Again on the same engine: the shapes are known, the graphs are replayed at once.
  const auto again = DecodeSchedule(*graphs);
  EXPECT_EQ(again, want);
  const GraphStats s2 = graphs->graph_stats();
  PrintGraphStats("synth:tiny decode schedule, second run", s2);
  EXPECT_EQ(s2.captures, s.captures);
  EXPECT_GT(s2.replays, s.replays);
}

TEST(GpuGraphs, GreedyGenerationWithGraphsEqualsEager) {
  std::string why;
  auto eager = MakeGraphEngine("synth:tiny-qwen2", false, &why);
  if (!eager) GTEST_SKIP() << "no CUDA backend: " << why;
  auto graphs = MakeGraphEngine("synth:tiny-qwen2", true, &why);
  ASSERT_TRUE(graphs) << why;
  // Two sequences generating together (batch 2), greedy.
  auto generate = [](Engine& e, int n) {
    const int64_t V = e.config().vocab_size;
    std::vector<std::vector<int32_t>> out(2);
    std::vector<SeqId> seqs;
    std::vector<StepChunk> chunks;
    std::vector<std::vector<int32_t>> prompts = {Prompt(7, V), Prompt(11, V)};
    for (auto& p : prompts) {
      auto seq = e.AddSequence();
      EXPECT_TRUE(seq.ok());
      seqs.push_back(*seq);
      chunks.push_back(StepChunk{*seq, p});
    }
    auto logits = e.Step(chunks, false);
    for (int i = 0; i < n && logits.ok(); ++i) {
      chunks.clear();
      for (size_t s = 0; s < 2; ++s) {
        const std::vector<float> row(logits->begin() + static_cast<ptrdiff_t>(s * V),
                                     logits->begin() + static_cast<ptrdiff_t>((s + 1) * V));
        out[s].push_back(Argmax(row));
        chunks.push_back(StepChunk{seqs[s], std::span<const int32_t>(&out[s].back(), 1)});
      }
      logits = e.Step(chunks, false);
    }
    EXPECT_TRUE(logits.ok()) << logits.status().ToString();
    for (SeqId s : seqs) e.RemoveSequence(s);
    return out;
  };
  const auto want = generate(*eager, 40);
  const auto got = generate(*graphs, 40);
  EXPECT_EQ(got, want);
  const GraphStats s = graphs->graph_stats();
  PrintGraphStats("synth:tiny-qwen2 greedy batch 2", s);
  EXPECT_EQ(s.capture_failures, 0u);
  EXPECT_GT(s.replays, 0u);
}

// Greedy ids picked on the device after a graph replay (ArgmaxRows runs eagerly on the graph's
// logits) equal the argmax of an eager engine's full logits rows, and the rows still returned
// are bitwise equal.
TEST(GpuGraphs, GreedyIdsOnTheDeviceWithGraphsEqualEagerFullLogits) {
  std::string why;
  auto eager = MakeGraphEngine("synth:tiny", false, &why);
  if (!eager) GTEST_SKIP() << "no CUDA backend: " << why;
  auto graphs = MakeGraphEngine("synth:tiny", true, &why);
  ASSERT_TRUE(graphs) << why;
  MixedGreedySchedule(*eager, *graphs, 40);
  const GraphStats s = graphs->graph_stats();
  PrintGraphStats("synth:tiny mixed greedy batch 3", s);
  EXPECT_EQ(s.capture_failures, 0u);
  EXPECT_GT(s.replays, 0u);
}

// The dram tier's copy engine is not captured: with cuda_graphs on, its steps run eagerly and
// still equal the resident tables' logits.
TEST(GpuGraphs, HostTierStepsRunEagerly) {
  const std::string dir = "/tmp/engram-gpu-graphs-" + std::to_string(::getpid());
  SynthOptions so;
  so.preset = "tiny";
  so.progress = false;
  ASSERT_TRUE(WriteSynthModel(so, dir).ok());
  std::string why;
  auto resident = MakeGraphEngine(dir, true, &why);
  if (!resident) {
    std::filesystem::remove_all(dir);
    GTEST_SKIP() << "no CUDA backend: " << why;
  }
  TableOptions t;
  t.tier = "dram";
  auto dram = MakeGraphEngine(dir, true, &why, t);
  ASSERT_TRUE(dram) << why;
  EXPECT_TRUE(resident->cuda_graphs());
  EXPECT_FALSE(dram->cuda_graphs());
  EXPECT_EQ(DecodeSchedule(*dram), DecodeSchedule(*resident));
  EXPECT_EQ(dram->graph_stats().replays, 0u);
  EXPECT_GT(resident->graph_stats().replays, 0u);
  std::filesystem::remove_all(dir);
}

// weights: int8 on both backends: the same codes (quantized at load by the same rule); decode
// steps (one token: the dp4a GEMV, activations quantized as on the CPU) and a prefill (the
// dequantized BF16 GEMM) within the CPU-GPU tolerance.
TEST(GpuInt8, Int8LogitsMatchCpuInt8Backend) {
  if (auto probe = CreateBackend({.kind = "cuda"}); !probe.ok()) {
    GTEST_SKIP() << "no CUDA backend: " << probe.status().ToString();
  }
  std::string why;
  auto gpu = MakeEngine("synth:tiny", "cuda", &why, {}, "int8");
  ASSERT_TRUE(gpu) << why;  // a GPU is there: a failed int8 load is a failure, not a skip
  auto cpu = MakeEngine("synth:tiny", "cpu", &why, {}, "int8");
  ASSERT_TRUE(cpu) << why;
  EXPECT_EQ(gpu->weight_format(), "int8");
  EXPECT_EQ(cpu->weight_format(), "int8");
  const auto ids = Prompt(40, cpu->config().vocab_size);
  for (size_t chunk : {ids.size(), size_t{1}}) {
    const auto c = RunChunks(*cpu, ids, chunk);
    const auto g = RunChunks(*gpu, ids, chunk);
    ASSERT_EQ(c.size(), g.size());
    const double err = RelErr(g, c);
    std::printf("[  info    ] int8 GPU vs CPU logits, chunks of %zu: relative error %.3g\n", chunk,
                err);
    EXPECT_LE(err, kCpuGpuTolerance);
  }
}

INSTANTIATE_TEST_SUITE_P(Presets, GpuEngineTest,
                         ::testing::Values("synth:tiny", "synth:tiny-qwen2", "synth:tiny-v41"));

}  // namespace
}  // namespace engram
