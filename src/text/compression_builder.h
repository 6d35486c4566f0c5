// Builds the Engram compression map (DESIGN.md "Compression map") from a tokenizer, as the
// Engram reference's CompressedTokenizer does: each id is decoded alone; when the text
// holds U+FFFD (the token is part of a character, or is U+FFFD itself) the raw token string
// is the key, else the text normalized by HF normalizers NFKC, NFD, StripAccents,
// Lowercase, Replace([ \t\r\n]+ -> " "), a lone " " kept, Strip (and the text itself when
// that leaves nothing). Equal keys share one compressed id, numbered in order of first
// appearance. For DeepSeek-V3: 128815 ids -> 98627.
#pragma once

#include <string>

#include "common/status.h"
#include "text/compression_map.h"
#include "text/tokenizer.h"

namespace engram {

Result<CompressionMap> BuildCompressionMap(const Tokenizer& tokenizer);

// The key of one decoded token text (valid UTF-8 without U+FFFD), exposed for tests.
Result<std::string> CompressionKey(std::string_view text);

}  // namespace engram
