// PreTokenizer: the "pre_tokenizer" of a Hugging Face tokenizer.json. Cuts normalized text
// into pieces that the BPE model encodes independently. Supported: Sequence, Split (Regex or
// String pattern; behavior Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous;
// invert), Metaspace (replacement, prepend_scheme always/first/never or the legacy
// add_prefix_space, split) and ByteLevel (add_prefix_space, use_regex with GPT-2's pattern)
// as the last step; null keeps the text whole. Immutable, thread-safe.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace engram {

class PreTokenizer {
 public:
  // UNIMPLEMENTED names an unsupported type; INVALID_ARGUMENT a malformed entry or regex.
  static Result<PreTokenizer> FromJson(const nlohmann::json& j);

  // Appends the non-empty pieces of `text` to `pieces`, in order. A piece views `text` or a
  // string that this call adds to `arena` (the caller keeps both alive while using pieces).
  // Pieces hold raw bytes: the byte-level character mapping is left to the model.
  // `at_start`: `text` begins the input (offset 0), where Metaspace's prepend_scheme
  // "first" adds its replacement; false for text after an added token.
  Status Split(std::string_view text, std::vector<std::string_view>* pieces,
               std::deque<std::string>* arena, bool at_start = true) const;

  // Whether a ByteLevel step maps each byte to a character before the model sees it.
  bool byte_level() const { return byte_level_; }

 private:
  struct Step;
  static Status AddSteps(const nlohmann::json& j, std::vector<std::shared_ptr<const Step>>* out);
  static Status ParseMetaspace(const nlohmann::json& j, Step* step);
  std::vector<std::shared_ptr<const Step>> steps_;
  bool byte_level_ = false;
};

}  // namespace engram
