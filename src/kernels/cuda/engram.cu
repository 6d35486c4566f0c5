// Engram module kernels: the row gather from the (device or host-mapped) Engram table and the
// short causal depthwise conv with its per-sequence ring state.
#include "kernels/cuda/device_utils.cuh"

namespace engram::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float QuietNan() { return __int_as_float(0x7fc00000); }

// One thread per 16-byte chunk of a table row: F32 rows move 4 floats, BF16 rows 8 values
// widened to F32 (two 16-byte stores). Needs row_dim*elem % 16 == 0 and aligned pointers.
template <bool kBf16>
__global__ void GatherRowsVecKernel(const void* table, int64_t table_rows, int64_t row_dim,
                                    const int64_t* rows, int64_t n_rows, float* out,
                                    uint32_t* err) {
  constexpr int kPerChunk = kBf16 ? 8 : 4;
  const int64_t chunks = row_dim / kPerChunk;
  const int64_t n = n_rows * chunks;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / chunks, c = i - r * chunks;
    const int64_t src_row = rows[r];
    float4* o = reinterpret_cast<float4*>(out + r * row_dim + c * kPerChunk);
    if (src_row < 0 || src_row >= table_rows) {
      if (c == 0) FlagError(err, kErrTableRow);
      const float q = QuietNan();
      o[0] = make_float4(q, q, q, q);
      if (kBf16) o[1] = make_float4(q, q, q, q);
      continue;
    }
    const uint4 raw =
        reinterpret_cast<const uint4*>(static_cast<const char*>(table))[src_row * chunks + c];
    if constexpr (kBf16) {
      // Each 32-bit word holds two BF16 values, low half first; a BF16 widens by shifting.
      const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
      float f[8];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        f[2 * k] = __uint_as_float(w[k] << 16);
        f[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
      }
      o[0] = make_float4(f[0], f[1], f[2], f[3]);
      o[1] = make_float4(f[4], f[5], f[6], f[7]);
    } else {
      o[0] = make_float4(__uint_as_float(raw.x), __uint_as_float(raw.y), __uint_as_float(raw.z),
                         __uint_as_float(raw.w));
    }
  }
}

__global__ void GatherRowsKernel(const void* table, Elem table_type, int64_t table_rows,
                                 int64_t row_dim, const int64_t* rows, int64_t n_rows, float* out,
                                 uint32_t* err) {
  const int64_t n = n_rows * row_dim;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / row_dim, c = i - r * row_dim;
    const int64_t src_row = rows[r];
    if (src_row < 0 || src_row >= table_rows) {
      if (c == 0) FlagError(err, kErrTableRow);
      out[i] = QuietNan();
      continue;
    }
    out[i] = LoadAsFloat(table, src_row * row_dim + c, table_type);
  }
}

// The normalized conv input x = RmsNorm(v) * norm_w of one element. Always computed by this
// one expression, so values kept in the state equal values recomputed in a whole prefill.
__device__ __forceinline__ float NormVal(float v, float inv_rms, float w) {
  return v * inv_rms * w;
}

// One thread per (token, channel): y = Σ_i conv_w[c, i] · x(pos - (K-1-i)·dilation, c), where x
// of an earlier position of this step's chunk is recomputed from v and x of a position before
// the chunk comes from the state ring; then h += v + silu(y).
__global__ void ShortConvKernel(ShortConvArgs a) {
  const int64_t n = a.num_tokens * a.dim;
  const int window = (a.kernel_size - 1) * a.dilation;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / a.dim, c = i - t * a.dim;
    const int s = a.seq_of_token[t];
    const int64_t first = a.seq_token_start[s];
    const int pos0 = a.positions[first];
    const int pos = a.positions[t];
    const int64_t slot = a.state_slots[s];
    const bool slot_ok = slot >= 0 && slot < a.num_state_slots;
    if (!slot_ok && c == 0) FlagError(a.err, kErrStateSlot);
    const float w = a.norm_w[c];
    float y = 0.f;
    for (int k = 0; k < a.kernel_size; ++k) {
      const int q = pos - (a.kernel_size - 1 - k) * a.dilation;
      if (q < 0) continue;
      float x;
      if (q >= pos0) {
        const int64_t tq = first + (q - pos0);
        x = NormVal(a.v[tq * a.dim + c], a.inv_rms[tq], w);
      } else {
        x = slot_ok ? a.state[(slot * window + q % window) * a.dim + c] : 0.f;
      }
      y += a.conv_w[c * a.kernel_size + k] * x;
    }
    a.h[i] += a.v[i] + Silu(y);
  }
}

// After the conv: the ring keeps x of each sequence's last `window` positions.
__global__ void StateWriteKernel(ShortConvArgs a) {
  const int64_t n = a.num_tokens * a.dim;
  const int window = (a.kernel_size - 1) * a.dilation;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / a.dim, c = i - t * a.dim;
    const int s = a.seq_of_token[t];
    const int pos = a.positions[t];
    const int64_t slot = a.state_slots[s];
    if (pos < a.context_lens[s] - window || slot < 0 || slot >= a.num_state_slots) continue;
    a.state[(slot * window + pos % window) * a.dim + c] =
        NormVal(a.v[i], a.inv_rms[t], a.norm_w[c]);
  }
}

}  // namespace

cudaError_t LaunchGatherRows(const void* table, Elem table_type, int64_t table_rows,
                             int64_t row_dim, const int64_t* rows, int64_t n_rows, float* out,
                             uint32_t* err, cudaStream_t stream) {
  if (n_rows == 0 || row_dim == 0) return cudaSuccess;
  const bool aligned = Aligned16(table) && Aligned16(out);
  if (aligned && table_type == Elem::kBF16 && row_dim % 8 == 0) {
    GatherRowsVecKernel<true><<<GridFor(n_rows * row_dim / 8, kThreads), kThreads, 0, stream>>>(
        table, table_rows, row_dim, rows, n_rows, out, err);
  } else if (aligned && table_type == Elem::kF32 && row_dim % 4 == 0) {
    GatherRowsVecKernel<false><<<GridFor(n_rows * row_dim / 4, kThreads), kThreads, 0, stream>>>(
        table, table_rows, row_dim, rows, n_rows, out, err);
  } else {
    GatherRowsKernel<<<GridFor(n_rows * row_dim, kThreads), kThreads, 0, stream>>>(
        table, table_type, table_rows, row_dim, rows, n_rows, out, err);
  }
  return cudaGetLastError();
}

cudaError_t LaunchShortConv(const ShortConvArgs& a, cudaStream_t stream) {
  const int64_t n = a.num_tokens * a.dim;
  if (n == 0) return cudaSuccess;
  cudaError_t e = LaunchInvRms(a.v, a.norm_eps, a.num_tokens, a.dim, a.inv_rms, stream);
  if (e != cudaSuccess) return e;
  ShortConvKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(a);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  if (a.kernel_size > 1) {
    StateWriteKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(a);
    e = cudaGetLastError();
  }
  return e;
}

}  // namespace engram::cuda
