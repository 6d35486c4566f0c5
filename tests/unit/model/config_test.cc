#include "model/config.h"

#include <gtest/gtest.h>

#include "temp_dir.h"

namespace engram {
namespace {

using json = nlohmann::json;

json MinimalJson() {
  return json{{"model_type", "llama"},  {"hidden_size", 64},        {"intermediate_size", 160},
              {"num_hidden_layers", 3}, {"num_attention_heads", 4}, {"vocab_size", 512}};
}

json EngramJson() {
  return json{{"engram_vocab_size", {1000, 1000}},
              {"max_ngram_size", 3},
              {"n_embed_per_ngram", 32},
              {"n_head_per_ngram", 4},
              {"layer_ids", {1}},
              {"pad_id", 2},
              {"seed", 0},
              {"kernel_size", 4}};
}

std::string Error(const json& j) {
  auto c = ModelConfig::FromJson(j, "cfg.json");
  EXPECT_FALSE(c.ok());
  return c.ok() ? "" : c.status().message();
}

TEST(ModelConfig, ParsesMinimalWithDefaults) {
  auto c = ModelConfig::FromJson(MinimalJson(), "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_EQ(c->max_position_embeddings, 4096);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->rope_scaling.has_value());
  EXPECT_FALSE(c->engram.has_value());
  EXPECT_TRUE(c->eos_token_ids.empty());
}

TEST(ModelConfig, ParsesEngramObject) {
  json j = MinimalJson();
  j["engram"] = EngramJson();
  j["engram"]["short_conv"] = false;
  j["engram"]["norm_eps"] = 1e-6;
  auto c = ModelConfig::FromJson(j, "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE(c->engram.has_value());
  const EngramConfig& e = *c->engram;
  EXPECT_EQ(e.engram_vocab_size, (std::vector<int64_t>{1000, 1000}));
  EXPECT_EQ(e.num_heads(), 8);
  EXPECT_EQ(e.head_dim(), 8);
  EXPECT_EQ(e.engram_dim(), 64);
  EXPECT_FALSE(e.short_conv);
  EXPECT_EQ(e.norm_eps, 1e-6);
  EXPECT_EQ(e.conv_norm_eps, 1e-5);
  EXPECT_TRUE(e.IsEngramLayer(1));
  EXPECT_FALSE(e.IsEngramLayer(0));
  EXPECT_EQ(e.LayerIndex(1), 0);
  EXPECT_EQ(e.LayerIndex(2), -1);
}

TEST(ModelConfig, Qwen2AlwaysHasAttentionBias) {
  json j = MinimalJson();
  j["model_type"] = "qwen2";
  auto c = ModelConfig::FromJson(j, "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->attention_bias);
}

TEST(ModelConfig, ArchitecturesGiveTheModelType) {
  json j = MinimalJson();
  j.erase("model_type");
  j["architectures"] = {"Qwen2ForCausalLM"};
  auto c = ModelConfig::FromJson(j, "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->model_type, "qwen2");
  j["architectures"] = {"MistralForCausalLM"};
  EXPECT_NE(Error(j).find("LlamaForCausalLM"), std::string::npos);
}

TEST(ModelConfig, UnknownModelTypeRejected) {
  json j = MinimalJson();
  j["model_type"] = "mistral";
  EXPECT_EQ(Error(j),
            "cfg.json: key \"model_type\" = \"mistral\" is not supported (expected llama or "
            "qwen2)");
}

TEST(ModelConfig, MissingRequiredKey) {
  json j = MinimalJson();
  j.erase("hidden_size");
  EXPECT_EQ(Error(j), "cfg.json: missing required key \"hidden_size\"");
}

TEST(ModelConfig, WrongTypeNamesKeyAndValue) {
  json j = MinimalJson();
  j["num_hidden_layers"] = "3";
  EXPECT_EQ(Error(j), "cfg.json: key \"num_hidden_layers\" must be an integer, found string \"3\"");
  j = MinimalJson();
  j["tie_word_embeddings"] = 1;
  EXPECT_NE(Error(j).find("\"tie_word_embeddings\" must be a boolean"), std::string::npos);
}

TEST(ModelConfig, NonPositiveSizeRejected) {
  json j = MinimalJson();
  j["intermediate_size"] = 0;
  EXPECT_EQ(Error(j), "cfg.json: key \"intermediate_size\" = 0 must be positive");
}

TEST(ModelConfig, HeadsMustDivide) {
  json j = MinimalJson();
  j["num_key_value_heads"] = 3;
  EXPECT_EQ(Error(j),
            "cfg.json: num_attention_heads = 4 is not divisible by num_key_value_heads = 3");
  j = MinimalJson();
  j["hidden_size"] = 66;
  EXPECT_NE(Error(j).find("hidden_size = 66 is not divisible by num_attention_heads = 4"),
            std::string::npos);
  j["head_dim"] = 16;  // an explicit head_dim lifts the divisibility requirement
  EXPECT_TRUE(ModelConfig::FromJson(j, "cfg.json").ok());
}

TEST(ModelConfig, EngramLayerBeyondLayerCount) {
  json j = MinimalJson();
  j["num_hidden_layers"] = 32;
  j["engram"] = EngramJson();
  j["engram"]["layer_ids"] = {1, 40};
  EXPECT_EQ(Error(j),
            "cfg.json: key \"engram.layer_ids[1]\" = 40 is beyond num_hidden_layers = 32");
}

TEST(ModelConfig, EngramEmbedNotDivisibleByHeads) {
  json j = MinimalJson();
  j["engram"] = EngramJson();
  j["engram"]["n_embed_per_ngram"] = 30;
  EXPECT_EQ(Error(j),
            "cfg.json: key \"engram.n_embed_per_ngram\" = 30 is not divisible by "
            "n_head_per_ngram = 4");
}

TEST(ModelConfig, EngramVocabSizeCountMustMatchOrders) {
  json j = MinimalJson();
  j["engram"] = EngramJson();
  j["engram"]["max_ngram_size"] = 4;
  EXPECT_EQ(Error(j),
            "cfg.json: key \"engram.engram_vocab_size\" has 2 entries, expected max_ngram_size "
            "- 1 = 3");
}

TEST(ModelConfig, EngramMissingKeyAndBadElement) {
  json j = MinimalJson();
  j["engram"] = EngramJson();
  j["engram"].erase("layer_ids");
  EXPECT_EQ(Error(j), "cfg.json: missing required key \"engram.layer_ids\"");
  j["engram"]["layer_ids"] = {1, "x"};
  EXPECT_EQ(Error(j),
            "cfg.json: key \"engram.layer_ids[1]\" must be an integer, found string \"x\"");
}

TEST(ModelConfig, EngramPadIdInsideVocab) {
  json j = MinimalJson();
  j["engram"] = EngramJson();
  j["engram"]["pad_id"] = 512;
  EXPECT_NE(Error(j).find("\"engram.pad_id\" = 512 is outside [0, vocab_size = 512)"),
            std::string::npos);
}

TEST(ModelConfig, EosIsIntOrList) {
  json j = MinimalJson();
  j["eos_token_id"] = 7;
  auto c = ModelConfig::FromJson(j, "cfg.json");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{7}));
  j["eos_token_id"] = {7, 9};
  c = ModelConfig::FromJson(j, "cfg.json");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{7, 9}));
  j["eos_token_id"] = "7";
  EXPECT_NE(Error(j).find("an integer or an array of integers"), std::string::npos);
  j["eos_token_id"] = 600;
  EXPECT_NE(Error(j).find("eos_token_id[0] = 600 is outside"), std::string::npos);
}

TEST(ModelConfig, RopeScalingLlama3AndAliases) {
  json j = MinimalJson();
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  auto c = ModelConfig::FromJson(j, "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_scaling->rope_type, "llama3");
  EXPECT_EQ(c->rope_scaling->factor, 8.0);
  EXPECT_EQ(c->rope_scaling->original_max_position_embeddings, 8192);

  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2}};
  c = ModelConfig::FromJson(j, "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->rope_scaling->rope_type, "linear");
  EXPECT_EQ(c->rope_scaling->factor, 2.0);

  j["rope_scaling"] = nullptr;
  c = ModelConfig::FromJson(j, "cfg.json");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->rope_scaling.has_value());

  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4}};
  EXPECT_NE(Error(j).find("\"rope_scaling.rope_type\" = \"yarn\" is not supported"),
            std::string::npos);
  j["rope_scaling"] = {{"rope_type", "llama3"}};
  EXPECT_EQ(Error(j), "cfg.json: missing required key \"rope_scaling.factor\"");
}

TEST(ModelConfig, ToJsonRoundTrips) {
  json j = MinimalJson();
  j["model_type"] = "qwen2";
  j["num_key_value_heads"] = 2;
  j["tie_word_embeddings"] = true;
  j["eos_token_id"] = {1, 5};
  j["bos_token_id"] = 0;
  j["rope_scaling"] = {
      {"rope_type", "llama3"}, {"factor", 8}, {"original_max_position_embeddings", 64}};
  j["engram"] = EngramJson();
  auto a = ModelConfig::FromJson(j, "a");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto b = ModelConfig::FromJson(a->ToJson(), "b");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(a->ToJson(), b->ToJson());
  EXPECT_EQ(b->model_type, "qwen2");
  EXPECT_EQ(b->eos_token_ids, (std::vector<int64_t>{1, 5}));
  EXPECT_EQ(b->engram->layer_ids, (std::vector<int>{1}));
  EXPECT_EQ(b->rope_scaling->original_max_position_embeddings, 64);
}

TEST(ModelConfig, LoadNamesTheFile) {
  testutil::TempDir dir;
  auto missing = ModelConfig::Load(dir / "nope.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.json"), std::string::npos);

  testutil::WriteFile(dir / "bad.json", "{\"hidden_size\": 64,");
  auto bad = ModelConfig::Load(dir / "bad.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad.json: not valid JSON"), std::string::npos);

  json j = MinimalJson();
  j.erase("vocab_size");
  testutil::WriteFile(dir / "config.json", j.dump());
  auto c = ModelConfig::Load(dir / "config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), (dir / "config.json") + ": missing required key \"vocab_size\"");
}

// Sizes nothing real has are refused at parse time, before anything is allocated from them.
TEST(ModelConfig, RefusesSizesBeyondTheLimitsNamingTheKey) {
  struct Case {
    const char* key;
    json value;
    const char* needle;
  };
  const Case cases[] = {
      {"num_hidden_layers", 2147483648LL, "\"num_hidden_layers\" = 2147483648 is larger"},
      {"vocab_size", 2147483647, "\"vocab_size\" = 2147483647 is larger"},
      {"hidden_size", int64_t{1} << 40, "\"hidden_size\""},
      {"max_position_embeddings", int64_t{1} << 40, "\"max_position_embeddings\""},
      {"num_hidden_layers", 18446744073709551615ULL,
       "\"num_hidden_layers\" = "
       "18446744073709551615 is out of range"},
  };
  for (const Case& c : cases) {
    json j = MinimalJson();
    j[c.key] = c.value;
    const std::string e = Error(j);
    EXPECT_NE(e.find(c.needle), std::string::npos) << e;
    EXPECT_EQ(e.rfind("cfg.json: ", 0), 0u) << e;
  }
}

TEST(ModelConfig, RefusesEngramGeometryThatWouldSearchPrimesForever) {
  json j = MinimalJson();
  j["engram"] = EngramJson();
  j["engram"]["n_embed_per_ngram"] = 2000000000;
  j["engram"]["n_head_per_ngram"] = 1000000000;
  std::string e = Error(j);
  EXPECT_NE(e.find("engram.n_embed_per_ngram\" = 2000000000 is larger"), std::string::npos) << e;
  j["engram"]["n_embed_per_ngram"] = 512;
  j["engram"]["n_head_per_ngram"] = 256;
  j["engram"]["max_ngram_size"] = 16;
  j["engram"]["engram_vocab_size"] = std::vector<int64_t>(15, 1000);
  j["num_hidden_layers"] = 3;
  j["engram"]["layer_ids"] = {0, 1, 2};
  e = Error(j);  // 3 x 15 x 256 = 11520 prime searches
  EXPECT_NE(e.find("11520 table heads"), std::string::npos) << e;
  j["engram"] = EngramJson();
  j["engram"]["engram_vocab_size"] = {int64_t{1} << 62, 1000};
  e = Error(j);
  EXPECT_NE(e.find("engram_vocab_size[0]"), std::string::npos) << e;
}

TEST(ModelConfig, LoadRefusesNumberOverflowAndHostileFiles) {
  testutil::TempDir dir;
  json j = MinimalJson();
  std::string text = j.dump();
  text.insert(1, "\"rope_theta\": 1e400, ");
  testutil::WriteFile(dir / "config.json", text);
  auto c = ModelConfig::Load(dir / "config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("number overflow"), std::string::npos)
      << c.status().message();
  EXPECT_NE(c.status().message().find(dir / "config.json"), std::string::npos);
  for (const char* dev : {"/dev/zero", "/dev/urandom"}) {
    auto d = ModelConfig::Load(dev);
    ASSERT_FALSE(d.ok());
    EXPECT_NE(d.status().message().find("expected a regular file"), std::string::npos)
        << d.status().message();
  }
}

}  // namespace
}  // namespace engram
