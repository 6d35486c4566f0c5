// Paged causal attention of the CPU backend (GQA, online softmax over cache blocks).
#pragma once

#include <cstddef>
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

namespace attention_internal {
// AVX-512 prefill tiles (attention_avx512.cc), used at CpuIsa::kAvx512 for runs of two or more
// consecutive tokens of one sequence: a tile is up to kTileRows / G such tokens x the G q heads
// of one kv head, one q row per zmm lane.
inline constexpr int kTileRows = 16;
inline constexpr int kMaxTileHeadDim = 256;
// Whether the tiles take this geometry: G = nq / nkv <= 16, hd a multiple of 16 up to 256.
bool TileShapeOk(int nq, int nkv, int hd);
// Floats of one thread's tile working memory.
size_t TileScratchFloats(int hd, int block_size);
// Tokens [t0, t0 + nt) (one sequence, positions consecutive, nt * G <= 16; their keys and
// values already in the cache) against kv head kvh: writes their q heads of that kv head.
void AttendTileAvx512(const PagedAttentionArgs& a, int64_t t0, int nt, int kvh, float* scratch);
}  // namespace attention_internal

}  // namespace engram
