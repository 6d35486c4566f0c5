// NgramHasher: the Engram row indices of tokens, bit-exact with the published reference
// (DESIGN.md "Engram semantics"). Pure and immutable after Create: safe to call from any
// thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "model/config.h"
#include "text/compression_map.h"

namespace engram {

struct EngramLayerHash {
  int layer_id = 0;
  std::vector<int64_t> multipliers;          // max_ngram_size values, odd
  std::vector<std::vector<int64_t>> primes;  // [n - 2][head j]
  std::vector<int64_t> head_offsets;         // per head h = (n-2)*heads + j: first table row
  int64_t total_rows = 0;                    // sum of primes: rows of the layer's table
};

class NgramHasher {
 public:
  // Derives multipliers (numpy default_rng(seed + 10007 * layer_id)) and primes for every
  // layer. INVALID_ARGUMENT, naming the engram.* key, for an invalid config (empty, negative
  // or duplicate layer ids, max_ngram_size outside 2..kMaxNgramSize, engram_vocab_size count
  // != max_ngram_size - 1 or a size outside 2..2^62, n_head_per_ngram outside 1..4096,
  // seed < 0); the map must be non-empty and cover pad_id.
  static Result<NgramHasher> Create(const EngramConfig& config, CompressionMap map);

  int num_layers() const { return static_cast<int>(layers_.size()); }
  int num_heads() const { return num_heads_; }  // H = (N - 1) * n_head_per_ngram
  const EngramLayerHash& layer(int index) const { return layers_[index]; }
  const CompressionMap& compression() const { return map_; }
  int64_t compressed_pad_id() const { return pad_compressed_; }
  int context_size() const { return max_ngram_ - 1; }  // N - 1

  // Hashes `tokens` (raw ids) of one sequence for layer `index`. `context` holds the raw ids
  // immediately before tokens[0] (at most N - 1 used; fewer, or empty, at the sequence start:
  // missing positions read the compressed pad id). out has tokens.size() * H entries,
  // out[t * H + h] = index in [0, prime_h) plus head_offsets[h] when add_offsets.
  // Raw ids must lie in [0, vocab_size) of the map (callers validate, e.g. ValidateIds).
  // No allocation; cost per token: N - 1 multiplies/xors and H reductions mod a prime.
  void Hash(int index, std::span<const int64_t> context, std::span<const int64_t> tokens,
            bool add_offsets, int64_t* out) const;

  // OK when every id lies in [0, compression().vocab_size()); else OUT_OF_RANGE naming the
  // first bad position and value.
  Status ValidateIds(std::span<const int64_t> ids) const;

  // Largest max_ngram_size Create accepts (Hash keeps its token window on the stack).
  static constexpr int kMaxNgramSize = 32;

 private:
  // x mod prime by multiplication (Lemire's fastmod, exact for every 64-bit x).
  struct HeadReducer {
    uint64_t prime = 0;
    uint64_t magic_lo = 0, magic_hi = 0;  // ceil(2^128 / prime)
    int64_t offset = 0;                   // head_offsets[h]
  };
  std::vector<std::vector<HeadReducer>> reducers_;  // [layer index][head h]

  CompressionMap map_;
  std::vector<EngramLayerHash> layers_;
  int num_heads_ = 0;
  int max_ngram_ = 0;
  int64_t pad_compressed_ = 0;
};

}  // namespace engram
