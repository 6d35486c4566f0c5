// `--weights auto|bf16|int8` on the real `engram` binary (ENGRAM_CLI): logits and bench forward
// take it, the backend named at start says int8, and a bad value is a clear usage error.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../../support/cli_test.h"

namespace engram {
namespace {

namespace fs = std::filesystem;

using testing::CliResult;
using testing::ReadFile;

class WeightsCli : public testing::CliTest {
 protected:
  WeightsCli() : CliTest("engram_weights_cli") {}
};

TEST_F(WeightsCli, LogitsWithInt8Weights) {
  const fs::path out = dir_ / "a.npy";
  CliResult r =
      Run("logits --model 'synth:tiny?dtype=f32' --ids 1,2,3,4 --threads 2 --weights "
          "int8 --out '" +
          out.string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(out));
  EXPECT_NE(r.err.find("int8 weights"), std::string::npos) << r.err;  // logged at start
}

TEST_F(WeightsCli, BadWeightsValueIsAUsageError) {
  CliResult r =
      Run("logits --model synth:tiny --ids 1,2 --out " + Quote(dir_ / "a.npy") + " --weights fp4");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--weights \"fp4\" (expected auto, bf16 or int8)"), std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "a.npy"));
}

TEST_F(WeightsCli, BenchForwardJsonNamesTheFormat) {
  CliResult r =
      Run("bench forward --model synth:tiny --weights int8 --json --prompt-len 8 --decode-steps 1 "
          "--repeats 1 --batches 1 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["weights"], "int8");
  EXPECT_GT(j["prefill_tok_s"].get<double>(), 0);
  EXPECT_GT(j["decode_batch1_tok_s"].get<double>(), 0);
  EXPECT_TRUE(j.contains("int8_gops"));
  // The lm_head runs once per prefill: the prefill's flops are below prompt_len x decode's.
  EXPECT_LT(j["prefill_flops"].get<double>(), 8 * j["flops_per_token"].get<double>());
}

// A Hugging Face-style FP8 checkpoint (engram pack quantize --weights fp8) runs in FP8 with
// --weights auto: bench forward names the format and counts one byte per weight (plus the
// factors), about half of the BF16 model's; --weights bf16 dequantizes it.
TEST_F(WeightsCli, Fp8CheckpointRunsAsFp8) {
  const std::string bf16 = (dir_ / "tiny").string(), fp8 = (dir_ / "tiny-fp8").string();
  ASSERT_EQ(Run("pack synth --preset tiny --out '" + bf16 + "'").exit_code, 0);
  CliResult q =
      Run("pack quantize --model '" + bf16 + "' --out '" + fp8 + "' --weights fp8 --quiet");
  ASSERT_EQ(q.exit_code, 0) << q.err;
  auto bench = [&](const std::string& model, const std::string& weights) {
    CliResult r =
        Run("bench forward --model '" + model + "' --weights " + weights +
            " --json --prompt-len 8 --decode-steps 1 --repeats 1 --batches 1 --threads 1");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  };
  const auto a = bench(fp8, "auto"), b = bench(bf16, "auto"), c = bench(fp8, "bf16");
  EXPECT_EQ(a["weights"], "fp8");
  EXPECT_EQ(b["weights"], "bf16");
  EXPECT_EQ(c["weights"], "bf16");
  EXPECT_LT(a["weight_bytes"].get<double>(), 0.51 * b["weight_bytes"].get<double>());
  EXPECT_EQ(c["weight_bytes"].get<double>(), b["weight_bytes"].get<double>());
  EXPECT_GT(a["decode_batch1_tok_s"].get<double>(), 0);
}

// int8 files with a BF16 lm_head (pack quantize --keep-lm-head) run "mixed": bench forward
// bounds the prefill by each weight's own peak (int8 dot products for the backbone, F32 FMA
// for the lm_head) and counts each weight's bytes in the format it runs in.
TEST_F(WeightsCli, BenchForwardBoundsAMixedModelByEachWeightsPeak) {
  const std::string bf16 = (dir_ / "tiny").string(), mixed = (dir_ / "tiny-mixed").string(),
                    int8 = (dir_ / "tiny-int8").string();
  ASSERT_EQ(Run("pack synth --preset tiny --out '" + bf16 + "'").exit_code, 0);
  for (auto [out, extra] : {std::pair{mixed, " --keep-lm-head"}, std::pair{int8, ""}}) {
    CliResult q = Run("pack quantize --model '" + bf16 + "' --out '" + out +
                      "' --weights int8 --quiet" + extra);
    ASSERT_EQ(q.exit_code, 0) << q.err;
  }
  auto bench = [&](const std::string& model) {
    CliResult r = Run("bench forward --model '" + model +
                      "' --json --prompt-len 8 --decode-steps 1 --repeats 1 --batches 1 "
                      "--threads 1");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  };
  const auto m = bench(mixed), q = bench(int8), b = bench(bf16);
  ASSERT_EQ(m["weights"], "mixed");
  EXPECT_EQ(m["prefill"]["bound"], "int8 dot-product and F32 FMA peaks");
  EXPECT_EQ(q["prefill"]["bound"], "int8 dot-product peak");
  EXPECT_EQ(b["prefill"]["bound"], "F32 FMA peak");
  const double i8 = m["prefill_int8_flops"].get<double>(), all = m["prefill_flops"].get<double>();
  EXPECT_GT(i8, 0);
  EXPECT_LT(i8, all);
  EXPECT_EQ(q["prefill_int8_flops"].get<double>(), all);
  EXPECT_EQ(b["prefill_int8_flops"].get<double>(), 0);
  // Bytes: int8 < mixed (its lm_head in BF16) < BF16.
  EXPECT_LT(q["weight_bytes"].get<double>(), m["weight_bytes"].get<double>());
  EXPECT_LT(m["weight_bytes"].get<double>(), b["weight_bytes"].get<double>());
  EXPECT_GT(m["int8_gops"].get<double>(), 0);
  EXPECT_GT(m["prefill_bound_tok_s"].get<double>(), 0);
}

// engram bench kernels: the int8 rows (GEMV, GEMM at the int8 peak, the quantizer alone).
TEST_F(WeightsCli, BenchKernelsInt8Rows) {
  CliResult r = Run("bench kernels --rows int8 --runs 1 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("int8 dot-product peak:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("GEMV int8 packed M=1 N=2816 K=1024 (DRAM)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("GEMM int8 packed M=256 N=5632 K=1024"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("quantize activations int8 M=256 K=1024 (scalar, 1 thread)"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("GatherRows"), std::string::npos) << r.out;
}

TEST_F(WeightsCli, BenchKernelsBadRowsIsAUsageError) {
  CliResult r = Run("bench kernels --rows int8,attention");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--rows: \"attention\" (expected a comma-separated subset of linear, "
                       "int8, gathers)"),
            std::string::npos)
      << r.err;
  r = Run("bench kernels --runs 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--runs in [1, 10000]"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace engram
