#include "model/model_files.h"

#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "../../support/temp_dir.h"
#include "../../support/tokenizer_fixture.h"
#include "model/synth.h"
#include "model/weights.h"
#include "v41_model.h"

namespace engram {
namespace {

using json = nlohmann::json;
using testutil::TempDir;
using testutil::WriteFile;

Status WriteTiny(const std::string& dir, uint64_t seed = 0) {
  SynthOptions o;
  o.preset = "tiny";
  o.seed = seed;
  o.progress = false;
  return WriteSynthModel(o, dir);
}

TEST(OpenModel, TinyDirectoryLoadsWithWeights) {
  TempDir dir;
  ASSERT_TRUE(WriteTiny(dir.path()).ok());
  auto m = OpenModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->source, dir.path());
  EXPECT_EQ(m->config.vocab_size, 512);
  EXPECT_TRUE(m->tokenizer_path.empty());
  EXPECT_EQ(m->compression.vocab_size(), 512);
  EXPECT_EQ(m->compression.num_compressed(), 512);
  EXPECT_EQ(m->compression(17), 17);
  auto w = LoadHostWeights(m->config, m->store);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->embed.dtype, DType::kBF16);
  ASSERT_TRUE(w->layers[1].engram.has_value());
  const TensorInfo* table =
      m->store.Info("model.layers.1.engram.multi_head_embedding.embedding.weight");
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(table->file, dir / "model-engram-tables.safetensors");
  EXPECT_EQ(table->file_offset % 8, 0u);
}

TEST(OpenModel, SynthSpecMatchesDirectory) {
  TempDir dir;
  ASSERT_TRUE(WriteTiny(dir.path(), 9).ok());
  auto disk = OpenModel(dir.path());
  auto mem = OpenModel("synth:tiny?seed=9");
  ASSERT_TRUE(disk.ok() && mem.ok()) << mem.status().ToString();
  EXPECT_EQ(mem->config.ToJson(), disk->config.ToJson());
  for (const std::string& name : disk->store.Names()) {
    Tensor a = *disk->store.Get(name), b = *mem->store.Get(name);
    EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes()), 0) << name;
  }
  auto f32 = OpenModel("synth:tiny-qwen2?dtype=f32&table_gb=0.001");
  ASSERT_TRUE(f32.ok()) << f32.status().ToString();
  EXPECT_EQ(f32->store.Info("model.embed_tokens.weight")->dtype, DType::kF32);
  EXPECT_EQ(f32->config.model_type, "qwen2");
}

TEST(OpenModel, BadSynthSpecs) {
  auto m = OpenModel("synth:tiny?sed=1");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(),
            "synth:tiny?sed=1: unknown parameter \"sed\" (accepted: seed, dtype, tables, "
            "table_gb, tokenizer)");
  EXPECT_FALSE(OpenModel("synth:tiny?tables=int4").ok());
  auto fp8 = OpenModel("synth:tiny-v41");  // FP8 rows by default
  ASSERT_TRUE(fp8.ok()) << fp8.status().ToString();
  EXPECT_EQ(fp8->store.Info(EngramTableName(*fp8->config.engram, 1))->dtype, DType::kF8E4M3);
  EXPECT_EQ(fp8->store.Info(EngramScaleName(*fp8->config.engram, 1))->dtype, DType::kF8E8M0);
  auto bf16 = OpenModel("synth:tiny-v41?tables=bf16");
  ASSERT_TRUE(bf16.ok()) << bf16.status().ToString();
  EXPECT_EQ(bf16->store.Info(EngramTableName(*bf16->config.engram, 1))->dtype, DType::kBF16);
  EXPECT_FALSE(bf16->store.Has(EngramScaleName(*bf16->config.engram, 1)));
  // The paper preset's rows of 8 values cannot be FP8 (a scale covers 32).
  EXPECT_FALSE(OpenModel("synth:tiny?tables=fp8").ok());
  EXPECT_FALSE(OpenModel("synth:tiny?seed=abc").ok());
  EXPECT_FALSE(OpenModel("synth:tiny?dtype=int8").ok());
  EXPECT_FALSE(OpenModel("synth:tiny?table_gb=-1").ok());
  EXPECT_NE(OpenModel("synth:nope").status().message().find("unknown synth preset"),
            std::string::npos);
}

TEST(OpenModel, NotADirectory) {
  auto m = OpenModel("/nonexistent/model");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
}

TEST(OpenModel, MissingConfigNamesFile) {
  TempDir dir;
  ASSERT_TRUE(WriteTiny(dir.path()).ok());
  std::filesystem::remove(dir / "config.json");
  auto m = OpenModel(dir.path());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find(dir / "config.json"), std::string::npos);
}

TEST(OpenModel, CompressionMapExtendedToModelVocab) {
  TempDir dir;
  ASSERT_TRUE(WriteTiny(dir.path()).ok());
  WriteFile(dir / "tokenizer.json", "{}");
  // A map over the first 500 ids (a tokenizer smaller than the padded embedding).
  json lookup = json::array();
  for (int i = 0; i < 500; ++i) lookup.push_back(i / 2);
  WriteFile(dir / "engram_compression.json",
            json{{"lookup", lookup}, {"num_compressed", 250}}.dump());
  auto m = OpenModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->tokenizer_path, dir / "tokenizer.json");
  EXPECT_EQ(m->compression.vocab_size(), 512);
  EXPECT_EQ(m->compression.num_compressed(), 250);
  EXPECT_EQ(m->compression(7), 3);
  EXPECT_EQ(m->compression(505), m->compression(2));  // the compressed pad id

  lookup = json::array();
  for (int i = 0; i < 600; ++i) lookup.push_back(i);
  WriteFile(dir / "engram_compression.json",
            json{{"lookup", lookup}, {"num_compressed", 600}}.dump());
  m = OpenModel(dir.path());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("more than the model's vocab_size = 512"), std::string::npos);
}

// A config.json whose sizes disagree with the tensors is refused when the model is opened,
// naming the tensor and both shapes, before anything is sized from the config.
TEST(OpenModel, ConfigSizesAreCheckedAgainstTheTensors) {
  TempDir dir;
  ASSERT_TRUE(WriteTiny(dir.path()).ok());
  const std::string cfg_path = dir / "config.json";
  json cfg = json::parse(testutil::ReadFile(cfg_path));
  struct Case {
    const char* key;
    int64_t value;
    const char* needle;
  };
  const Case cases[] = {
      {"vocab_size", 1 << 20, "model.embed_tokens.weight has shape [512, "},
      {"num_hidden_layers", 1000, "no tensor model.layers."},
      {"intermediate_size", 4096, "mlp.gate_proj.weight has shape"},
  };
  for (const Case& c : cases) {
    json j = cfg;
    j[c.key] = c.value;
    WriteFile(cfg_path, j.dump());
    auto m = OpenModel(dir.path());
    ASSERT_FALSE(m.ok()) << c.key;
    EXPECT_NE(m.status().message().find(c.needle), std::string::npos) << m.status().message();
  }
}

// V4.1 names its compressed vocabulary; the model's compression map must have exactly that
// many ids (the hashes derive from it), whichever way the map is made.
TEST(OpenModelV41, IdentityCompressionMustMatchTheCompressedVocab) {
  TempDir dir;
  nlohmann::json j = testutil::V41ConfigJson();  // compressed 512 = vocab_size
  testutil::WriteModelDir(testutil::ParseConfig(j), dir.path());
  auto m = OpenModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE(m->config.engram->v41());
  EXPECT_EQ(m->compression.num_compressed(), 512);
  auto w = LoadHostWeights(m->config, m->store);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->layers[1].engram->table.dtype, DType::kF8E4M3);

  j["engram_compressed_vocab_size"] = 500;
  WriteFile(dir / "config.json", j.dump());
  m = OpenModel(dir.path());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.status().message(),
            (dir / "config.json") +
                ": engram_compressed_vocab_size is 500, but the identity compression (no "
                "tokenizer.json or engram_compression.json: one id per token of vocab_size) has "
                "512 ids (the Engram hashes derive from the compressed vocabulary: the two must "
                "agree)");
}

TEST(OpenModelV41, CompressionFileMustMatchTheCompressedVocab) {
  TempDir dir;
  nlohmann::json j = testutil::V41ConfigJson();
  j["engram_compressed_vocab_size"] = 256;
  testutil::WriteModelDir(testutil::ParseConfig(j), dir.path());
  json lookup = json::array();
  for (int i = 0; i < 512; ++i) lookup.push_back(i / 2);
  WriteFile(dir / "engram_compression.json",
            json{{"lookup", lookup}, {"num_compressed", 256}}.dump());
  auto m = OpenModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->compression.num_compressed(), 256);

  j["engram_compressed_vocab_size"] = 300;
  WriteFile(dir / "config.json", j.dump());
  m = OpenModel(dir.path());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find((dir / "config.json") +
                                      ": engram_compressed_vocab_size is 300, but the "
                                      "compression map " +
                                      (dir / "engram_compression.json") + " has 256 ids"),
            std::string::npos)
      << m.status().message();
}

// The released numbers: V4.1's config says 99092 compressed ids; DeepSeek-V3's tokenizer
// compresses to 98627 by the reference's rules, so the pair is refused naming both.
TEST(OpenModelV41, TokenizerCompressionMustMatchTheCompressedVocab) {
  if (!engram::testing::DeepSeekTokenizerPresent()) return;
  TempDir dir;
  nlohmann::json j = testutil::V41ConfigJson();
  j["vocab_size"] = 129280;
  j["tie_word_embeddings"] = true;
  j["engram_compressed_vocab_size"] = 99092;
  testutil::WriteModelDir(testutil::ParseConfig(j), dir.path(), DType::kBF16, DType::kBF16);
  std::filesystem::create_symlink(engram::testing::DeepSeekTokenizerPath(), dir / "tokenizer.json");
  auto m = OpenModel(dir.path());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message().rfind(
                (dir / "config.json") +
                    ": engram_compressed_vocab_size is 99092, but the compression map built "
                    "from " +
                    (dir / "tokenizer.json") + " has 98627 ids",
                0),
            0u)
      << m.status().message();

  j["engram_compressed_vocab_size"] = 98627;
  WriteFile(dir / "config.json", j.dump());
  m = OpenModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->compression.num_compressed(), 98627);
  EXPECT_EQ(m->compression.vocab_size(), 129280);
}

}  // namespace
}  // namespace engram
