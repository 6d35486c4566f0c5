// Sampling kernels: greedy argmax per row (Backend::ArgmaxRows), so that a greedy sequence's
// next token crosses to the host as one id instead of a row of logits.
//
// One block per row. Each thread scans its share of the row with 16-byte loads (an unaligned
// head and the tail scalar), keeping the best (value, index) pair; the block then reduces the
// pairs with warp shuffles and one pair per warp through shared memory. A pair beats another
// when its value is larger, or equal with a lower index; NaN is never larger nor equal, so it
// never enters, and the order is total: the result does not depend on the reduction order and
// is the lowest index of the row's largest value. A row holding a NaN (each thread notes one,
// the block ORs the notes) or whose largest value is +-inf gives -1 (model/sampler.h
// GreedyToken): the engine ends that request instead of sampling from overflowed logits.
#include <climits>

#include "kernels/cuda/device_utils.cuh"

namespace engram::cuda {
namespace {

constexpr int kUnroll = 4;  // 16-byte loads in flight per thread

int ArgmaxThreads(int64_t vocab) {
  if (vocab >= 16384) return 512;
  if (vocab >= 2048) return 256;
  return 64;
}

// (v, i) replaces (best, at) when it is larger, or equal with a lower index; a NaN is noted.
__device__ __forceinline__ void Take(float& best, int32_t& at, bool& nan, float v, int32_t i) {
  nan |= v != v;
  if (v > best || (v == best && i < at)) {
    best = v;
    at = i;
  }
}

__device__ __forceinline__ void Take4(float& best, int32_t& at, bool& nan, const float4& a,
                                      int32_t i) {
  Take(best, at, nan, a.x, i);
  Take(best, at, nan, a.y, i + 1);
  Take(best, at, nan, a.z, i + 2);
  Take(best, at, nan, a.w, i + 3);
}

__device__ __forceinline__ void WarpArgmax(float& best, int32_t& at) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(kFullMask, best, o);
    const int32_t i = __shfl_xor_sync(kFullMask, at, o);
    if (v > best || (v == best && i < at)) {
      best = v;
      at = i;
    }
  }
}

// blockDim.x a multiple of 32, at most 1024.
__global__ void ArgmaxRowsKernel(const float* logits, int64_t vocab, int32_t* ids) {
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  const int tid = threadIdx.x, stride = blockDim.x;
  float best = -INFINITY;
  int32_t at = INT_MAX;  // none yet: any non-NaN value (-inf too) replaces it
  bool nan = false;
  // Scalar head up to the first 16-byte boundary (rows start 4-byte aligned), then float4s.
  const int64_t mis = static_cast<int64_t>((reinterpret_cast<uintptr_t>(row) >> 2) & 3u);
  const int64_t head = mis == 0 ? 0 : (vocab < 4 - mis ? vocab : 4 - mis);
  if (tid < head) Take(best, at, nan, row[tid], tid);
  const float4* body = reinterpret_cast<const float4*>(row + head);
  const int64_t n4 = (vocab - head) / 4;
  int64_t j = tid;
  for (; j + (kUnroll - 1) * stride < n4; j += kUnroll * stride) {
    float4 a[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) a[u] = body[j + u * stride];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      Take4(best, at, nan, a[u], static_cast<int32_t>(head + 4 * (j + u * stride)));
    }
  }
  for (; j < n4; j += stride) Take4(best, at, nan, body[j], static_cast<int32_t>(head + 4 * j));
  for (int64_t i = head + 4 * n4 + tid; i < vocab; i += stride) {
    Take(best, at, nan, row[i], static_cast<int32_t>(i));
  }
  const bool row_nan = __syncthreads_or(nan) != 0;

  __shared__ float warp_best[32];
  __shared__ int32_t warp_at[32];
  const int lane = tid & 31, warp = tid >> 5;
  WarpArgmax(best, at);
  if (lane == 0) {
    warp_best[warp] = best;
    warp_at[warp] = at;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = stride >> 5;
    best = lane < warps ? warp_best[lane] : -INFINITY;
    at = lane < warps ? warp_at[lane] : INT_MAX;
    WarpArgmax(best, at);
    if (lane == 0) ids[blockIdx.x] = row_nan || !isfinite(best) ? -1 : at;
  }
}

}  // namespace

cudaError_t LaunchArgmaxRows(const float* logits, int64_t rows, int64_t vocab, int32_t* ids,
                             cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  ArgmaxRowsKernel<<<static_cast<unsigned>(rows), ArgmaxThreads(vocab), 0, stream>>>(logits, vocab,
                                                                                     ids);
  return cudaGetLastError();
}

}  // namespace engram::cuda
