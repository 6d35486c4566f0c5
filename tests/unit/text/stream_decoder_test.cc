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

// The small tokenizers of tokenizer_variants_reference.json (byte-level and SentencePiece
// style): streaming the ids of every case, token by token, gives HF's decoded text.
TEST(StreamDecoder, VariantsStreamTheirFullDecode) {
  const nlohmann::json ref = ReadJson("tokenizer_variants_reference.json");
  ASSERT_TRUE(ref.contains("variants"));
  int chains = 0;
  for (const auto& v : ref["variants"]) {
    SCOPED_TRACE("variant " + v["name"].get<std::string>());
    auto tok = Tokenizer::FromJson(v["tokenizer"].dump());
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    if (tok->decoder().kind() == TokenDecoder::Kind::kChain) ++chains;
    const nlohmann::json decode_cases = v.value("decode_cases", nlohmann::json::array());
    std::vector<std::pair<std::vector<int32_t>, const nlohmann::json*>> seqs;
    for (const auto& c : v["cases"]) seqs.emplace_back(c["ids"].get<std::vector<int32_t>>(), &c);
    for (const auto& c : decode_cases) seqs.emplace_back(c["ids"].get<std::vector<int32_t>>(), &c);
    for (const auto& [ids, c] : seqs) {
      SCOPED_TRACE("ids: " + (*c)["ids"].dump());
      for (const bool skip : {false, true}) {
        StreamDecoder dec(*tok, skip);
        std::string streamed;
        for (int32_t id : ids) {
          const std::string delta = dec.Push(id);
          EXPECT_TRUE(utf8::IsValid(delta));
          streamed += delta;
        }
        streamed += dec.Finish();
        EXPECT_EQ(streamed, (*c)[skip ? "decoded_skip_special" : "decoded"].get<std::string>());
      }
    }
  }
  EXPECT_GE(chains, 10);
}

// A tokenizer.json with SentencePiece-style pieces and the given decoder.
Tokenizer SentencePieceLike(const std::string& decoder) {
  std::string vocab = R"("<unk>": 0, "<s>": 1, "\u2581": 2, "a": 3, "\u2581a": 4, "_": 5)";
  for (int b = 0; b < 256; ++b) vocab += fmt::format(R"(, "<0x{:02X}>": {})", b, 10 + b);
  auto t = Tokenizer::FromJson(
      R"({"added_tokens": [{"id": 1, "content": "<s>", "special": true}], "decoder": )" + decoder +
      R"(, "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "vocab": {)" +
      vocab + R"(}, "merges": ["\u2581 a"]}})");
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return std::move(*t);
}
constexpr int32_t kBos = 1, kSpace = 2, kA = 3, kSpaceA = 4, kUnderscore = 5;
int32_t ByteId(uint8_t b) { return 10 + b; }

std::string StreamAll(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip = false) {
  StreamDecoder dec(tok, skip);
  std::string out;
  for (int32_t id : ids) out += dec.Push(id);
  return out + dec.Finish();
}

constexpr const char* kLlamaDecoder = R"({"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})";

TEST(StreamDecoder, LeadingSpaceIsStrippedOnlyAtTheStart) {
  const Tokenizer tok = SentencePieceLike(kLlamaDecoder);
  StreamDecoder dec(tok, /*skip_special_tokens=*/true);
  EXPECT_EQ(dec.Push(kBos), "");  // skipped: the sequence has not started
  EXPECT_EQ(dec.Push(kSpaceA), "a");
  EXPECT_EQ(dec.Push(kSpaceA), " a");
  EXPECT_EQ(dec.Push(kSpace), " ");
  EXPECT_EQ(dec.Finish(), "");
  // Reused: a new sequence strips again; a leading lone "▁" is what goes.
  EXPECT_EQ(dec.Push(kSpace), "");
  EXPECT_EQ(dec.Push(kSpaceA), " a");
  EXPECT_EQ(dec.Finish(), "");
  EXPECT_EQ(tok.Decode(std::vector<int32_t>{kSpace, kSpaceA}, false), " a");
  // Not skipped, "<s>" is the start and nothing is stripped after it.
  StreamDecoder keep(tok, false);
  EXPECT_EQ(keep.Push(kBos), "<s>");
  EXPECT_EQ(keep.Push(kSpaceA), " a");
}

TEST(StreamDecoder, ByteFallbackRunsWaitUntilSettled) {
  const Tokenizer tok = SentencePieceLike(kLlamaDecoder);
  StreamDecoder dec(tok, false);
  // U+4F60 as three byte tokens: nothing until a non-byte token ends the run (one more
  // byte could still make the run invalid, and HF then gives one U+FFFD per byte).
  EXPECT_EQ(dec.Push(ByteId(0xE4)), "");
  EXPECT_EQ(dec.Push(ByteId(0xBD)), "");
  EXPECT_EQ(dec.Push(ByteId(0xA0)), "");
  EXPECT_EQ(dec.pending_bytes(), 3u);
  EXPECT_EQ(dec.Push(kA),
            "\xE4\xBD\xA0"
            "a");
  EXPECT_EQ(dec.pending_bytes(), 0u);
  // An invalid run: U+FFFD per byte token, as HF.
  EXPECT_EQ(dec.Push(ByteId(0xE4)), "");
  EXPECT_EQ(dec.Push(ByteId(0xBD)), "");
  EXPECT_EQ(dec.Push(kSpaceA), "\xEF\xBF\xBD\xEF\xBF\xBD a");
  // A run at the end settles at Finish.
  EXPECT_EQ(dec.Push(ByteId(0xF0)), "");
  EXPECT_EQ(dec.Push(ByteId(0x9F)), "");
  EXPECT_EQ(dec.Push(ByteId(0x98)), "");
  EXPECT_EQ(dec.Push(ByteId(0x80)), "");
  EXPECT_EQ(dec.Finish(), "\xF0\x9F\x98\x80");
  EXPECT_EQ(tok.Decode(std::vector<int32_t>{ByteId(0xE4), ByteId(0xBD), ByteId(0xA0), ByteId(0x80)},
                       false),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  // A leading space byte is stripped at the start, as the "▁" would be.
  EXPECT_EQ(StreamAll(tok, {ByteId(0x20), kA}), "a");
}

// Steps after Fuse see the whole text: the stream holds what they may still change.
TEST(StreamDecoder, StepsAfterFuseApplyToTheWholeText) {
  const Tokenizer tok = SentencePieceLike(R"({"type": "Sequence", "decoders": [
      {"type": "ByteFallback"}, {"type": "Fuse"},
      {"type": "Replace", "pattern": {"String": "a\u2581"}, "content": "<A>"},
      {"type": "Strip", "content": "_", "start": 2, "stop": 2}]})");
  const std::vector<std::vector<int32_t>> seqs = {
      {kUnderscore, kUnderscore, kUnderscore, kA, kUnderscore, kUnderscore, kUnderscore},
      {kUnderscore, kA, kSpace, kA, kSpaceA, kSpace, kUnderscore},
      {kA, kUnderscore, kUnderscore, kA, kUnderscore},
      {kUnderscore, kBos, kUnderscore, kA, kSpace},
      {kA, ByteId('_'), ByteId('_'), kSpace, kA},
  };
  for (const auto& ids : seqs) {
    for (const bool skip : {false, true}) {
      EXPECT_EQ(StreamAll(tok, ids, skip), tok.Decode(ids, skip));
    }
  }
  EXPECT_EQ(tok.Decode(seqs[0], false), "_a_");
  EXPECT_EQ(tok.Decode(seqs[1], false), "<A><A><A>");
  StreamDecoder dec(tok, false);
  EXPECT_EQ(dec.Push(kA), "");            // may begin "a▁"
  EXPECT_EQ(dec.Push(kUnderscore), "a");  // the end may strip the "_"
  EXPECT_EQ(dec.Push(kA), "");
  EXPECT_EQ(dec.Push(kA), "_a");
  EXPECT_EQ(dec.Push(kSpace), "<A>");
  EXPECT_EQ(dec.Push(kUnderscore), "");
  EXPECT_EQ(dec.Finish(), "");  // stripped
}

TEST(StreamDecoder, MetaspaceDecoderDropsTheFirstReplacementOnly) {
  const Tokenizer tok = SentencePieceLike(
      R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"})");
  EXPECT_EQ(tok.Decode(std::vector<int32_t>{kSpaceA, kSpaceA}, false), "a a");
  EXPECT_EQ(StreamAll(tok, {kSpaceA, kSpaceA}), "a a");
  EXPECT_EQ(StreamAll(tok, {kBos, kSpaceA}, /*skip=*/true), "a");
  EXPECT_EQ(StreamAll(tok, {kBos, kSpaceA}, /*skip=*/false), "<s> a");
  const Tokenizer never = SentencePieceLike(
      R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never"})");
  EXPECT_EQ(StreamAll(never, {kSpaceA, kSpaceA}), " a a");
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
