// Dynamic FP8 quantization of Linear activations for the block-scaled FP8 GEMM
// (fp8_linear.h): one warp per (token, 128-input block), four inputs a lane.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_utils.cuh"

namespace engram::cuda {
namespace {

constexpr int kBlock = 128;
constexpr int kWarpsPerCta = 8;

__global__ void QuantizeFp8ActKernel(const float* x, int64_t m, int64_t k, uint8_t* q,
                                     float* scales) {
  const int lane = threadIdx.x & 31;
  const int64_t kb = (k + kBlock - 1) / kBlock;
  const int64_t unit = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + (threadIdx.x >> 5);
  if (unit >= m * kb) return;
  const int64_t row = unit / kb, b = unit % kb;
  const int64_t k0 = b * kBlock + lane * 4;
  float v[4];
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[i] = k0 + i < k ? x[row * k + k0 + i] : 0.f;
    amax = fmaxf(amax, fabsf(v[i]));
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    amax = fmaxf(amax, __shfl_xor_sync(kFullMask, amax, off));
  }
  // value = code * scale with scale = amax / 448 (E4M3's largest finite), as the weights'
  // weight_scale_inv; a zero block gets scale 0 and zero codes.
  const float inv = amax > 0.f ? 448.f / amax : 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if (k0 + i < k) {
      q[row * k + k0 + i] = __nv_cvt_float_to_fp8(v[i] * inv, __NV_SATFINITE, __NV_E4M3);
    }
  }
  // Token fastest: cuBLASLt's VEC128_32F layout for the B operand ("outer-dimension major").
  if (lane == 0) scales[b * m + row] = amax / 448.f;
}

// w as Layout::kFp8Block128 (fp8_linear.h): codes [n, k], then scales at scale_offset.
__global__ void DequantFp8Block128Kernel(const uint8_t* w, size_t scale_offset, int64_t n,
                                         int64_t k, __nv_bfloat16* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * k) return;
  const int64_t row = i / k, col = i % k, kb = (k + kBlock - 1) / kBlock;
  const float* scales = reinterpret_cast<const float*>(w + scale_offset);
  const __half_raw h = __nv_cvt_fp8_to_halfraw(w[i], __NV_E4M3);
  const float v = __half2float(__half(h)) * scales[(row / kBlock) * kb + col / kBlock];
  out[i] = __float2bfloat16_rn(v);
}

}  // namespace

cudaError_t LaunchDequantFp8Block128(const void* w, size_t scale_offset, int64_t n, int64_t k,
                                     void* out_bf16, cudaStream_t stream) {
  if (n * k == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  DequantFp8Block128Kernel<<<GridFor(n * k, kThreads), kThreads, 0, stream>>>(
      static_cast<const uint8_t*>(w), scale_offset, n, k, static_cast<__nv_bfloat16*>(out_bf16));
  return cudaGetLastError();
}

cudaError_t LaunchQuantizeFp8Act(const float* x, int64_t m, int64_t k, uint8_t* q, float* scales,
                                 cudaStream_t stream) {
  const int64_t units = m * ((k + kBlock - 1) / kBlock);
  if (units == 0) return cudaSuccess;
  const int64_t ctas = (units + kWarpsPerCta - 1) / kWarpsPerCta;
  QuantizeFp8ActKernel<<<static_cast<unsigned>(ctas), 32 * kWarpsPerCta, 0, stream>>>(x, m, k, q,
                                                                                      scales);
  return cudaGetLastError();
}

}  // namespace engram::cuda
