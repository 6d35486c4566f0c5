// Elementwise kernels: dtype conversion, embedding gather, add, bias, SwiGLU, RoPE.
#include "kernels/cuda/device_utils.cuh"

namespace engram::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void ProbeKernel() {}

__global__ void ConvertKernel(const void* src, Elem src_type, void* dst, Elem dst_type, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float f = LoadAsFloat(src, i, src_type);
    if (dst_type == Elem::kBF16) {
      static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(f);
    } else {
      static_cast<float*>(dst)[i] = f;
    }
  }
}

// One block per token; threads stride over the row.
__global__ void EmbeddingKernel(const void* table, Elem table_type, int64_t vocab, int64_t dim,
                                const int32_t* ids, float* out, uint32_t* err) {
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  float* o = out + t * dim;
  if (id < 0 || id >= vocab) {
    if (threadIdx.x == 0) FlagError(err, kErrTokenId);
    for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) o[d] = __int_as_float(0x7fc00000);
    return;
  }
  const int64_t base = int64_t{id} * dim;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    o[d] = LoadAsFloat(table, base + d, table_type);
  }
}

__global__ void AddKernel(float* x, const float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] += y[i];
  }
}

__global__ void Add4Kernel(float4* x, const float4* y, int64_t n4) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n4;
       i += int64_t{gridDim.x} * blockDim.x) {
    float4 a = x[i];
    const float4 b = y[i];
    a.x += b.x;
    a.y += b.y;
    a.z += b.z;
    a.w += b.w;
    x[i] = a;
  }
}

__global__ void AddBiasKernel(float* out, const float* bias, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] += bias[i % cols];
  }
}

__global__ void SwiGluKernel(const float* gate_up, int64_t tokens, int64_t inter, float* out) {
  const int64_t n = tokens * inter;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / inter, c = i - t * inter;
    const float* row = gate_up + t * 2 * inter;
    out[i] = Silu(row[c]) * row[inter + c];
  }
}

// One thread per (token, rotated head, pair index i < head_dim / 2).
__global__ void RopeKernel(float* qkv, int64_t tokens, int nq, int nkv, int head_dim,
                           const int32_t* positions, const float* inv_freq) {
  const int half = head_dim / 2;
  const int heads = nq + nkv;  // q heads then k heads are rotated; v heads are not
  const int64_t row = int64_t{nq + 2 * nkv} * head_dim;
  const int64_t n = tokens * heads * half;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int i = static_cast<int>(idx % half);
    const int64_t th = idx / half;
    const int head = static_cast<int>(th % heads);
    const int64_t t = th / heads;
    float* x = qkv + t * row + int64_t{head} * head_dim;
    // Angle in F32 exactly as Hugging Face computes it: float(position) * inv_freq[i].
    const float angle = static_cast<float>(positions[t]) * inv_freq[i];
    float s, c;
    sincosf(angle, &s, &c);
    const float x1 = x[i], x2 = x[i + half];
    x[i] = x1 * c - x2 * s;
    x[i + half] = x2 * c + x1 * s;
  }
}

}  // namespace

cudaError_t LaunchProbe(cudaStream_t stream) {
  ProbeKernel<<<1, 1, 0, stream>>>();
  return cudaGetLastError();
}

cudaError_t LaunchConvert(const void* src, Elem src_type, void* dst, Elem dst_type, int64_t n,
                          cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  ConvertKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(src, src_type, dst, dst_type, n);
  return cudaGetLastError();
}

cudaError_t LaunchEmbedding(const void* table, Elem table_type, int64_t vocab, int64_t dim,
                            const int32_t* ids, int64_t tokens, float* out, uint32_t* err,
                            cudaStream_t stream) {
  if (tokens == 0 || dim == 0) return cudaSuccess;
  const int threads = dim >= 256 ? 256 : 128;
  EmbeddingKernel<<<static_cast<unsigned>(tokens), threads, 0, stream>>>(table, table_type, vocab,
                                                                         dim, ids, out, err);
  return cudaGetLastError();
}

cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (n % 4 == 0 && Aligned16(x) && Aligned16(y)) {
    Add4Kernel<<<GridFor(n / 4, kThreads), kThreads, 0, stream>>>(
        reinterpret_cast<float4*>(x), reinterpret_cast<const float4*>(y), n / 4);
  } else {
    AddKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(x, y, n);
  }
  return cudaGetLastError();
}

cudaError_t LaunchAddBias(float* out, const float* bias, int64_t rows, int64_t cols,
                          cudaStream_t stream) {
  if (rows * cols == 0) return cudaSuccess;
  AddBiasKernel<<<GridFor(rows * cols, kThreads), kThreads, 0, stream>>>(out, bias, rows, cols);
  return cudaGetLastError();
}

cudaError_t LaunchSwiGlu(const float* gate_up, int64_t tokens, int64_t inter, float* out,
                         cudaStream_t stream) {
  if (tokens * inter == 0) return cudaSuccess;
  SwiGluKernel<<<GridFor(tokens * inter, kThreads), kThreads, 0, stream>>>(gate_up, tokens, inter,
                                                                           out);
  return cudaGetLastError();
}

cudaError_t LaunchRope(float* qkv, int64_t tokens, int nq, int nkv, int head_dim,
                       const int32_t* positions, const float* inv_freq, cudaStream_t stream) {
  const int64_t n = tokens * (nq + nkv) * (head_dim / 2);
  if (n == 0) return cudaSuccess;
  RopeKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(qkv, tokens, nq, nkv, head_dim,
                                                            positions, inv_freq);
  return cudaGetLastError();
}

}  // namespace engram::cuda
