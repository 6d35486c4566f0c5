#include "text/compression_builder.h"

#include <gtest/gtest.h>

#include "../../support/tokenizer_fixture.h"

namespace engram {
namespace {

using testing::DeepSeekTokenizerPath;
using testing::DeepSeekTokenizerPresent;
using testing::ReadJson;

TEST(CompressionBuilder, EqualsTheReferenceForDeepSeekV3) {
  if (!DeepSeekTokenizerPresent()) return;
  auto tok = Tokenizer::Load(DeepSeekTokenizerPath());
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  auto map = BuildCompressionMap(*tok);
  ASSERT_TRUE(map.ok()) << map.status().ToString();

  const nlohmann::json ref = ReadJson("deepseek_v3_compression.json");
  ASSERT_TRUE(ref.contains("lookup"));
  const auto expected = ref["lookup"].get<std::vector<int64_t>>();
  ASSERT_EQ(expected.size(), 128815u);
  ASSERT_EQ(map->vocab_size(), 128815);
  EXPECT_EQ(map->num_compressed(), 98627);
  EXPECT_EQ(map->num_compressed(), ref["num_compressed"].get<int64_t>());
  int mismatches = 0;
  for (size_t id = 0; id < expected.size(); ++id) {
    if (map->lookup()[id] != expected[id] && ++mismatches <= 20) {
      ADD_FAILURE() << "id " << id << " (" << tok->IdToToken(static_cast<int32_t>(id)).value_or("")
                    << "): got " << map->lookup()[id] << ", reference " << expected[id];
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(CompressionBuilder, KeyFollowsTheReferenceNormalizer) {
  auto key = [](std::string_view s) {
    auto k = CompressionKey(s);
    EXPECT_TRUE(k.ok()) << k.status().ToString();
    return k.ok() ? *k : std::string();
  };
  EXPECT_EQ(key(" Apple"), "apple");
  EXPECT_EQ(key("APPLE"), "apple");
  EXPECT_EQ(key("Café"), "cafe");  // NFD, accents dropped
  EXPECT_EQ(key("ﬁ"), "fi");       // NFKC
  EXPECT_EQ(key("\t\n  "), " ");   // a lone space survives Strip
  EXPECT_EQ(key(" "), " ");
  EXPECT_EQ(key("a \t\r\nb"), "a b");
  EXPECT_EQ(key("ΣΑΣ"), "σασ");                    // per-character lowercase: no final sigma
  EXPECT_EQ(key("İ"), "i");                        // NFD splits off the dot, StripAccents drops it
  EXPECT_EQ(key("\xCC\x81"), "\xCC\x81");          // a lone mark: empty after stripping -> the text
  EXPECT_EQ(key("\xE2\x80\xA8"), "\xE2\x80\xA8");  // U+2028 is stripped -> the text
  EXPECT_EQ(key("\xC2\xA0x\xC2\xA0"), "x");        // NBSP -> space (NFKC) -> stripped
}

}  // namespace
}  // namespace engram
