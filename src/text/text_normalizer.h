// TextNormalizer: the "normalizer" of a Hugging Face tokenizer.json, applied to the text
// between added tokens before pre-tokenization. Supported types: Sequence, NFC, NFD, NFKC,
// NFKD, Lowercase, StripAccents, Strip, Replace (String or Regex pattern), Prepend; null is
// the identity. Semantics follow HF's Rust normalizers (see unicode_ops.h). Immutable,
// thread-safe.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace engram {

class TextNormalizer {
 public:
  // UNIMPLEMENTED names an unsupported type; INVALID_ARGUMENT a malformed entry.
  static Result<TextNormalizer> FromJson(const nlohmann::json& j);

  bool identity() const { return steps_.empty(); }
  Result<std::string> Apply(std::string_view text) const;

 private:
  struct Step;
  static Status AddSteps(const nlohmann::json& j, std::vector<std::shared_ptr<const Step>>* out);
  std::vector<std::shared_ptr<const Step>> steps_;
};

}  // namespace engram
