// Unicode operations with the semantics of Hugging Face tokenizers' Rust normalizers, built
// on ICU. HF's NFC/NFD/NFKC/NFKD and StripAccents use the unicode-normalization-alignments
// crate, whose tables are Unicode 9.0: characters assigned later are left alone (ICU's
// normalizers are filtered to Age <= 9.0 to match). Lowercase is Rust's char::to_lowercase,
// code point by code point (full mappings, no context: final sigma is not special); Strip
// and the whitespace tests use the White_Space property (Rust's char::is_whitespace).
// All inputs are valid UTF-8. Thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace engram::unicode {

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };

Result<std::string> Normalize(std::string_view text, NormalForm form);
// Drops every combining mark (General_Category M: Mn, Mc, Me) known to Unicode 9.0.
std::string StripMarks(std::string_view text);
// Full lowercase mapping of each code point on its own.
std::string Lowercase(std::string_view text);
// Removes leading and/or trailing White_Space characters.
std::string_view StripWhitespace(std::string_view text, bool left, bool right);

bool IsWhiteSpace(char32_t cp);
// Unicode \w: Alphabetic, M, Nd, Pc, Join_Control (HF's single_word boundaries).
bool IsWordChar(char32_t cp);

}  // namespace engram::unicode
