#include "text/stream_decoder.h"

#include <gtest/gtest.h>

#include "../../support/tokenizer_fixture.h"
#include "text/byte_level.h"
#include "text/utf8.h"

namespace engram {
namespace {

using testing::DeepSeekTokenizerPath;
using testing::DeepSeekTokenizerPresent;
using testing::ReadJson;

TEST(StreamDecoder, YieldsOnlyCompleteCharactersOverTheCorpus) {
  if (!DeepSeekTokenizerPresent()) return;
  auto tok = Tokenizer::Load(DeepSeekTokenizerPath());
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  const nlohmann::json ref = ReadJson("tokenizer_reference.json");
  ASSERT_TRUE(ref.contains("cases"));
  int held = 0;
  for (const auto& c : ref["cases"]) {
    const std::string text = c["text"].get<std::string>();
    SCOPED_TRACE("text: " + text);
    StreamDecoder dec(*tok, /*skip_special_tokens=*/false);
    std::string streamed;
    for (int32_t id : c["ids_plain"].get<std::vector<int32_t>>()) {
      const std::string delta = dec.Push(id);
      EXPECT_TRUE(utf8::IsValid(delta));
      if (dec.pending_bytes() > 0) ++held;
      streamed += delta;
    }
    EXPECT_EQ(dec.pending_bytes(), 0u);
    EXPECT_EQ(dec.Finish(), "");
    EXPECT_EQ(streamed, text);
  }
  EXPECT_GE(held, 10);  // the corpus does split characters across tokens
}

TEST(StreamDecoder, HoldsAnEmojiUntilItsLastByte) {
  if (!DeepSeekTokenizerPresent()) return;
  auto tok = Tokenizer::Load(DeepSeekTokenizerPath());
  ASSERT_TRUE(tok.ok());
  // One token per byte of U+1F600 (F0 9F 98 80).
  const ByteLevelMap& bl = ByteLevelMap::Get();
  std::vector<int32_t> ids;
  for (uint8_t b : {0xF0, 0x9F, 0x98, 0x80}) {
    auto id = tok->TokenToId(bl.Char(b));
    ASSERT_TRUE(id.has_value());
    ids.push_back(*id);
  }
  StreamDecoder dec(*tok, false);
  EXPECT_EQ(dec.Push(ids[0]), "");
  EXPECT_EQ(dec.Push(ids[1]), "");
  EXPECT_EQ(dec.Push(ids[2]), "");
  EXPECT_EQ(dec.pending_bytes(), 3u);
  EXPECT_EQ(dec.Push(ids[3]), "\xF0\x9F\x98\x80");
  // A character that never completes comes out as U+FFFD, at the next character or at the end.
  EXPECT_EQ(dec.Push(ids[0]), "");
  const int32_t a = *tok->TokenToId("a");
  EXPECT_EQ(dec.Push(a),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(dec.Push(ids[0]), "");
  EXPECT_EQ(dec.Push(ids[1]), "");
  EXPECT_EQ(dec.Finish(), "\xEF\xBF\xBD");
  // A lone continuation byte can never become valid: replaced at once.
  EXPECT_EQ(dec.Push(ids[3]), "\xEF\xBF\xBD");
}

TEST(StreamDecoder, SkipsSpecialTokensWhenAsked) {
  if (!DeepSeekTokenizerPresent()) return;
  auto tok = Tokenizer::Load(DeepSeekTokenizerPath());
  ASSERT_TRUE(tok.ok());
  StreamDecoder skip(*tok, true), keep(*tok, false);
  EXPECT_EQ(skip.Push(tok->eos_id()), "");
  EXPECT_EQ(keep.Push(tok->eos_id()), "<｜end▁of▁sentence｜>");
}

TEST(Utf8, CompletePrefixAndLossy) {
  EXPECT_EQ(utf8::CompletePrefix("abc"), 3u);
  EXPECT_EQ(utf8::CompletePrefix("ab\xE4\xBD"), 2u);
  EXPECT_EQ(utf8::CompletePrefix("ab\xE4\xBD\xA0"), 5u);
  EXPECT_EQ(utf8::CompletePrefix("\xF0\x9F\x98"), 0u);
  EXPECT_EQ(utf8::CompletePrefix("\xF0\x41"), 2u);
  EXPECT_EQ(utf8::CompletePrefix("\x80\x80\x80\x80"), 4u);
  EXPECT_EQ(utf8::Lossy("a\xF0\x9F"
                        "b"),
            "a\xEF\xBF\xBD"
            "b");  // one U+FFFD per maximal part
  EXPECT_EQ(utf8::Lossy("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(utf8::Lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(utf8::FirstInvalid("0123456789abcdef\xFF"), 16u);
  EXPECT_EQ(utf8::FirstInvalid("0123456789abcdef"), utf8::kValid);
}

}  // namespace
}  // namespace engram
