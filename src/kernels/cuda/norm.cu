// Row reductions: RMSNorm, per-row inverse RMS, and the Engram gate. One block per row; the
// block reduces in F32 (warp shuffles, then one value per warp through shared memory).
#include "kernels/cuda/device_utils.cuh"

namespace engram::cuda {
namespace {

int ThreadsFor(int64_t dim) {
  if (dim >= 1024) return 256;
  if (dim >= 256) return 128;
  return 64;
}

__device__ __forceinline__ float SumSquares(const float* x, int64_t dim, bool vec4) {
  float ss = 0.f;
  if (vec4) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int64_t i = threadIdx.x; i < dim / 4; i += blockDim.x) {
      const float4 a = x4[i];
      ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += x[i] * x[i];
  }
  return ss;
}

// vec4: dim % 4 == 0 and x, w, out 16-byte aligned.
__global__ void RmsNormKernel(const float* x, const float* w, float eps, int64_t dim, float* out,
                              bool vec4) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * dim;
  float* orow = out + r * dim;
  float s[1] = {SumSquares(xr, dim, vec4)};
  BlockSum(s);
  const float inv = rsqrtf(s[0] / static_cast<float>(dim) + eps);
  if (vec4) {
    const float4* x4 = reinterpret_cast<const float4*>(xr);
    const float4* w4 = reinterpret_cast<const float4*>(w);
    float4* o4 = reinterpret_cast<float4*>(orow);
    for (int64_t i = threadIdx.x; i < dim / 4; i += blockDim.x) {
      const float4 a = x4[i], b = w4[i];
      o4[i] = make_float4(a.x * inv * b.x, a.y * inv * b.y, a.z * inv * b.z, a.w * inv * b.w);
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) orow[i] = xr[i] * inv * w[i];
  }
}

__global__ void InvRmsKernel(const float* x, float eps, int64_t dim, float* inv) {
  const int64_t r = blockIdx.x;
  float s[1] = {SumSquares(x + r * dim, dim, false)};
  BlockSum(s);
  if (threadIdx.x == 0) inv[r] = rsqrtf(s[0] / static_cast<float>(dim) + eps);
}

__global__ void EngramGateKernel(const float* k, const float* h, const float* w_key,
                                 const float* w_query, float eps, int64_t dim, float* v) {
  const int64_t t = blockIdx.x;
  const float* kr = k + t * dim;
  const float* hr = h + t * dim;
  float* vr = v + t * dim;
  // Sums of k^2, h^2 and (k*w_key)·(h*w_query): the norms' scales factor out of the dot.
  float s[3] = {0.f, 0.f, 0.f};
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float a = kr[i], b = hr[i];
    s[0] += a * a;
    s[1] += b * b;
    s[2] += (a * w_key[i]) * (b * w_query[i]);
  }
  BlockSum(s);
  const float fd = static_cast<float>(dim);
  float g = s[2] * rsqrtf(s[0] / fd + eps) * rsqrtf(s[1] / fd + eps) / sqrtf(fd);
  const float mag = sqrtf(fmaxf(fabsf(g), 1e-6f));
  g = g > 0.f ? mag : (g < 0.f ? -mag : 0.f);  // sign(g) * sqrt(max(|g|, 1e-6))
  const float gate = 1.f / (1.f + expf(-g));
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) vr[i] *= gate;
}

}  // namespace

cudaError_t LaunchRmsNorm(const float* x, const float* w, float eps, int64_t rows, int64_t dim,
                          float* out, cudaStream_t stream) {
  if (rows == 0 || dim == 0) return cudaSuccess;
  const bool vec4 = dim % 4 == 0 && Aligned16(x) && Aligned16(w) && Aligned16(out);
  RmsNormKernel<<<static_cast<unsigned>(rows), ThreadsFor(dim), 0, stream>>>(x, w, eps, dim, out,
                                                                             vec4);
  return cudaGetLastError();
}

cudaError_t LaunchInvRms(const float* x, float eps, int64_t rows, int64_t dim, float* inv,
                         cudaStream_t stream) {
  if (rows == 0 || dim == 0) return cudaSuccess;
  InvRmsKernel<<<static_cast<unsigned>(rows), ThreadsFor(dim), 0, stream>>>(x, eps, dim, inv);
  return cudaGetLastError();
}

cudaError_t LaunchEngramGate(const float* k, const float* h, const float* w_key,
                             const float* w_query, float eps, int64_t tokens, int64_t dim, float* v,
                             cudaStream_t stream) {
  if (tokens == 0 || dim == 0) return cudaSuccess;
  EngramGateKernel<<<static_cast<unsigned>(tokens), ThreadsFor(dim), 0, stream>>>(
      k, h, w_key, w_query, eps, dim, v);
  return cudaGetLastError();
}

}  // namespace engram::cuda
