// Int8 Linear kernels (int8_linear.h): block-32 quantization of rows (weights at load,
// activations per call), the dp4a GEMV of decode, and the dequantization of prefill.
#include <cuda_bf16.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/int8_linear.h"

namespace engram::cuda {

size_t Int8RowsScaleOffset(int64_t n, int64_t k) {
  const size_t codes = static_cast<size_t>(n) * static_cast<size_t>(Int8Padded(k));
  return (codes + 255) / 256 * 256;
}

size_t Int8RowsBytes(int64_t n, int64_t k) {
  return Int8RowsScaleOffset(n, k) +
         static_cast<size_t>(n) * static_cast<size_t>(Int8Blocks(k)) * sizeof(float);
}

namespace {

constexpr int kWarpsPerCta = 8;
constexpr int kB = static_cast<int>(kInt8GemmBlock);
// common/int8_block.h's kInt8MinAmax (2^-121): smaller blocks quantize to zero.
constexpr float kMinAmax = 0x1p-121f;

__device__ __forceinline__ int64_t Blocks(int64_t k) { return (k + kB - 1) / kB; }

// One warp per (row, 32-block), one value a lane.
__global__ void QuantizeInt8RowsKernel(const float* x, int64_t m, int64_t k, int8_t* q, int64_t ldq,
                                       float* scales) {
  const int lane = threadIdx.x & 31;
  const int64_t kb = Blocks(k);
  const int64_t unit = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + (threadIdx.x >> 5);
  if (unit >= m * kb) return;
  const int64_t row = unit / kb, b = unit % kb, c = b * kB + lane;
  const float v = c < k ? x[row * k + c] : 0.f;
  const float amax = WarpMax(fabsf(v));
  // The CPU's rule (common/int8_block.h): IEEE division and multiplication (no fast math),
  // rintf rounds to nearest even like std::nearbyint.
  const float inv = amax >= kMinAmax ? __fdiv_rn(127.f, amax) : 0.f;
  const float r = fminf(fmaxf(rintf(__fmul_rn(v, inv)), -127.f), 127.f);
  q[row * ldq + c] = static_cast<int8_t>(r);
  if (lane == 0) scales[row * kb + b] = amax >= kMinAmax ? __fdiv_rn(amax, 127.f) : 0.f;
}

__device__ __forceinline__ int Dot32(const int4& a0, const int4& a1, const int4& b0,
                                     const int4& b1) {
  int d = __dp4a(a0.x, b0.x, 0);
  d = __dp4a(a0.y, b0.y, d);
  d = __dp4a(a0.z, b0.z, d);
  d = __dp4a(a0.w, b0.w, d);
  d = __dp4a(a1.x, b1.x, d);
  d = __dp4a(a1.y, b1.y, d);
  d = __dp4a(a1.z, b1.z, d);
  return __dp4a(a1.w, b1.w, d);
}

// A warp per output row n; its lanes take the row's 32-blocks in turn (lane l: blocks l,
// l + 32, ...: a warp reads 1 KiB of consecutive codes at a time) against MT token rows
// (t < m), then sum across the warp.
template <int MT>
__global__ void __launch_bounds__(kWarpsPerCta * 32)
    Int8GemvKernel(const int8_t* w, const float* ws, int64_t n_rows, int64_t kb, const int8_t* xq,
                   const float* xs, int m, float* out, int64_t ldo) {
  const int lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + (threadIdx.x >> 5);
  if (n >= n_rows) return;
  const int64_t kp = kb * kB;
  const int4* wr = reinterpret_cast<const int4*>(w + n * kp);
  const float* wsr = ws + n * kb;
  float acc[MT];
#pragma unroll
  for (int t = 0; t < MT; ++t) acc[t] = 0.f;
  for (int64_t b = lane; b < kb; b += 32) {
    const int4 w0 = __ldg(wr + 2 * b), w1 = __ldg(wr + 2 * b + 1);
    const float wsb = __ldg(wsr + b);
#pragma unroll
    for (int t = 0; t < MT; ++t) {
      if (t < m) {
        const int4* xr = reinterpret_cast<const int4*>(xq + t * kp);
        const int d = Dot32(w0, w1, xr[2 * b], xr[2 * b + 1]);
        acc[t] = fmaf(static_cast<float>(d), wsb * xs[t * kb + b], acc[t]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < MT; ++t) {
    const float v = WarpSum(acc[t]);
    if (lane == 0 && t < m) out[t * ldo + n] = v;
  }
}

__global__ void DequantInt8RowsKernel(const int8_t* w, const float* ws, int64_t n, int64_t k,
                                      __nv_bfloat16* out) {
  const int64_t kb = Blocks(k), kp = kb * kB;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n * k;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / k, col = i % k;
    const float v = static_cast<float>(w[row * kp + col]) * ws[row * kb + col / kB];
    out[i] = __float2bfloat16_rn(v);
  }
}

template <int MT>
cudaError_t LaunchGemv(const int8_t* w, const float* ws, int64_t n, int64_t kb, const int8_t* xq,
                       const float* xs, int m, float* out, int64_t ldo, cudaStream_t stream) {
  const int64_t ctas = (n + kWarpsPerCta - 1) / kWarpsPerCta;
  Int8GemvKernel<MT><<<static_cast<unsigned>(ctas), kWarpsPerCta * 32, 0, stream>>>(
      w, ws, n, kb, xq, xs, m, out, ldo);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchQuantizeInt8Rows(const float* x, int64_t m, int64_t k, int8_t* q, int64_t ldq,
                                   float* scales, cudaStream_t stream) {
  const int64_t units = m * Int8Blocks(k);
  if (units == 0) return cudaSuccess;
  const int64_t ctas = (units + kWarpsPerCta - 1) / kWarpsPerCta;
  QuantizeInt8RowsKernel<<<static_cast<unsigned>(ctas), kWarpsPerCta * 32, 0, stream>>>(
      x, m, k, q, ldq, scales);
  return cudaGetLastError();
}

cudaError_t LaunchInt8Gemv(const void* w, size_t scale_offset, int64_t n, int64_t k,
                           const int8_t* xq, const float* xs, int64_t m, float* out, int64_t ldo,
                           cudaStream_t stream) {
  if (n == 0 || m == 0) return cudaSuccess;
  if (m > kInt8GemvMaxRows) return cudaErrorInvalidValue;
  const auto* codes = static_cast<const int8_t*>(w);
  const auto* ws = reinterpret_cast<const float*>(static_cast<const char*>(w) + scale_offset);
  const int64_t kb = Int8Blocks(k);
  const int rows = static_cast<int>(m);
  if (m == 1) return LaunchGemv<1>(codes, ws, n, kb, xq, xs, rows, out, ldo, stream);
  if (m <= 2) return LaunchGemv<2>(codes, ws, n, kb, xq, xs, rows, out, ldo, stream);
  if (m <= 4) return LaunchGemv<4>(codes, ws, n, kb, xq, xs, rows, out, ldo, stream);
  if (m <= 8) return LaunchGemv<8>(codes, ws, n, kb, xq, xs, rows, out, ldo, stream);
  return LaunchGemv<16>(codes, ws, n, kb, xq, xs, rows, out, ldo, stream);
}

cudaError_t LaunchDequantInt8Rows(const void* w, size_t scale_offset, int64_t n, int64_t k,
                                  void* out_bf16, cudaStream_t stream) {
  if (n * k == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  DequantInt8RowsKernel<<<GridFor(n * k, kThreads), kThreads, 0, stream>>>(
      static_cast<const int8_t*>(w),
      reinterpret_cast<const float*>(static_cast<const char*>(w) + scale_offset), n, k,
      static_cast<__nv_bfloat16*>(out_bf16));
  return cudaGetLastError();
}

}  // namespace engram::cuda
