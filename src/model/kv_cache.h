// KvCache: the paged key/value cache of all layers on the backend, with a host-side block
// allocator. A sequence owns a list of blocks (block_size positions each); its position p
// lives in block blocks[p / block_size] at offset p % block_size.
//
// Thread safety: owned and used by the engine thread only.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"

namespace engram {

class KvCache {
 public:
  // Allocates num_blocks blocks of block_size positions for `layers` layers of
  // [num_kv_heads, head_dim] keys and values, in backend.kv_dtype().
  static Result<KvCache> Create(Backend& backend, int layers, int num_blocks, int block_size,
                                int num_kv_heads, int head_dim);

  int block_size() const { return block_size_; }
  int num_blocks() const { return static_cast<int>(k_.size() ? k_[0].dim(0) : 0); }
  int free_blocks() const { return static_cast<int>(free_.size()); }
  Tensor& k(int layer) { return k_[layer]; }
  Tensor& v(int layer) { return v_[layer]; }

  // Grows `blocks` so it covers `positions` positions. RESOURCE_EXHAUSTED (nothing taken)
  // when too few blocks are free.
  Status EnsureCapacity(std::vector<int32_t>& blocks, int64_t positions);
  // Returns the blocks to the free list and clears `blocks`.
  void Release(std::vector<int32_t>& blocks);

 private:
  int block_size_ = 16;
  std::vector<Tensor> k_, v_;
  std::vector<int32_t> free_;  // LIFO: recently freed blocks are reused first
};

}  // namespace engram
