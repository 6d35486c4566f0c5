// CompressionMap: raw token id -> compressed id (DESIGN.md "Compression map"). Loaded from
// engram_compression.json ({"lookup": [...], "num_compressed": N}) or the identity.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace engram {

class CompressionMap {
 public:
  static CompressionMap Identity(int64_t vocab_size);
  // Validates: lookup is an array of vocab entries, every value in [0, num_compressed), and
  // (when expected_vocab > 0) lookup.size() == expected_vocab. Errors name the file.
  static Result<CompressionMap> LoadJson(const std::string& path, int64_t expected_vocab);
  static Result<CompressionMap> FromLookup(std::vector<int64_t> lookup, int64_t num_compressed);

  int64_t vocab_size() const { return static_cast<int64_t>(lookup_.size()); }
  int64_t num_compressed() const { return num_compressed_; }
  int64_t operator()(int64_t id) const { return lookup_[static_cast<size_t>(id)]; }
  const std::vector<int64_t>& lookup() const { return lookup_; }

 private:
  std::vector<int64_t> lookup_;
  int64_t num_compressed_ = 0;
};

}  // namespace engram
