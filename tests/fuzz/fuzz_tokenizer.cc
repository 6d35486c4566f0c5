// Fuzzes tokenizer.json loading (Tokenizer::FromJson: JSON limits, BPE model, normalizer,
// pre-tokenizer, decoder, added tokens, post-processor). A tokenizer that loads then encodes a
// fixed text and a slice of the input itself (with and without special tokens), decodes the
// ids again, and decodes ids at and past the edges of its vocabulary. Every id Encode returns
// must be inside [0, vocab_size()).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.h"
#include "text/tokenizer.h"

namespace {

// ASCII, punctuation, digits, whitespace runs, multi-byte letters, CJK, an emoji and the
// special-token spellings of common tokenizers.
constexpr std::string_view kFixedText =
    "Hello, world!  It's 2024: 3.14159 -- x=y+1;\n\tnew\r\nline <s></s><|endoftext|> "
    "\xc3\xa9t\xc3\xa9 \xc3\x9c\x62\x65r \xe6\xbc\xa2\xe5\xad\x97 \xf0\x9f\x98\x80 "
    "<\xef\xbd\x9c"
    "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>   end";
constexpr size_t kMaxSliceBytes = 256;

void CheckIds(const engram::Tokenizer& tok, const std::vector<int32_t>& ids) {
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) {
      engram::fuzz::Fail("Encode returned id " + std::to_string(id) + " outside [0, " +
                         std::to_string(tok.vocab_size()) + ")");
    }
  }
}

void EncodeAndDecode(const engram::Tokenizer& tok, std::string_view text) {
  for (bool special : {false, true}) {
    auto ids = tok.Encode(text, special);
    if (!ids.ok()) continue;
    CheckIds(tok, *ids);
    (void)tok.Decode(*ids, /*skip_special_tokens=*/false);
    (void)tok.Decode(*ids, /*skip_special_tokens=*/true);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  engram::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto tok = engram::Tokenizer::FromJson(text);
  engram::fuzz::Note("FromJson", tok.status());
  if (!tok.ok()) return 0;
  EncodeAndDecode(*tok, kFixedText);
  // The slice from the middle of the input: its strings, regexes or token contents.
  const size_t begin = size > kMaxSliceBytes ? (size - kMaxSliceBytes) / 2 : 0;
  EncodeAndDecode(*tok, text.substr(begin, kMaxSliceBytes));

  const int64_t vocab = tok->vocab_size();
  const int32_t last = static_cast<int32_t>(std::min<int64_t>(vocab, 1 << 30));
  const std::vector<int32_t> edges = {0,
                                      1,
                                      last - 1,
                                      last,
                                      last + 1,
                                      -1,
                                      std::numeric_limits<int32_t>::max(),
                                      std::numeric_limits<int32_t>::min()};
  (void)tok->Decode(edges, false);
  (void)tok->Decode(edges, true);
  for (int32_t id : edges) {
    if (auto s = tok->IdToToken(id)) (void)tok->TokenToId(*s);
    (void)tok->IsSpecial(id);
  }
  (void)tok->bos_id();
  (void)tok->eos_id();
  return 0;
}
