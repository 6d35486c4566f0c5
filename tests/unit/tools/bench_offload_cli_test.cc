// `engram bench offload` through the built CLI binary, on the tiny preset with DeepSeek-V3's
// tokenizer (the npm fixture; the tests skip, saying why, when it is not installed).
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "../model/temp_dir.h"
#include "../model/tokenizer_fixture.h"

namespace engram {
namespace {

using testutil::TempDir;

struct CliRun {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

CliRun RunBench(const std::string& args) {
  TempDir dir;
  const std::string err = dir / "stderr";
  const std::string cmd = std::string(ENGRAM_CLI) + " bench offload " + args + " 2>" + err;
  CliRun r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = testutil::ReadFile(err);
  return r;
}

std::string TinyWithTokenizer() {
  return "'synth:tiny?tokenizer=" + testing::DeepSeekTokenizerPath() + "'";
}

// Real text in the repository (a few thousand tokens).
std::string Corpus() { return std::string(ENGRAM_TEST_DATA) + "/../../README.md"; }

#define SKIP_WITHOUT_TOKENIZER()                                    \
  if (!std::filesystem::exists(testing::DeepSeekTokenizerPath())) { \
    GTEST_SKIP() << testing::MissingFixtureMessage();               \
  }

TEST(BenchOffloadCli, PaperWorkloadReportsEveryMode) {
  SKIP_WITHOUT_TOKENIZER();
  // 6 sequences, at most 4 alive, steps of at most 48 tokens: admission waits for slots and
  // prompts are cut into pieces.
  CliRun r = RunBench("--model " + TinyWithTokenizer() + " --corpus " + Corpus() +
                      " --workload paper --seqs 6 --prompt-min 10 --prompt-max 40 "
                      "--decode-steps 3 --max-seqs 4 --step-tokens 48 --threads 2 "
                      "--modes backbone,resident,dram,zero_copy,hot,sync --repeats 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << "stdout is not JSON: " << r.out;

  const nlohmann::json& w = j["workload"];
  EXPECT_EQ(w["name"], "paper");
  EXPECT_EQ(w["seqs"], 6);
  const int64_t prefill = w["prefill_tokens"].get<int64_t>();
  EXPECT_GE(prefill, 6 * 10);
  EXPECT_LE(prefill, 6 * 40);
  EXPECT_EQ(w["decode_tokens"].get<int64_t>(), 6 * 3);
  EXPECT_EQ(w["tokens"].get<int64_t>(), prefill + 6 * 3);
  // At least ceil(prefill / 48) prefill steps, and 3 decode steps after the last prompt.
  EXPECT_GE(w["steps"].get<int64_t>(), (prefill + 47) / 48 + 3);
  EXPECT_EQ(j["max_seqs"], 4);
  EXPECT_GE(j["kv_tokens"].get<int64_t>(), 4 * (40 + 3));

  const nlohmann::json& modes = j["modes"];
  for (const char* m : {"backbone", "resident", "dram", "zero_copy", "hot", "sync"}) {
    SCOPED_TRACE(m);
    ASSERT_TRUE(modes.contains(m)) << j.dump(2);
    const nlohmann::json& mj = modes[m];
    EXPECT_GT(mj["tok_s"].get<double>(), 0);
    EXPECT_GT(mj["decode_tok_s"].get<double>(), 0);
    ASSERT_TRUE(mj.contains("estimated_loss_from_stall"));
    EXPECT_GE(mj["estimated_loss_from_stall"].get<double>(), 0);
    EXPECT_EQ(mj.contains("loss"), std::string(m) != "resident");
    EXPECT_EQ(mj.contains("loss_vs_backbone"), std::string(m) != "backbone");
    if (mj.contains("loss")) {
      EXPECT_DOUBLE_EQ(mj["loss"].get<double>(),
                       1 - mj["tok_s"].get<double>() / modes["resident"]["tok_s"].get<double>());
    }
  }
  ASSERT_TRUE(modes["hot"].contains("hot_hit_rate"));
  EXPECT_GE(modes["hot"]["hot_hit_rate"].get<double>(), 0);
  EXPECT_LE(modes["hot"]["hot_hit_rate"].get<double>(), 1);
  EXPECT_GT(modes["hot"]["hot_cache_bytes"].get<uint64_t>(), 0u);
  EXPECT_FALSE(modes["dram"].contains("hot_hit_rate"));
}

TEST(BenchOffloadCli, FixedWorkloadSequentialWithNvme) {
  SKIP_WITHOUT_TOKENIZER();
  TempDir dir;
  const std::string model = dir / "tiny";
  {
    const std::string cmd = std::string(ENGRAM_CLI) + " pack synth --preset tiny --tokenizer " +
                            testing::DeepSeekTokenizerPath() + " --out " + model +
                            " >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  CliRun r = RunBench("--model " + model + " --corpus " + Corpus() +
                      " --batches 2,3 --prompt-len 8 --decode-steps 2 --threads 2 --repeats 1 "
                      "--warmup 0 --sequential --modes resident,nvme,backbone --json");
  if (r.exit_code != 0 && (r.err.find("io_uring is not available") != std::string::npos ||
                           r.err.find("does not support O_DIRECT") != std::string::npos)) {
    GTEST_SKIP() << "the NVMe tier needs io_uring and O_DIRECT (TMPDIR): " << r.err;
  }
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << "stdout is not JSON: " << r.out;
  EXPECT_EQ(j["workload"]["name"], "fixed");
  EXPECT_EQ(j["sequential"], true);
  const nlohmann::json& modes = j["modes"];
  for (const char* m : {"resident", "nvme", "backbone"}) {
    SCOPED_TRACE(m);
    for (const char* b : {"2", "3"}) {
      EXPECT_GT(modes[m]["batch"][b]["tok_s"].get<double>(), 0) << j.dump(2);
    }
  }
  EXPECT_TRUE(modes["nvme"]["batch"]["2"].contains("loss"));
  EXPECT_TRUE(modes["nvme"]["batch"]["2"].contains("loss_vs_backbone"));
  EXPECT_TRUE(modes["nvme"].contains("cache_hit_rate"));
  EXPECT_TRUE(modes["resident"].contains("loss_vs_backbone"));
  EXPECT_FALSE(modes["backbone"].contains("loss_vs_backbone"));
}

TEST(BenchOffloadCli, UnknownModeNamesTheAcceptedModes) {
  // Options are checked before the model is opened: no tokenizer needed.
  CliRun r = RunBench("--model synth:tiny --modes resident,fast");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(
      r.err.find("unknown mode \"fast\" (expected a comma-separated list of: backbone, "
                 "resident, dram, zero_copy, nvme, sync, hot, nvme_lru, hot_lru, nvme_nomerge)"),
      std::string::npos)
      << r.err;
  r = RunBench("--model synth:tiny --seqs 4");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--seqs applies to --workload paper"), std::string::npos) << r.err;
}

TEST(BenchOffloadCli, NvmeNeedsTablesInFiles) {
  SKIP_WITHOUT_TOKENIZER();
  CliRun r = RunBench("--model " + TinyWithTokenizer() + " --corpus " + Corpus() +
                      " --modes resident,nvme");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("mode nvme reads the tables from the model's files"), std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace engram
