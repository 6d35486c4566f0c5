// BpeModel: the "model" of type BPE of a Hugging Face tokenizer.json: vocab, ranked merges
// ("a b" strings or ["a", "b"] pairs), unk_token / fuse_unk, byte_fallback,
// continuing_subword_prefix, end_of_word_suffix, ignore_merges. Encodes one pre-tokenized
// piece at a time by HF's algorithm (lowest-rank pair first, leftmost on ties, with a
// priority queue), with a bounded cache of recent pieces. Immutable after load except the
// cache, which is internally locked: Encode is thread-safe.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace engram {

class BpeModel {
 public:
  // INVALID_ARGUMENT names the field (e.g. a merge whose parts are not in the vocab);
  // UNIMPLEMENTED for dropout > 0.
  static Result<BpeModel> FromJson(const nlohmann::json& model);
  ~BpeModel();
  BpeModel(BpeModel&&) noexcept;
  BpeModel& operator=(BpeModel&&) noexcept;

  // Appends the ids of one piece. `byte_level`: the piece is raw bytes, each standing for
  // its byte-level character (ByteLevelMap); otherwise the piece is text.
  void Encode(std::string_view piece, bool byte_level, std::vector<int32_t>* ids) const;

  // Vocab lookups; -1 / empty when absent.
  int32_t TokenToId(std::string_view token) const;
  std::string_view IdToToken(int32_t id) const;
  // One past the largest id in the vocab.
  int32_t id_limit() const;

 private:
  struct Impl;
  explicit BpeModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace engram
