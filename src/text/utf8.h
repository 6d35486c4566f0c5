// UTF-8 helpers shared by the tokenizer and the compression builder: strict validation (as
// Rust's str: no overlongs, no surrogates, nothing above U+10FFFF), code point iteration and
// encoding, and the split of a byte stream into complete text and a pending tail. Pure
// functions, thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace engram::utf8 {

inline constexpr size_t kValid = static_cast<size_t>(-1);

// Byte offset of the first byte that does not start a valid sequence, or kValid.
size_t FirstInvalid(std::string_view s);
inline bool IsValid(std::string_view s) { return FirstInvalid(s) == kValid; }

// Decodes the code point at s[*pos] and advances *pos. s must be valid UTF-8 at *pos.
char32_t Next(std::string_view s, size_t* pos);
// Decodes the code point that ends at s[*pos] (exclusive) and moves *pos back to its start.
char32_t Prev(std::string_view s, size_t* pos);
// Appends the UTF-8 form of cp (a valid scalar value) to out.
void Append(char32_t cp, std::string* out);

// Length of the longest prefix of `bytes` that could still become valid UTF-8: the bytes
// after it are a strict prefix of a valid sequence that more bytes may complete (0..3
// bytes). Invalid bytes before that tail count as part of the prefix.
size_t CompletePrefix(std::string_view bytes);
// `bytes` with each maximal invalid subsequence replaced by U+FFFD (as Rust's
// String::from_utf8_lossy and Python's errors="replace").
std::string Lossy(std::string_view bytes);

}  // namespace engram::utf8
