// Paged causal attention of the CPU backend (GQA, online softmax over cache blocks).
#pragma once

#include <cstdint>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/thread_pool.h"

namespace engram {

struct PagedAttentionArgs {
  const float* qkv = nullptr;  // [tokens, (nq + 2 nkv) * hd]: q heads, k heads, v heads
  int64_t tokens = 0;
  int nq = 0, nkv = 0, hd = 0;
  float scale = 0.f;
  float* k_cache = nullptr;  // [num_blocks, block_size, nkv, hd]
  float* v_cache = nullptr;
  int block_size = 0;
  const int32_t* positions = nullptr;     // per token
  const int32_t* seq_of_token = nullptr;  // per token
  const int32_t* slot_mapping = nullptr;  // per token
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int32_t max_blocks_per_seq = 0;
  float* out = nullptr;  // [tokens, nq * hd]
};

// Writes each token's k and v into the caches at slot_mapping[t], then computes, for every
// token t and q head h, softmax(q · K[0..positions[t]]ᵀ * scale) · V over kv head
// h / (nq / nkv), reading cache positions through the token's block table. Work is spread
// over (token, kv head) pairs. Indices must have been checked by the caller.
void PagedAttention(CpuIsa isa, ThreadPool& pool, const PagedAttentionArgs& args);

}  // namespace engram
