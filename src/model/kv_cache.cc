#include "model/kv_cache.h"

namespace engram {

Result<KvCache> KvCache::Create(Backend& backend, int layers, int num_blocks, int block_size,
                                int num_kv_heads, int head_dim) {
  if (num_blocks <= 0 || block_size <= 0) {
    return InvalidArgument("KV cache needs num_blocks > 0 and block_size > 0 (got {} and {})",
                           num_blocks, block_size);
  }
  KvCache c;
  c.block_size_ = block_size;
  for (int l = 0; l < layers; ++l) {
    ENGRAM_ASSIGN_OR_RETURN(
        Tensor k,
        backend.AllocZeros(backend.kv_dtype(), {num_blocks, block_size, num_kv_heads, head_dim}));
    ENGRAM_ASSIGN_OR_RETURN(
        Tensor v,
        backend.AllocZeros(backend.kv_dtype(), {num_blocks, block_size, num_kv_heads, head_dim}));
    c.k_.push_back(std::move(k));
    c.v_.push_back(std::move(v));
  }
  c.free_.reserve(num_blocks);
  for (int b = num_blocks - 1; b >= 0; --b) c.free_.push_back(b);
  return c;
}

Status KvCache::EnsureCapacity(std::vector<int32_t>& blocks, int64_t positions) {
  const int64_t need = (positions + block_size_ - 1) / block_size_;
  const int64_t more = need - static_cast<int64_t>(blocks.size());
  if (more <= 0) return Status::Ok();
  if (more > static_cast<int64_t>(free_.size())) {
    return ResourceExhausted("KV cache full: {} more blocks of {} positions needed, {} free of {}",
                             more, block_size_, free_.size(), num_blocks());
  }
  for (int64_t i = 0; i < more; ++i) {
    blocks.push_back(free_.back());
    free_.pop_back();
  }
  return Status::Ok();
}

void KvCache::Release(std::vector<int32_t>& blocks) {
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) free_.push_back(*it);
  blocks.clear();
}

}  // namespace engram
