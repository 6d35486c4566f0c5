// `engram pack synth|checksum|verify` through the built CLI binary.
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "../../support/temp_dir.h"
#include "model/model_files.h"
#include "model/weights.h"

namespace engram {
namespace {

using testutil::TempDir;

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

RunResult RunCli(const std::string& args) {
  RunResult r;
  const std::string cmd = std::string(ENGRAM_CLI) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(PackCli, WritesTinyModelThatLoads) {
  TempDir dir;
  const std::string out = dir / "tiny";
  RunResult r = RunCli("pack synth --preset tiny --out " + out + " --seed 4 --dtype f32");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("wrote synth:tiny"), std::string::npos) << r.output;
  auto m = OpenModel(out);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->store.Info("model.norm.weight")->dtype, DType::kF32);
  EXPECT_TRUE(LoadHostWeights(m->config, m->store).ok());
  // Same values as the in-memory model of the same seed.
  auto mem = OpenModel("synth:tiny?seed=4&dtype=f32");
  ASSERT_TRUE(mem.ok());
  Tensor a = *m->store.Get("lm_head.weight"), b = *mem->store.Get("lm_head.weight");
  EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes()), 0);
}

TEST(PackCli, UnknownPresetListsPresets) {
  TempDir dir;
  RunResult r = RunCli("pack synth --preset giant --out " + (dir / "x"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown preset \"giant\" (presets: tiny, tiny-qwen2, small, dense-4b, "
                          "dense-8b, tiny-v41, small-v41, dense-8b-v41)"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "x"));
}

TEST(PackCli, BadDtype) {
  TempDir dir;
  RunResult r = RunCli("pack synth --preset tiny --dtype int4 --out " + (dir / "x"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown dtype \"int4\" (expected bf16 or f32)"), std::string::npos)
      << r.output;
}

TEST(PackCli, RefusesNonEmptyOutputUnlessForced) {
  TempDir dir;
  const std::string out = dir / "m";
  std::filesystem::create_directories(out);
  testutil::WriteFile(out + "/notes.txt", "keep");
  RunResult r = RunCli("pack synth --preset tiny --out " + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("is not empty"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out + "/config.json"));
  r = RunCli("pack synth --preset tiny --out " + out + " --force");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(out + "/config.json"));
}

// Flips one bit of the byte at `offset` of `path`.
void FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  c = static_cast<char>(c ^ 0x01);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(c);
}

TEST(PackCli, ChecksumAndVerify) {
  TempDir dir;
  const std::string out = dir / "tiny";
  RunResult r = RunCli("pack synth --preset tiny --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(std::filesystem::exists(out + "/engram_checksums.json"));
  r = RunCli("pack verify --model " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("OK: 1 tensors match " + out + "/engram_checksums.json"),
            std::string::npos)
      << r.output;

  const std::string table = EngramTableName(EngramConfig{}, 1);
  auto store = TensorStore::OpenDirectory(out);
  ASSERT_TRUE(store.ok());
  const TensorInfo info = *store->Info(table);
  FlipByte(info.file, info.file_offset + 100);
  r = RunCli("pack verify --model " + out + " --threads 2");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("DATA_LOSS: " + table + ": checksum xxh3-64-chunked"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("but the data in " + info.file), std::string::npos) << r.output;

  // Intentional change: rewrite the checksums, then it verifies.
  r = RunCli("pack checksum --model " + out + " --threads 2 --chunk-bytes 4096");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("wrote " + out + "/engram_checksums.json: 1 tensors"), std::string::npos)
      << r.output;
  r = RunCli("pack verify --model " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;

  // A bad file is an error naming it; an absent one has nothing to verify.
  testutil::WriteFile(out + "/engram_checksums.json", "{\"algorithm\": \"md5\"}");
  r = RunCli("pack verify --model " + out);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("INVALID_ARGUMENT: " + out + "/engram_checksums.json"), std::string::npos)
      << r.output;
  std::filesystem::remove(out + "/engram_checksums.json");
  r = RunCli("pack verify --model " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("nothing to verify"), std::string::npos) << r.output;
}

TEST(PackCli, ChecksumUsageErrors) {
  RunResult r = RunCli("pack verify");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("missing required option --model"), std::string::npos) << r.output;
  r = RunCli("pack checksum --model /tmp/x --chunk-bytes 0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--chunk-bytes 0 must be positive"), std::string::npos) << r.output;
  r = RunCli("pack verify --model /tmp/x --threads -1");
  EXPECT_EQ(r.exit_code, 2);
  TempDir dir;
  r = RunCli("pack verify --model " + (dir / "missing"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(RunCli("pack checksum --help").exit_code, 0);
}

TEST(PackCli, UsageErrors) {
  EXPECT_EQ(RunCli("pack").exit_code, 2);
  RunResult r = RunCli("pack convert --preset tiny");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown pack source \"convert\""), std::string::npos) << r.output;
  r = RunCli("pack synth --out /tmp/never");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("missing required option --preset"), std::string::npos) << r.output;
  r = RunCli("pack synth --preset tiny --out /tmp/never --bogus 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown option --bogus"), std::string::npos) << r.output;
  EXPECT_EQ(RunCli("pack synth --help").exit_code, 0);
}

}  // namespace
}  // namespace engram

namespace engram {
namespace {

// pack synth --tables, then pack quantize of its BF16 tables: FP8 rows that pack verify
// accepts, the rate printed; and the usage errors.
TEST(PackCli, QuantizeTablesToFp8ThenVerify) {
  TempDir dir;
  const std::string bf16 = dir.path() + "/bf16", fp8 = dir.path() + "/fp8";
  RunResult r = RunCli("pack synth --preset tiny-v41 --tables bf16 --out " + bf16);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunCli("pack quantize --model " + bf16 + " --out " + fp8 + " --tables fp8 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("quantized 2 Engram tables"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("GB/s of tables read"), std::string::npos) << r.output;
  r = RunCli("pack verify --model " + fp8);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // A second quantize into the same (now full) directory needs --force; FP8 tables again are
  // refused; only fp8 is a target.
  r = RunCli("pack quantize --model " + bf16 + " --out " + fp8 + " --tables fp8");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  r = RunCli("pack quantize --model " + fp8 + " --out " + dir.path() + "/again --tables fp8");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("is F8_E4M3"), std::string::npos) << r.output;
  r = RunCli("pack quantize --model " + bf16 + " --out " + dir.path() + "/x --tables int4");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = RunCli("pack quantize --out " + dir.path() + "/x --tables fp8");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = RunCli("pack synth --preset tiny --tables fp16 --out " + dir.path() + "/y");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

}  // namespace
}  // namespace engram

namespace engram {
namespace {

// pack quantize --weights: int8 and fp8 Linear weights that the model checks accept, with the
// rate printed; together with --tables fp8; and the usage errors.
TEST(PackCli, QuantizeWeights) {
  TempDir dir;
  const std::string bf16 = dir.path() + "/bf16";
  RunResult r = RunCli("pack synth --preset tiny --out " + bf16);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const std::string format : {"int8", "fp8"}) {
    const std::string out = dir.path() + "/" + format;
    r = RunCli("pack quantize --model " + bf16 + " --out " + out + " --weights " + format +
               " --threads 2 --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(
        r.output.find("quantized 24 Linear weights of " + bf16 + " to " + format + " in " + out),
        std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find("GB/s of weights read"), std::string::npos) << r.output;
    auto m = OpenModel(out);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    ASSERT_TRUE(m->config.quantization.has_value());
    EXPECT_EQ(m->config.quantization->format(), format);
    EXPECT_EQ(m->store.Info("lm_head.weight")->dtype,
              format == "fp8" ? DType::kF8E4M3 : DType::kI8);
    EXPECT_TRUE(m->store.Has("model.layers.2.mlp.down_proj.weight_scale_inv"));
    // The Engram module's projections are Linear weights too.
    EXPECT_EQ(m->store.Info("model.layers.1.engram.value_proj.weight")->dtype,
              format == "fp8" ? DType::kF8E4M3 : DType::kI8);
    EXPECT_TRUE(m->store.Has("model.layers.1.engram.key_projs.0.weight_scale_inv"));
    r = RunCli("pack verify --model " + out);
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  // --keep-lm-head.
  r = RunCli("pack quantize --model " + bf16 + " --out " + dir.path() +
             "/keep --weights fp8 --keep-lm-head --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("quantized 23 Linear weights"), std::string::npos) << r.output;
  // --keep-engram: the Engram projections as they were, listed as not converted.
  r = RunCli("pack quantize --model " + bf16 + " --out " + dir.path() +
             "/keep-engram --weights int8 --keep-engram --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("quantized 22 Linear weights"), std::string::npos) << r.output;
  {
    auto m = OpenModel(dir.path() + "/keep-engram");
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(m->store.Info("model.layers.1.engram.value_proj.weight")->dtype, DType::kBF16);
    EXPECT_FALSE(m->store.Has("model.layers.1.engram.value_proj.weight_scale_inv"));
    EXPECT_EQ(m->store.Info("model.layers.1.mlp.up_proj.weight")->dtype, DType::kI8);
    EXPECT_EQ(m->config.quantization->modules_to_not_convert, std::vector<std::string>{"engram"});
  }
  r = RunCli("pack quantize --model " + bf16 + " --out " + dir.path() +
             "/x --keep-engram --tables fp8 --quiet");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--keep-engram applies to --weights only"), std::string::npos)
      << r.output;
  // Quantizing a quantized model is refused, naming its config.
  r = RunCli("pack quantize --model " + dir.path() + "/int8 --out " + dir.path() +
             "/again --weights fp8 --quiet");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("int8/config.json: already has a quantization_config"), std::string::npos)
      << r.output;
  // Usage errors: an unknown format, nothing asked, --keep-lm-head alone.
  r = RunCli("pack quantize --model " + bf16 + " --out " + dir.path() + "/x --weights bogus");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--weights: unknown weight format \"bogus\""), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("usage: engram pack quantize"), std::string::npos) << r.output;
  r = RunCli("pack quantize --model " + bf16 + " --out " + dir.path() + "/x");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("nothing to do"), std::string::npos) << r.output;
  r = RunCli("pack quantize --model " + bf16 + " --out " + dir.path() + "/x --keep-lm-head " +
             "--tables fp8");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/x"));
}

TEST(PackCli, QuantizeTablesAndWeightsTogether) {
  TempDir dir;
  const std::string bf16 = dir.path() + "/bf16", out = dir.path() + "/both";
  RunResult r = RunCli("pack synth --preset tiny-v41 --tables bf16 --out " + bf16);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunCli("pack quantize --model " + bf16 + " --out " + out + " --tables fp8 --weights int8");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("quantized 22 Linear weights of " + bf16 +
                          " to int8 and 2 Engram tables to FP8"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("GB/s of tables and weights read"), std::string::npos) << r.output;
  auto m = OpenModel(out);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->store.Info(EngramTableName(*m->config.engram, 1))->dtype, DType::kF8E4M3);
  EXPECT_EQ(m->store.Info("model.layers.0.self_attn.q_proj.weight")->dtype, DType::kI8);
  r = RunCli("pack verify --model " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("OK: 4 tensors match"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace engram
