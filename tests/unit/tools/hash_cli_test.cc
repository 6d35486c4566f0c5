// Runs the real `engram hash` binary (ENGRAM_CLI) on the reference fixture and on bad input.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../../support/cli_test.h"

#include "prefetch/ngram_hasher.h"
#include "text/compression_map.h"

namespace engram {
namespace {

namespace fs = std::filesystem;
using OrderedJson = nlohmann::ordered_json;

const std::string kData = ENGRAM_TEST_DATA;
const std::string kFixture = kData + "/demo_default_config.json";

using testing::CliResult;
using testing::ReadFile;

void WriteFile(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

class HashCli : public testing::CliTest {
 protected:
  HashCli() : CliTest("engram_hash_cli") {}
  // Runs `engram hash <args>` with stdout and stderr captured.
  CliResult Run(const std::string& args) { return CliTest::Run("hash " + args); }
};

TEST_F(HashCli, ReproducesTheFixtureByteForByte) {
  const fs::path out = dir_ / "out.json";
  CliResult r = Run("--vectors " + Quote(kFixture) + " --out " + Quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string expected = ReadFile(kFixture);
  ASSERT_FALSE(expected.empty());
  EXPECT_TRUE(ReadFile(out) == expected) << "output differs from " << kFixture;
}

TEST_F(HashCli, PrintsTheSameJsonToStdout) {
  CliResult r = Run("--vectors " + Quote(kFixture));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out == ReadFile(kFixture) + "\n");
}

// The fixture without any computed field, keys shuffled: the tool recomputes every value
// and restores the fixture's key order.
TEST_F(HashCli, FillsInAFileWithOnlyConfigAndInputs) {
  OrderedJson fixture = OrderedJson::parse(ReadFile(kFixture), nullptr, false);
  ASSERT_FALSE(fixture.is_discarded());
  OrderedJson in = OrderedJson::object();
  in["cases"] = OrderedJson::array();
  for (const auto& c : fixture["cases"]) {
    OrderedJson stripped = OrderedJson::object();
    stripped["input_ids"] = c["input_ids"];
    stripped["name"] = c["name"];
    in["cases"].push_back(stripped);
  }
  in["config"] = fixture["config"];
  in["compression_table"] = fixture["compression_table"];
  in["about"] = fixture["about"];
  fs::copy_file(kData + "/" + fixture["compression_table"].get<std::string>(),
                dir_ / fixture["compression_table"].get<std::string>());
  WriteFile(dir_ / "in.json", in.dump(2));

  CliResult r = Run("--vectors " + Quote(dir_ / "in.json") + " --out " + Quote(dir_ / "o.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(ReadFile(dir_ / "o.json") == ReadFile(kFixture));
}

TEST_F(HashCli, UsesTheIdentityMapOverConfigVocabSize) {
  const std::string text =
      R"({"about": "identity", "config": {"engram_vocab_size": [1000, 2000, 3000],
    "max_ngram_size": 4, "n_embed_per_ngram": 64, "n_head_per_ngram": 2, "layer_ids": [0, 3],
    "pad_id": 1, "seed": 42, "kernel_size": 4, "vocab_size": 500},
    "cases": [{"name": "c", "input_ids": [[5, 6, 7, 499, 0], [1, 1, 1, 1, 1]]}]})";
  WriteFile(dir_ / "id.json", text);
  CliResult r = Run("--vectors " + Quote(dir_ / "id.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  OrderedJson got = OrderedJson::parse(r.out, nullptr, false);
  ASSERT_FALSE(got.is_discarded()) << r.out;
  std::vector<std::string> keys;
  for (const auto& [k, v] : got.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"about", "config", "compressed_vocab_size",
                                            "pad_id_compressed", "layers", "cases"}));
  EXPECT_EQ(got["compressed_vocab_size"], 500);
  EXPECT_EQ(got["pad_id_compressed"], 1);

  // The same values as the library computes in process.
  EngramConfig c;
  c.engram_vocab_size = {1000, 2000, 3000};
  c.max_ngram_size = 4;
  c.n_embed_per_ngram = 64;
  c.n_head_per_ngram = 2;
  c.layer_ids = {0, 3};
  c.pad_id = 1;
  c.seed = 42;
  auto h = NgramHasher::Create(c, CompressionMap::Identity(500));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  const OrderedJson& the_case = got["cases"][0];
  EXPECT_EQ(the_case["compressed_ids"], the_case["input_ids"]);
  for (int i = 0; i < h->num_layers(); ++i) {
    const std::string id = std::to_string(h->layer(i).layer_id);
    EXPECT_EQ(got["layers"][id]["multipliers"].get<std::vector<int64_t>>(),
              h->layer(i).multipliers);
    EXPECT_EQ(got["layers"][id]["primes"].get<std::vector<std::vector<int64_t>>>(),
              h->layer(i).primes);
    for (size_t b = 0; b < 2; ++b) {
      const auto ids = the_case["input_ids"][b].get<std::vector<int64_t>>();
      std::vector<int64_t> flat(ids.size() * 6);
      h->Hash(i, {}, ids, false, flat.data());
      const auto hashes = the_case["hashes"][id][b].get<std::vector<std::vector<int64_t>>>();
      ASSERT_EQ(hashes.size(), ids.size());
      for (size_t t = 0; t < ids.size(); ++t) {
        EXPECT_EQ(hashes[t], std::vector<int64_t>(flat.begin() + t * 6, flat.begin() + t * 6 + 6));
      }
    }
  }
}

struct BadCase {
  std::string name;
  std::string file_text;  // empty: the file does not exist
  std::string extra_args;
  int exit_code;
  std::vector<std::string> stderr_mentions;
};

TEST_F(HashCli, RejectsBadInputWithAClearMessage) {
  const std::string good_config =
      R"("config": {"engram_vocab_size": [100], "max_ngram_size": 2, "n_head_per_ngram": 1,
         "layer_ids": [0], "pad_id": 0, "seed": 0, "vocab_size": 10})";
  const std::vector<BadCase> cases = {
      {"missing.json", "", "", 1, {"missing.json", "cannot open"}},
      {"notjson.json", "{\"config\": [1, 2", "", 1, {"notjson.json", "not valid JSON"}},
      {"array.json", "[1, 2]", "", 1, {"array.json", "expected an object"}},
      {"noconfig.json", R"({"cases": []})", "", 1, {"\"config\" is missing"}},
      {"noseed.json",
       R"({"config": {"engram_vocab_size": [100], "max_ngram_size": 2, "n_head_per_ngram": 1,
           "layer_ids": [0], "pad_id": 0, "vocab_size": 10}, "cases": []})",
       "",
       1,
       {"noseed.json", "config.seed is missing", "expected an integer"}},
      {"badtype.json",
       R"({"config": {"engram_vocab_size": [100], "max_ngram_size": "two", "n_head_per_ngram": 1,
           "layer_ids": [0], "pad_id": 0, "seed": 0, "vocab_size": 10}, "cases": []})",
       "",
       1,
       {"config.max_ngram_size", "expected an integer"}},
      {"novocab.json",
       R"({"config": {"engram_vocab_size": [100], "max_ngram_size": 2, "n_head_per_ngram": 1,
           "layer_ids": [0], "pad_id": 0, "seed": 0}, "cases": []})",
       "",
       1,
       {"compression_table", "vocab_size"}},
      {"notable.json",
       R"({"compression_table": "nowhere.json", "config": {"engram_vocab_size": [100],
           "max_ngram_size": 2, "n_head_per_ngram": 1, "layer_ids": [0], "pad_id": 0,
           "seed": 0}, "cases": []})",
       "",
       1,
       {"nowhere.json"}},
      {"badlayers.json",
       R"({"config": {"engram_vocab_size": [100], "max_ngram_size": 2, "n_head_per_ngram": 1,
           "layer_ids": [], "pad_id": 0, "seed": 0, "vocab_size": 10}, "cases": []})",
       "",
       1,
       {"layer_ids"}},
      {"nocases.json", "{" + good_config + "}", "", 1, {"\"cases\" is missing"}},
      {"outside.json",
       "{" + good_config + R"(, "cases": [{"name": "x", "input_ids": [[1, 2], [3, 10]]}]})",
       "",
       1,
       {"cases[0] (\"x\").input_ids[1][1] = 10", "[0, 10)"}},
      {"notrows.json",
       "{" + good_config + R"(, "cases": [{"name": "y", "input_ids": [1, 2]}]})",
       "",
       1,
       {"input_ids[0]", "expected an array"}},
      {"unknownopt.json",
       "{" + good_config + R"(, "cases": []})",
       "--bogus 1",
       2,
       {"--bogus", "usage"}},
  };
  for (const BadCase& c : cases) {
    const fs::path path = dir_ / c.name;
    if (!c.file_text.empty()) WriteFile(path, c.file_text);
    CliResult r = Run("--vectors " + Quote(path) + " " + c.extra_args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.name << ": " << r.err;
    for (const std::string& m : c.stderr_mentions) {
      EXPECT_NE(r.err.find(m), std::string::npos)
          << c.name << ": expected stderr to mention '" << m << "', got: " << r.err;
    }
    EXPECT_TRUE(r.out.empty()) << c.name;
  }
}

TEST_F(HashCli, UsageErrorsExitWithTwo) {
  CliResult none = Run("");
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.err.find("--vectors"), std::string::npos) << none.err;
  CliResult stray = Run("--vectors " + Quote(kFixture) + " stray");
  EXPECT_EQ(stray.exit_code, 2);
  CliResult help = Run("--help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--vectors"), std::string::npos);
}

}  // namespace
}  // namespace engram
