#include "model/config.h"

#include <gtest/gtest.h>

#include "../../support/temp_dir.h"
#include "model/engram_geometry.h"

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

// DeepSeek-V4.1's flat Engram keys on a small backbone (vocab 512, 3 layers).
json V41Json() {
  json j = MinimalJson();
  j["engram_layer_ids"] = {1};
  j["engram_max_ngram_size"] = 3;
  j["engram_vocab_size"] = 1000;
  j["engram_n_heads"] = 4;
  j["engram_head_dim"] = 32;
  j["engram_pad_token_id"] = 2;
  j["engram_compressed_vocab_size"] = 512;
  return j;
}

// The released DeepSeek-V4.1 Engram numbers (DESIGN.md "Engram semantics") on a small dense
// backbone with V4.1's vocabulary.
json RealV41Json() {
  json j = MinimalJson();
  j["vocab_size"] = 129280;
  j["num_hidden_layers"] = 16;
  j["engram_layer_ids"] = {1, 14};
  j["engram_max_ngram_size"] = 4;
  j["engram_vocab_size"] = 16000000;
  j["engram_n_heads"] = 8;
  j["engram_head_dim"] = 256;
  j["engram_pad_token_id"] = 2;
  j["engram_compressed_vocab_size"] = 99092;
  return j;
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

TEST(ModelConfigV41, ParsesFlatKeys) {
  json j = V41Json();
  j["hc_mult"] = 1;
  auto c = ModelConfig::FromJson(j, "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE(c->engram.has_value());
  const EngramConfig& e = *c->engram;
  EXPECT_TRUE(e.v41());
  EXPECT_EQ(e.variant, EngramVariant::kV41);
  EXPECT_EQ(e.layer_ids, (std::vector<int>{1}));
  EXPECT_EQ(e.max_ngram_size, 3);
  EXPECT_EQ(e.engram_vocab_size, (std::vector<int64_t>{1000, 1000}));  // one start per order
  EXPECT_EQ(e.n_head_per_ngram, 4);
  EXPECT_EQ(e.n_embed_per_ngram, 128);  // heads x head_dim
  EXPECT_EQ(e.head_dim(), 32);
  EXPECT_EQ(e.num_heads(), 8);
  EXPECT_EQ(e.engram_dim(), 256);
  EXPECT_EQ(e.pad_id, 2);
  EXPECT_EQ(e.compressed_vocab_size, 512);
  EXPECT_EQ(e.num_embeddings, 0);
  EXPECT_EQ(e.hc_mult, 1);
  EXPECT_EQ(e.seed, 0);
  EXPECT_FALSE(e.short_conv);
  EXPECT_EQ(e.norm_eps, 1e-20);
}

TEST(ModelConfigV41, PaperLayoutIsThePaperVariant) {
  json j = MinimalJson();
  j["engram"] = EngramJson();
  auto c = ModelConfig::FromJson(j, "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->engram->variant, EngramVariant::kPaper);
  EXPECT_FALSE(c->engram->v41());
  EXPECT_EQ(c->engram->compressed_vocab_size, 0);
}

// The geometry of the released checkpoint: its two tables have these many rows.
TEST(ModelConfigV41, RealV41GeometryMatchesTheReleasedCheckpoint) {
  auto c = ModelConfig::FromJson(RealV41Json(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const EngramConfig& e = *c->engram;
  EXPECT_EQ(e.engram_vocab_size, (std::vector<int64_t>{16000000, 16000000, 16000000}));
  EXPECT_EQ(e.num_heads(), 24);
  EXPECT_EQ(e.head_dim(), 256);
  EXPECT_EQ(e.engram_dim(), 6144);
  auto g = ComputeEngramGeometry(e);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  ASSERT_EQ(g->size(), 2u);
  EXPECT_EQ((*g)[0].layer_id, 1);
  EXPECT_EQ((*g)[0].total_rows, 384006168);
  EXPECT_EQ((*g)[1].layer_id, 14);
  EXPECT_EQ((*g)[1].total_rows, 384016682);
  EXPECT_EQ((*g)[0].head_sizes.size(), 24u);
  EXPECT_EQ((*g)[0].head_offsets[1], (*g)[0].head_sizes[0]);

  json j = RealV41Json();
  j["engram_num_embeddings"] = int64_t{384006168} + 384016682;
  auto with_total = ModelConfig::FromJson(j, "config.json");
  ASSERT_TRUE(with_total.ok()) << with_total.status().ToString();
  EXPECT_EQ(with_total->engram->num_embeddings, 768022850);
}

TEST(ModelConfigV41, NumEmbeddingsMustMatchTheGeometry) {
  json j = RealV41Json();
  j["engram_num_embeddings"] = 768000000;
  EXPECT_EQ(Error(j),
            "cfg.json: key \"engram_num_embeddings\" = 768000000, but engram_layer_ids, "
            "engram_max_ngram_size, engram_vocab_size and engram_n_heads give 768022850 table "
            "rows (384006168 + 384016682 per layer)");
  j["engram_num_embeddings"] = 0;
  EXPECT_EQ(Error(j), "cfg.json: key \"engram_num_embeddings\" = 0 must be positive");
}

TEST(ModelConfigV41, HyperConnectionsRefused) {
  json j = V41Json();
  j["hc_mult"] = 4;
  EXPECT_EQ(Error(j),
            "cfg.json: key \"hc_mult\" = 4 is not supported: engramd runs without "
            "hyper-connections (hc_mult = 1 only)");
  j = MinimalJson();  // the backbone alone has no hyper-connections either
  j["hc_mult"] = 2;
  EXPECT_NE(Error(j).find("\"hc_mult\" = 2 is not supported"), std::string::npos);
  j["hc_mult"] = 1;
  EXPECT_TRUE(ModelConfig::FromJson(j, "cfg.json").ok());
}

TEST(ModelConfigV41, BothLayoutsRefused) {
  json j = V41Json();
  j["engram"] = EngramJson();
  EXPECT_EQ(Error(j),
            "cfg.json: both an \"engram\" object and the DeepSeek-V4.1 flat key "
            "\"engram_layer_ids\" are present; describe Engram one way (the \"engram\" object "
            "or the engram_* keys)");
  j = MinimalJson();
  j["engram"] = EngramJson();
  j["engram_compressed_vocab_size"] = 512;
  EXPECT_NE(Error(j).find("\"engram_compressed_vocab_size\" are present"), std::string::npos);
}

TEST(ModelConfigV41, MissingFlatKeyNamed) {
  for (const char* key :
       {"engram_layer_ids", "engram_max_ngram_size", "engram_vocab_size", "engram_n_heads",
        "engram_head_dim", "engram_pad_token_id", "engram_compressed_vocab_size"}) {
    json j = V41Json();
    j.erase(key);
    EXPECT_EQ(Error(j), fmt::format("cfg.json: missing required key \"{}\"", key));
  }
  json j = V41Json();  // null is absent
  j["engram_head_dim"] = nullptr;
  EXPECT_EQ(Error(j), "cfg.json: missing required key \"engram_head_dim\"");
}

TEST(ModelConfigV41, BadValuesNameTheFlatKey) {
  struct Case {
    const char* key;
    json value;
    const char* message;
  };
  const Case cases[] = {
      {"engram_vocab_size", json::array({1000, 1000}),
       "key \"engram_vocab_size\" must be an integer, found array [1000,1000]"},
      {"engram_vocab_size", 1, "key \"engram_vocab_size\" = 1 must be at least 2"},
      {"engram_vocab_size", int64_t{1} << 50,
       "key \"engram_vocab_size\" = 1125899906842624 is larger than engramd supports (at most "
       "281474976710656)"},
      {"engram_max_ngram_size", 1, "key \"engram_max_ngram_size\" = 1 must be at least 2"},
      {"engram_max_ngram_size", 2000000000,
       "key \"engram_max_ngram_size\" = 2000000000 is larger than engramd supports (at most 16)"},
      {"engram_max_ngram_size", int64_t{1} << 40,
       "key \"engram_max_ngram_size\" = 1099511627776 is out of range"},
      {"engram_n_heads", 0, "key \"engram_n_heads\" = 0 must be positive"},
      {"engram_n_heads", 1000, "key \"engram_n_heads\" = 1000 is larger than engramd supports"},
      {"engram_head_dim", -32, "key \"engram_head_dim\" = -32 must be positive"},
      {"engram_head_dim", 1 << 17, "key \"engram_head_dim\" = 131072 is larger than engramd"},
      {"engram_pad_token_id", 512,
       "key \"engram_pad_token_id\" = 512 is outside [0, vocab_size = 512)"},
      {"engram_pad_token_id", -1,
       "key \"engram_pad_token_id\" = -1 is outside [0, vocab_size = 512)"},
      {"engram_compressed_vocab_size", 0,
       "key \"engram_compressed_vocab_size\" = 0 must be positive"},
      {"engram_compressed_vocab_size", 513,
       "key \"engram_compressed_vocab_size\" = 513 is larger than vocab_size = 512"},
      {"engram_compressed_vocab_size", 18446744073709551615ULL,
       "key \"engram_compressed_vocab_size\" = 18446744073709551615 is out of range"},
      {"engram_layer_ids", json::array({1, 3}),
       "key \"engram_layer_ids[1]\" = 3 is beyond num_hidden_layers = 3"},
      {"engram_layer_ids", json::array({1, 1}), "key \"engram_layer_ids[1]\" = 1 appears twice"},
      {"engram_layer_ids", json::array(), "key \"engram_layer_ids\" is empty"},
      {"engram_layer_ids", 1,
       "key \"engram_layer_ids\" must be an array of integers, found number 1"},
      {"hc_mult", "1", "key \"hc_mult\" must be an integer, found string \"1\""},
  };
  for (const Case& c : cases) {
    json j = V41Json();
    j[c.key] = c.value;
    const std::string e = Error(j);
    EXPECT_NE(e.find(c.message), std::string::npos) << c.key << ": " << e;
    EXPECT_EQ(e.rfind("cfg.json: ", 0), 0u) << e;
  }
  json j = V41Json();
  j["engram_n_heads"] = 256;
  j["engram_head_dim"] = 512;
  EXPECT_EQ(Error(j),
            "cfg.json: keys \"engram_n_heads\" x \"engram_head_dim\" = 256 x 512 = 131072 is "
            "larger than engramd supports (at most 65536 values per n-gram order)");
  j = V41Json();  // 15 layers x 15 orders x 256 heads: too many prime searches
  j["num_hidden_layers"] = 15;
  j["engram_layer_ids"] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
  j["engram_max_ngram_size"] = 16;
  j["engram_n_heads"] = 256;
  j["engram_head_dim"] = 32;
  EXPECT_NE(Error(j).find("57600 table heads"), std::string::npos) << Error(j);
}

TEST(ModelConfigV41, ToJsonRoundTripsThroughTheFlatKeys) {
  json j = RealV41Json();
  j["engram_num_embeddings"] = 768022850;
  j["hc_mult"] = 1;
  auto a = ModelConfig::FromJson(j, "a");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  const json out = a->ToJson();
  EXPECT_FALSE(out.contains("engram"));
  EXPECT_EQ(out["engram_layer_ids"], json({1, 14}));
  EXPECT_EQ(out["engram_max_ngram_size"], 4);
  EXPECT_EQ(out["engram_vocab_size"], 16000000);
  EXPECT_EQ(out["engram_n_heads"], 8);
  EXPECT_EQ(out["engram_head_dim"], 256);
  EXPECT_EQ(out["engram_pad_token_id"], 2);
  EXPECT_EQ(out["engram_compressed_vocab_size"], 99092);
  EXPECT_EQ(out["engram_num_embeddings"], 768022850);
  EXPECT_EQ(out["hc_mult"], 1);
  auto b = ModelConfig::FromJson(out, "b");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->ToJson(), out);
  EXPECT_TRUE(b->engram->v41());
  EXPECT_EQ(b->engram->engram_vocab_size, a->engram->engram_vocab_size);
  EXPECT_EQ(b->engram->n_embed_per_ngram, 2048);
  // Without engram_num_embeddings the key stays absent.
  auto c = ModelConfig::FromJson(V41Json(), "c");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->ToJson().contains("engram_num_embeddings"));
  EXPECT_EQ(ModelConfig::FromJson(c->ToJson(), "d")->ToJson(), c->ToJson());
}

// Configs built in code (synth presets) are held to what the flat layout can express.
// `edit` changes the Engram config of V41Json; returns Validate's message.
std::string ValidateEdited(void (*edit)(EngramConfig&)) {
  auto c = ModelConfig::FromJson(V41Json(), "cfg.json");
  EXPECT_TRUE(c.ok());
  if (!c.ok()) return "";
  edit(*c->engram);
  return c->Validate("x").message();
}

TEST(ModelConfigV41, ValidateHoldsCodeBuiltConfigsToTheLayout) {
  EXPECT_NE(ValidateEdited([](EngramConfig& e) {
              e.engram_vocab_size[1] = 1200;
            }).find("one prime-search start for every order, found 1000, 1200"),
            std::string::npos);
  EXPECT_NE(ValidateEdited([](EngramConfig& e) {
              e.short_conv = true;
            }).find("seed 0, no short conv and gate eps 1e-20"),
            std::string::npos);
  EXPECT_NE(ValidateEdited([](EngramConfig& e) {
              e.norm_eps = 1e-6;
            }).find("seed 0, no short conv and gate eps 1e-20"),
            std::string::npos);
  EXPECT_NE(ValidateEdited([](EngramConfig& e) {
              e.compressed_vocab_size = 0;
            }).find("engram_compressed_vocab_size\" = 0 must be positive"),
            std::string::npos);
  EXPECT_NE(ValidateEdited([](EngramConfig& e) {
              e.hc_mult = 4;
            }).find("\"hc_mult\" = 4 is not supported"),
            std::string::npos);
  EXPECT_NE(ValidateEdited([](EngramConfig& e) {
              e.variant = EngramVariant::kPaper;
              e.short_conv = true;
            }).find("belong to the DeepSeek-V4.1 layout"),
            std::string::npos);
  EXPECT_EQ(ValidateEdited([](EngramConfig& e) {
              e.variant = EngramVariant::kPaper;
              e.short_conv = true;
              e.compressed_vocab_size = 0;
            }),
            "");
}

}  // namespace
}  // namespace engram

namespace engram {
namespace {

// quantization_config: Hugging Face's fine-grained FP8 (as DeepSeek-V3 and Qwen3-*-FP8 ship it)
// and engramd's engram_int8; everything else is refused naming the key and what is supported.
TEST(ModelConfig, QuantizationConfig) {
  json j = MinimalJson();
  j["quantization_config"] = {{"quant_method", "fp8"},
                              {"fmt", "e4m3"},
                              {"activation_scheme", "dynamic"},
                              {"weight_block_size", {128, 128}},
                              {"modules_to_not_convert", {"lm_head"}}};
  auto c = ModelConfig::FromJson(j, "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE(c->quantization.has_value());
  EXPECT_TRUE(c->quantization->fp8());
  EXPECT_EQ(c->quantization->weight_dtype(), DType::kF8E4M3);
  EXPECT_EQ(c->quantization->block_n, 128);
  EXPECT_EQ(c->quantization->block_k, 128);
  EXPECT_EQ(c->quantization->modules_to_not_convert, std::vector<std::string>{"lm_head"});
  auto back = ModelConfig::FromJson(c->ToJson(), "round-trip");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->quantization->block_n, 128);
  EXPECT_EQ(back->quantization->modules_to_not_convert, c->quantization->modules_to_not_convert);

  j["quantization_config"] = {{"quant_method", "engram_int8"}, {"weight_block_size", {1, 32}}};
  c = ModelConfig::FromJson(j, "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->quantization->weight_dtype(), DType::kI8);
  EXPECT_EQ(c->quantization->format(), "int8");

  auto refused = [&](json q, const std::string& want) {
    json k = MinimalJson();
    k["quantization_config"] = std::move(q);
    EXPECT_NE(Error(k).find(want), std::string::npos) << Error(k);
  };
  refused({{"quant_method", "awq"}}, "quantization_config.quant_method \"awq\" is not supported");
  refused({{"weight_block_size", {128, 128}}},
          "missing required key \"quantization_config.quant_method\"");
  refused({{"quant_method", "fp8"}}, "per-tensor FP8 (weight_scale) is not supported");
  refused({{"quant_method", "fp8"}, {"fmt", "e5m2"}, {"weight_block_size", {128, 128}}},
          "quantization_config.fmt \"e5m2\" is not supported");
  refused(
      {{"quant_method", "fp8"}, {"activation_scheme", "static"}, {"weight_block_size", {128, 128}}},
      "activation_scheme \"static\" is not supported");
  refused({{"quant_method", "fp8"}, {"weight_block_size", {128}}},
          "\"quantization_config.weight_block_size\" must hold 2 integers");
  refused({{"quant_method", "fp8"}, {"weight_block_size", {0, 128}}},
          "key \"quantization_config.weight_block_size[0]\" = 0 must be positive");
  refused({{"quant_method", "engram_int8"}, {"weight_block_size", {128, 128}}},
          "weight_block_size [128, 128] is not supported with quant_method \"engram_int8\"");
  refused({{"quant_method", "fp8"},
           {"weight_block_size", {128, 128}},
           {"modules_to_not_convert", "lm_head"}},
          "key \"quantization_config.modules_to_not_convert\" must be an array of strings");
  refused("fp8", "key \"quantization_config\" must be an object");
}

}  // namespace
}  // namespace engram
