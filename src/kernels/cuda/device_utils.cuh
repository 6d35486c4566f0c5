// Device-side helpers shared by the CUDA backend's kernels (internal; .cu files only).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_kernels.h"

namespace engram::cuda {

inline constexpr unsigned kFullMask = 0xffffffffu;

// Blocks for a grid-stride loop over n items with `threads` per block.
inline unsigned GridFor(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, int64_t{1} << 20));
}

inline bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

__device__ __forceinline__ float LoadAsFloat(const void* p, int64_t i, Elem t) {
  switch (t) {
    case Elem::kF32:
      return static_cast<const float*>(p)[i];
    case Elem::kF16:
      return __half2float(static_cast<const __half*>(p)[i]);
    default:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  }
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Sums N values over the whole block (blockDim.x a multiple of 32, at most 1024); every
// thread receives the totals. Contains __syncthreads: call from all threads.
template <int N>
__device__ __forceinline__ void BlockSum(float (&v)[N]) {
  __shared__ float partial[32][N];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
#pragma unroll
  for (int i = 0; i < N; ++i) v[i] = WarpSum(v[i]);
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) partial[warp][i] = v[i];
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < N; ++i) {
    float s = lane < warps ? partial[lane][i] : 0.f;
    v[i] = WarpSum(s);
  }
  __syncthreads();  // partial may be reused by a later call
}

__device__ __forceinline__ float Silu(float x) { return x / (1.f + expf(-x)); }

// Records a kernel error bit in the backend's error word (mapped host memory). Racing
// stores can only leave some non-zero bit set, which is all the host needs to know.
__device__ __forceinline__ void FlagError(uint32_t* err, uint32_t bit) {
  if (err != nullptr) *reinterpret_cast<volatile uint32_t*>(err) = bit;
}

}  // namespace engram::cuda
