// PcreRegex: a compiled regular expression for the patterns of Hugging Face tokenizer.json
// files. HF compiles them with Oniguruma (Ruby syntax); this compiles them with PCRE2 (UTF,
// UCP, JIT when available) after translating the escapes whose meaning differs: \s (Unicode
// White_Space as Oniguruma defines it), \d, \w, \h (hex digit), \uHHHH, and the inline flag
// m (dot matches newline). ^ and $ match at line breaks, as in Ruby.
// Immutable after Compile; matching is thread-safe (per-thread match state).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace engram {

class PcreRegex {
 public:
  // INVALID_ARGUMENT naming the pattern and PCRE2's message when it does not compile.
  static Result<PcreRegex> Compile(std::string_view onig_pattern);
  // A regex that matches `literal` exactly (HF's {"String": ...} patterns).
  static Result<PcreRegex> Literal(std::string_view literal);

  // Appends the [begin, end) byte offsets of the non-overlapping matches in `subject` (valid
  // UTF-8), leftmost first; empty matches are not reported. INTERNAL if PCRE2 fails (e.g.
  // its heap limit), naming the offset.
  Status FindAll(std::string_view subject, std::vector<std::pair<size_t, size_t>>* out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Code;
  std::shared_ptr<const Code> code_;
  std::string pattern_;
};

// The Oniguruma -> PCRE2 pattern translation (exposed for tests).
Result<std::string> TranslateOnigPattern(std::string_view onig_pattern);

}  // namespace engram
