// Paged attention over an F32 KV cache, one kernel for prefill chunks and decode.
//
// Step 1 (KvWriteKernel) scatters the step's k and v rows into the caches at slot_mapping.
// Step 2 (PagedAttentionKernel): one block of kWarps warps per (token, q head). The q row is
// pre-scaled into shared memory. Warps take 32-key tiles in turn; in a tile each lane scores
// one key (a dot product over head_dim), the warp updates its online-softmax state (max,
// sum) once per tile, then accumulates p·V with each lane owning head_dim/32 output dims.
// Finally the warps' partial states are merged through shared memory. Causality comes from
// the positions: token t reads keys 0..positions[t] of its sequence (GQA: q head h reads kv
// head h / (nq / nkv)).
//
// Follow-ups for speed (not needed for correctness): split long contexts over several blocks
// (flash-decoding) when T * nq is small, share K/V tiles among the q heads of a GQA group,
// and a tiled tensor-core kernel for long prefill chunks.
#include <cmath>

#include "kernels/cuda/device_utils.cuh"

namespace engram::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kDimsPerLane = kMaxAttentionHeadDim / 32;

__global__ void KvWriteKernel(PagedAttentionArgs a) {
  const int64_t per_token = int64_t{a.num_kv_heads} * a.head_dim;
  const int64_t n = a.num_tokens * per_token;
  const int64_t row = int64_t{a.num_q_heads + 2 * a.num_kv_heads} * a.head_dim;
  const int64_t num_slots = a.num_blocks * a.block_size;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / per_token, e = i - t * per_token;
    const int64_t slot = a.slot_mapping[t];
    if (slot < 0 || slot >= num_slots) {
      FlagError(a.err, kErrKvSlot);
      continue;
    }
    const float* src = a.qkv + t * row + int64_t{a.num_q_heads} * a.head_dim;
    a.k_cache[slot * per_token + e] = src[e];
    a.v_cache[slot * per_token + e] = src[per_token + e];
  }
}

// Dot product of a cached key row with the q row in shared memory.
__device__ __forceinline__ float KeyDot(const float* k, const float* q, int head_dim, bool vec4) {
  float s = 0.f;
  if (vec4) {
    const float4* k4 = reinterpret_cast<const float4*>(k);
    const float4* q4 = reinterpret_cast<const float4*>(q);
    for (int i = 0; i < head_dim / 4; ++i) {
      const float4 x = k4[i], y = q4[i];
      s += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
    }
  } else {
    for (int i = 0; i < head_dim; ++i) s += k[i] * q[i];
  }
  return s;
}

__global__ void __launch_bounds__(kThreads) PagedAttentionKernel(PagedAttentionArgs a) {
  __shared__ __align__(16) float q_s[kMaxAttentionHeadDim];
  __shared__ float m_s[kWarps], l_s[kWarps];
  __shared__ float acc_s[kWarps][kMaxAttentionHeadDim];

  const int64_t t = blockIdx.x;
  const int qh = blockIdx.y;
  const int hd = a.head_dim;
  const int kvh = qh / (a.num_q_heads / a.num_kv_heads);
  const int64_t row = int64_t{a.num_q_heads + 2 * a.num_kv_heads} * hd;
  const int64_t slot_stride = int64_t{a.num_kv_heads} * hd;
  const bool vec4 = hd % 4 == 0 && (reinterpret_cast<uintptr_t>(a.k_cache) & 15u) == 0;

  for (int d = threadIdx.x; d < hd; d += kThreads) q_s[d] = a.qkv[t * row + qh * hd + d] * a.scale;
  __syncthreads();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int ctx = a.positions[t] + 1;
  const int32_t* table = a.block_tables + int64_t{a.seq_of_token[t]} * a.max_blocks_per_seq;
  float m = -INFINITY, l = 0.f;
  float acc[kDimsPerLane];
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) acc[i] = 0.f;

  for (int base = warp * 32; base < ctx; base += kThreads) {
    const int j = base + lane;
    float score = -INFINITY;
    int64_t off = -1;  // element offset of key j's (kv head) row in the caches
    if (j < ctx) {
      const int blk = table[j / a.block_size];
      if (blk < 0 || blk >= a.num_blocks) {
        FlagError(a.err, kErrKvSlot);
      } else {
        off = (int64_t{blk} * a.block_size + j % a.block_size) * slot_stride + int64_t{kvh} * hd;
        score = KeyDot(a.k_cache + off, q_s, hd, vec4);
      }
    }
    const float tile_max = WarpMax(score);
    if (tile_max == -INFINITY) continue;  // warp-uniform: nothing valid in this tile
    const float new_m = fmaxf(m, tile_max);
    const float corr = expf(m - new_m);  // 0 on the first tile (m = -inf)
    const float p = off >= 0 ? expf(score - new_m) : 0.f;
    l = l * corr + WarpSum(p);
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) acc[i] *= corr;
    const int n = min(32, ctx - base);
    for (int jj = 0; jj < n; ++jj) {
      const float pj = __shfl_sync(kFullMask, p, jj);
      const int64_t offj = __shfl_sync(kFullMask, off, jj);
      if (offj < 0) continue;  // warp-uniform
      const float* v = a.v_cache + offj;
#pragma unroll
      for (int i = 0; i < kDimsPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < hd) acc[i] += pj * v[d];
      }
    }
    m = new_m;
  }

  if (lane == 0) {
    m_s[warp] = m;
    l_s[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < hd) acc_s[warp][d] = acc[i];
  }
  __syncthreads();

  float gm = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) gm = fmaxf(gm, m_s[w]);
  float weight[kWarps];
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    weight[w] = m_s[w] == -INFINITY ? 0.f : expf(m_s[w] - gm);
    total += l_s[w] * weight[w];
  }
  const float inv_total = total > 0.f ? 1.f / total : 0.f;
  float* o = a.out + t * int64_t{a.num_q_heads} * hd + int64_t{qh} * hd;
  for (int d = threadIdx.x; d < hd; d += kThreads) {
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += acc_s[w][d] * weight[w];
    o[d] = s * inv_total;
  }
}

}  // namespace

cudaError_t LaunchPagedAttention(const PagedAttentionArgs& a, cudaStream_t stream) {
  if (a.num_tokens == 0) return cudaSuccess;
  const int64_t writes = a.num_tokens * a.num_kv_heads * a.head_dim;
  KvWriteKernel<<<GridFor(writes, 256), 256, 0, stream>>>(a);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  const dim3 grid(static_cast<unsigned>(a.num_tokens), static_cast<unsigned>(a.num_q_heads));
  PagedAttentionKernel<<<grid, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace engram::cuda
