// EngramGeometry: the table shape of each Engram layer, derived from the config alone:
// per order n = 2..N and head j a distinct prime table size (DESIGN.md), heads concatenated
// into one table with row offsets (the reference's MultiHeadEmbedding).
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "model/config.h"

namespace engram {

struct EngramLayerGeometry {
  int layer_id = 0;
  std::vector<std::vector<int64_t>> primes;  // [n - 2][j]
  std::vector<int64_t> head_sizes;           // flattened, head h = (n-2)*n_head_per_ngram + j
  std::vector<int64_t> head_offsets;         // first row of head h in the layer's table
  int64_t total_rows = 0;                    // sum of head_sizes
};

// One entry per config.layer_ids, in that order. Primes are unique across all layers: for
// each layer, order and head, the search starts at engram_vocab_size[n-2] - 1 (each order's
// first head) or at the previous head's prime, and takes the next prime above it that was
// not used before.
Result<std::vector<EngramLayerGeometry>> ComputeEngramGeometry(const EngramConfig& config);

// Deterministic primality for 64-bit n (Miller-Rabin with a complete base set).
bool IsPrime(uint64_t n);

}  // namespace engram
