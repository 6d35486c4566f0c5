// `engram bench offload` through the built CLI binary, on the tiny presets (tiny: paper module,
// BF16 rows of 8 values = 16 bytes; tiny-v41: V4.1 module, FP8 rows of 32 values = 33 bytes, or
// BF16 ones = 64 bytes) with DeepSeek-V3's tokenizer (the npm fixture; the tests skip, saying why,
// when it is not installed).
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "../../support/temp_dir.h"
#include "../../support/tokenizer_fixture.h"

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

// tiny-v41 with `params` ("tables=bf16&" or "") and the tokenizer, quoted for the shell.
std::string TinyV41(const std::string& params = "") {
  return "'synth:tiny-v41?" + params + "tokenizer=" + testing::DeepSeekTokenizerPath() + "'";
}

// `engram pack synth --preset PRESET [--tables T]` with the tokenizer into `out`.
bool Pack(const std::string& preset, const std::string& tables, const std::string& out) {
  const std::string cmd = std::string(ENGRAM_CLI) + " pack synth --preset " + preset +
                          (tables.empty() ? "" : " --tables " + tables) + " --tokenizer " +
                          testing::DeepSeekTokenizerPath() + " --out " + out + " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

bool NvmeUnavailable(const CliRun& r) {
  return r.exit_code != 0 && (r.err.find("io_uring is not available") != std::string::npos ||
                              r.err.find("does not support O_DIRECT") != std::string::npos);
}

nlohmann::json ParseJson(const CliRun& r) {
  return nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
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
  if (NvmeUnavailable(r)) {
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
  // Without --compare: one model, modes named as --modes names them, and the row traffic.
  ASSERT_EQ(j["models"].size(), 1u) << j.dump(2);
  const nlohmann::json& m = j["models"][0];
  EXPECT_EQ(m["label"], "tiny");
  EXPECT_EQ(m["table_dtype"], "BF16");
  EXPECT_EQ(m["row_bytes"], 8 * 2);  // tiny: rows of 8 BF16 values
  EXPECT_EQ(m["table_bytes"].get<uint64_t>(),
            m["rows"].get<uint64_t>() * m["row_bytes"].get<uint64_t>());
  EXPECT_EQ(j["table_bytes"], m["table_bytes"]);
  const nlohmann::json& nvme = modes["nvme"];
  EXPECT_GT(nvme["rows_per_token"].get<double>(), 0);
  EXPECT_NEAR(nvme["row_bytes_per_token"].get<double>(), nvme["rows_per_token"].get<double>() * 16,
              1e-9);
  EXPECT_GE(nvme["nvme_reads_per_token"].get<double>(), 0);
  EXPECT_EQ(modes["resident"]["row_bytes_per_token"].get<double>(), 0);
  EXPECT_FALSE(modes["resident"].contains("nvme_reads_per_token"));
}

// FP8 rows against BF16 rows of the same V4.1 module: the same rows move (the same hashes of
// the same tokens), 33 bytes each against 64.
TEST(BenchOffloadCli, CompareRunsBothModelsInOneRun) {
  SKIP_WITHOUT_TOKENIZER();
  CliRun r = RunBench("--model " + TinyV41() + " --compare " + TinyV41("tables=bf16&") +
                      " --corpus " + Corpus() +
                      " --batches 2 --prompt-len 8 --decode-steps 2 --threads 2 --repeats 1 "
                      "--modes resident,dram,hot --hot-bytes 2048 --json");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const nlohmann::json j = ParseJson(r);
  ASSERT_FALSE(j.is_discarded()) << "stdout is not JSON: " << r.out;
  // Both labels are tiny-v41, so the models are a and b.
  ASSERT_EQ(j["models"].size(), 2u) << j.dump(2);
  const nlohmann::json& a = j["models"][0];
  const nlohmann::json& b = j["models"][1];
  EXPECT_EQ(a["label"], "a");
  EXPECT_EQ(b["label"], "b");
  EXPECT_EQ(a["table_dtype"], "F8_E4M3");
  EXPECT_EQ(b["table_dtype"], "BF16");
  EXPECT_EQ(a["row_bytes"], 33);
  EXPECT_EQ(b["row_bytes"], 64);
  EXPECT_EQ(a["rows"], b["rows"]);
  // Codes and scales: 32 + 1 bytes a row.
  EXPECT_EQ(a["table_bytes"].get<uint64_t>(), a["rows"].get<uint64_t>() * 33);
  EXPECT_EQ(b["table_bytes"].get<uint64_t>(), b["rows"].get<uint64_t>() * 64);

  const nlohmann::json& modes = j["modes"];
  EXPECT_EQ(modes.size(), 6u) << j.dump(2);
  for (const char* label : {"a", "b"}) {
    for (const char* kind : {"resident", "dram", "hot"}) {
      const std::string name = std::string(label) + "/" + kind;
      SCOPED_TRACE(name);
      ASSERT_TRUE(modes.contains(name)) << j.dump(2);
      const nlohmann::json& mj = modes[name];
      EXPECT_EQ(mj["model"], label);
      EXPECT_GT(mj["tok_s"].get<double>(), 0);
      EXPECT_EQ(mj.contains("loss"), std::string(kind) != "resident");
      if (mj.contains("loss")) {  // against its own model's resident mode
        const std::string resident = std::string(label) + "/resident";
        EXPECT_DOUBLE_EQ(mj["loss"].get<double>(),
                         1 - mj["tok_s"].get<double>() / modes[resident]["tok_s"].get<double>());
      }
    }
  }
  EXPECT_EQ(modes["a/resident"]["row_bytes_per_token"].get<double>(), 0);
  const double rows_a = modes["a/dram"]["rows_per_token"].get<double>();
  const double rows_b = modes["b/dram"]["rows_per_token"].get<double>();
  EXPECT_GT(rows_a, 0);
  EXPECT_DOUBLE_EQ(rows_a, rows_b);
  EXPECT_NEAR(modes["a/dram"]["row_bytes_per_token"].get<double>(), rows_a * 33, 1e-9);
  EXPECT_NEAR(modes["b/dram"]["row_bytes_per_token"].get<double>(), rows_b * 64, 1e-9);
  // Equal hot-cache bytes; hot hits move no bytes.
  for (const char* name : {"a/hot", "b/hot"}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(modes[name]["hot_cache_bytes"], 2048);
    EXPECT_LE(modes[name]["rows_per_token"].get<double>(), rows_a);
  }
}

// Two packed models (FP8 rows of 32 values, BF16 rows of 8) with row caches of equal bytes.
TEST(BenchOffloadCli, CompareWithNvmeAtEqualCacheBytes) {
  SKIP_WITHOUT_TOKENIZER();
  TempDir dir;
  const std::string v41 = dir / "v41", tiny = dir / "tiny";
  ASSERT_TRUE(Pack("tiny-v41", "fp8", v41));
  ASSERT_TRUE(Pack("tiny", "", tiny));
  CliRun r = RunBench("--model " + v41 + " --compare " + tiny + " --corpus " + Corpus() +
                      " --batches 2 --prompt-len 8 --decode-steps 2 --threads 2 --repeats 1 "
                      "--warmup 0 --sequential --modes nvme,resident --cache-bytes 4096 --json");
  if (NvmeUnavailable(r)) {
    GTEST_SKIP() << "the NVMe tier needs io_uring and O_DIRECT (TMPDIR): " << r.err;
  }
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const nlohmann::json j = ParseJson(r);
  ASSERT_FALSE(j.is_discarded()) << "stdout is not JSON: " << r.out;
  EXPECT_EQ(j["compare"], tiny);
  // Labels: the directories' names.
  EXPECT_EQ(j["models"][0]["label"], "v41");
  EXPECT_EQ(j["models"][1]["label"], "tiny");
  EXPECT_EQ(j["models"][0]["row_bytes"], 33);
  EXPECT_EQ(j["models"][1]["row_bytes"], 16);
  const nlohmann::json& modes = j["modes"];
  for (const char* name : {"v41/nvme", "tiny/nvme"}) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(modes.contains(name)) << j.dump(2);
    const nlohmann::json& mj = modes[name];
    EXPECT_EQ(mj["cache_bytes"], 4096);
    EXPECT_GE(mj["cache_hit_rate"].get<double>(), 0);
    EXPECT_LE(mj["cache_hit_rate"].get<double>(), 1);
    EXPECT_GT(mj["nvme_reads_per_token"].get<double>(), 0);
    EXPECT_TRUE(mj.contains("loss"));
  }
  EXPECT_NEAR(modes["v41/nvme"]["row_bytes_per_token"].get<double>(),
              modes["v41/nvme"]["rows_per_token"].get<double>() * 33, 1e-9);
  EXPECT_NEAR(modes["tiny/nvme"]["row_bytes_per_token"].get<double>(),
              modes["tiny/nvme"]["rows_per_token"].get<double>() * 16, 1e-9);
}

TEST(BenchOffloadCli, CompareRefusesAnotherVocabulary) {
  SKIP_WITHOUT_TOKENIZER();
  // tiny-v41 without a tokenizer keeps its own 512-token vocabulary.
  CliRun r = RunBench("--model " + TinyWithTokenizer() + " --compare synth:tiny-v41 --corpus " +
                      Corpus() + " --modes resident");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("has vocab_size"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--compare synth:tiny-v41 has vocab_size 512"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--model synth:tiny?tokenizer="), std::string::npos) << r.err;
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
  r = RunBench("--model synth:tiny --cache-bytes -1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--cache-bytes -1 is below 0"), std::string::npos) << r.err;
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
